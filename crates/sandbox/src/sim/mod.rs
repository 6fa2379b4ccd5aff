//! The simulated control plane: scheduler, kubelets and workload controllers, each a kube-rs
//! client of the API so it behaves the same against the sandbox and a real API server.
