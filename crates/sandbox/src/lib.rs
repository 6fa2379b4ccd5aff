//! `quiesce sandbox`: a local Kubernetes API server with a simulated cluster.
