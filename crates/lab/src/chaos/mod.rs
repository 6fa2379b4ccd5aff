//! `quiesce lab --chaos`: the same roll while faults are injected, with its guarantees checked
//! from the outside.
//!
//! - [`record`]: the outside record (the sandbox's watch history and audit log, the group's
//!   history) and the cluster replayed from it;
//! - [`invariants`]: I1–I5 judged from that record alone;
//! - [`fleet`]: the drainers the lab runs, each a production queue loop with its own client.

pub mod fleet;
pub mod invariants;
pub mod record;

use std::sync::Arc;

use quiesce_sandbox::Sandbox;
use quiesce_sandbox::api::Store;

use crate::asg::Group;
use invariants::Invariants;
use record::{Baseline, Evidence, RecordError};

/// Keeps the outside record of a roll from its start: the cluster as it was, and the group
/// stamping its history with the sandbox's revisions.
pub struct Witness {
    baseline: Baseline,
    store: Arc<Store>,
}

impl Witness {
    /// Starts the record now, before the group acts.
    pub fn start(sandbox: &Sandbox, group: &Group) -> Result<Witness, RecordError> {
        let store = sandbox.store();
        let revisions = store.clone();
        group.record_revisions(move || revisions.resource_version());
        Ok(Witness {
            baseline: Baseline::take(&store)?,
            store,
        })
    }

    /// Judges the roll once it is over: `drainers` are the audit callers (by prefix) that
    /// are drainers, `failed` the live traffic's failed requests.
    pub fn judge(
        self,
        sandbox: &Sandbox,
        group: &Group,
        drainers: &[String],
        failed: u64,
    ) -> Result<Invariants, RecordError> {
        let evidence = Evidence::gather(
            &self.store,
            self.baseline,
            group.history(),
            group.dead_letters(),
            sandbox.audited(),
            failed,
        )?;
        Ok(Invariants::check(&evidence, drainers))
    }
}
