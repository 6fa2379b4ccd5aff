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

use quiesce_drainer::Settings;
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

/// The environment variable that breaks the lab's drainer on purpose, so a test can prove the
/// checks catch a drainer that breaks its guarantee. Read only here, by the lab's own wiring:
/// no other face of quiesce looks at it, and the lab says so loudly when it is set.
pub const SABOTAGE: &str = "QUIESCE_LAB_SABOTAGE";

/// The one sabotage: CONTINUE once the node's pods are gone, without waiting for their
/// replacements (the replacement gate skipped, and with it the surge that only serves it:
/// with the gate off, a plan that counts on a surge waits for pods nobody restarts).
pub const SKIP_REPLACEMENT_GATE: &str = "skip-replacement-gate";

/// `settings` as the lab's drainers run them: broken as [`SABOTAGE`] asks, if it is set.
/// Returns the sabotage applied, to be reported.
pub fn sabotaged(mut settings: Settings) -> anyhow::Result<(Settings, Option<&'static str>)> {
    match std::env::var(SABOTAGE).ok().as_deref() {
        None | Some("") => Ok((settings, None)),
        Some(SKIP_REPLACEMENT_GATE) => {
            settings.replacement_gate = false;
            settings.drain.surge_all = false;
            Ok((settings, Some(SKIP_REPLACEMENT_GATE)))
        }
        Some(other) => anyhow::bail!("{SABOTAGE}={other:?}: expected {SKIP_REPLACEMENT_GATE}"),
    }
}
