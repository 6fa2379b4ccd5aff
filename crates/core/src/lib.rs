//! Pure domain logic of quiesce.
//!
//! Everything here decides; nothing here talks. The adapters (`quiesce-kube`, `quiesce-aws`,
//! `quiesce-sandbox`) feed it plain data and carry out what it decides, so the same rules run
//! against a real cluster, the sandbox, and unit tests without a network.

pub mod budget;
pub mod capacity;
pub mod classify;
pub mod gate;
pub mod pdb;
pub mod plan;
pub mod quantity;
pub mod selector;
pub mod terminating;
#[cfg(test)]
mod testing;

pub use classify::{PodFacts, PodKind, WorkloadRef};
pub use plan::{
    Action, Blocker, ClusterView, DrainOptions, DrainPlan, Gate, Severity, Ungated, Verdict, plan,
};
