//! `quiesce sandbox`: a local Kubernetes API server with a simulated cluster.
//!
//! Two halves that meet only at the Kubernetes API:
//! - [`api`]: an in-memory API server over real HTTP (discovery, list/watch, patch, eviction
//!   with PodDisruptionBudget semantics, `Status` errors), so kubectl and kube-rs work unchanged;
//! - [`sim`]: the simulated control plane and kubelets, written as ordinary kube-rs clients of
//!   that API, so the same components can drive a real API server too.

pub mod api;
pub mod scenario;
pub mod sim;
pub mod time;
