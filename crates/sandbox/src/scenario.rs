//! The YAML scenario format that seeds nodes and workloads.
