//! The Kubernetes side of quiesce: the drain engine and the executor that talks to the API.
//!
//! [`engine::drain`] decides nothing on its own: it asks `quiesce-core` for a plan, then carries
//! it out through the [`cluster::Cluster`] trait. [`kube_cluster::KubeCluster`] implements that
//! trait over kube-rs, so the engine runs unchanged against a real cluster, the sandbox, or a
//! real API server on loopback in the tests.

pub mod backoff;
pub mod cluster;
pub mod engine;
mod error;
pub mod events;
pub mod fence;
pub mod kube_cluster;
pub mod reads;
pub mod record;
pub mod report;
mod watch_set;

pub use error::{Error, transient};
