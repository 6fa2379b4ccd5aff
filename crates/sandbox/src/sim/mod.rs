//! The simulated control plane: scheduler, kubelets and workload controllers, each a kube-rs
//! client of the API so it behaves the same against the sandbox and a real API server.

pub mod attachdetach;
pub mod cronjob;
pub mod deployment;
mod deployment_status;
pub mod disruption;
pub mod endpoints;
pub mod endpointslice;
mod expectations;
pub mod gc;
pub mod hpa;
mod int_or_percent;
pub mod job;
pub mod namespace;
mod ownership;
mod pod_index;
mod pod_state;
pub mod replicaset;
mod rollout;
pub mod schedule;
pub mod statefulset;
mod template_hash;
mod watches;
pub mod workloads;
mod writes;
