//! The simulated control plane: scheduler, kubelets and workload controllers, each a kube-rs
//! client of the API so it behaves the same against the sandbox and a real API server.

mod expectations;
mod int_or_percent;
mod ownership;
mod pod_state;
mod watches;
mod writes;
pub mod replicaset;
mod rollout;
mod template_hash;
pub mod deployment;
pub mod statefulset;
