//! The lifecycle-hook drainer (seed 000's architecture): an Auto Scaling lifecycle hook holds a
//! terminating instance, the drainer drains its node, then completes the hook.
//!
//! - [`handler`]: one terminate message, start to finish, restart-safe through the record on
//!   the Node; [`launch`]: the launch hook;
//! - [`claim`]: the record on the Node as the lock that keeps one actor per node's action;
//! - [`gate_hold`]: `quiesce roll`'s SLO gate, honoured before a node is drained;
//! - [`targets`]: before CONTINUE, the wait for the instance to leave its load balancers;
//! - [`worker`]: the queue loop (visibility kept while working, delete only when done);
//! - [`service`]: the in-cluster Deployment's leader election and HTTP endpoints;
//! - [`settings`], [`error`], [`client`], [`rate`], [`nodes`], [`needs`], [`lease`],
//!   [`liveness`], [`metrics`]: the parts they share.

pub mod args;
pub mod claim;
pub mod client;
pub mod error;
pub mod gate_hold;
pub mod handler;
pub mod launch;
pub mod lease;
pub mod liveness;
pub mod metrics;
pub mod needs;
pub mod nodes;
pub mod rate;
pub mod service;
pub mod settings;
pub mod targets;
pub mod worker;

pub use error::Error;
pub use handler::{Disposition, Done, Handler};
pub use settings::{LoadBalancerWait, OnLbDrainTimeout, Settings, UnknownInstance};
pub use worker::{BadMessage, WorkerSettings};
