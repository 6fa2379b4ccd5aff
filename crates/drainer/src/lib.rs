//! The lifecycle-hook drainer (seed 000's architecture): an Auto Scaling lifecycle hook holds a
//! terminating instance, the drainer drains its node, then completes the hook.
//!
//! - [`handler`]: one message, start to finish, restart-safe through the record on the Node;
//! - [`worker`]: the queue loop (visibility kept while working, delete only when done);
//! - [`service`]: the in-cluster Deployment's leader election and HTTP endpoints;
//! - [`nodes`], [`needs`], [`lease`], [`metrics`]: the parts they share.

pub mod handler;
pub mod lease;
pub mod metrics;
pub mod needs;
pub mod nodes;
pub mod service;
pub mod worker;

pub use handler::{Disposition, Done, Handler, Settings, UnknownInstance};
pub use worker::{BadMessage, WorkerSettings};
