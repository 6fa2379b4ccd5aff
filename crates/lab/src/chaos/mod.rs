//! `quiesce lab --chaos`: the same roll while faults are injected, with its guarantees checked
//! from the outside.
//!
//! - [`record`]: the outside record (the sandbox's watch history and audit log, the group's
//!   history) and the cluster replayed from it;
//! - [`invariants`]: I1–I5 judged from that record alone;
//! - [`fleet`]: the drainers the lab runs, each a production queue loop with its own client;
//! - [`schedule`]: the faults a seed asks for; [`aws`]: the AWS side of them, inside the
//!   simulated group; [`conductor`]: plays the schedule against the roll and counts what hit;
//! - [`lambda`]: the same roll driven through quiesce-lambda's handler instead, in slices.

pub mod aws;
pub mod conductor;
pub mod fleet;
pub mod invariants;
pub mod lambda;
pub mod record;
pub mod schedule;

use std::sync::Arc;

use quiesce_drainer::Settings;
use quiesce_sandbox::Sandbox;
use quiesce_sandbox::api::Store;

use crate::asg::Group;
use crate::timeline::Timeline;
use conductor::{ChaosReport, Conductor};
use fleet::{Incarnation, Spec};
use invariants::Invariants;
use record::{Baseline, Evidence, RecordError};
use schedule::{Class, Classes, Schedule};

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

/// What `--chaos` asks.
#[derive(Debug, Clone)]
pub struct ChaosOptions {
    /// The schedule's seed.
    pub seed: u64,
    /// The fault classes injected.
    pub classes: Classes,
    /// Which face of quiesce handles the lifecycle events.
    pub face: Face,
}

/// Which face of quiesce a chaos run drives (`--face`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Face {
    /// `quiesce drainer`: two replicas under the Lease (and a racer), stopped and restarted.
    #[default]
    Drainer,
    /// `quiesce-lambda`: invocations in slices, side by side on duplicates
    /// ([`lambda`]). The drainer-process classes (restart, handover, race) do not apply: an
    /// invocation ending at its deadline is this face's stop.
    Lambda,
}

impl std::str::FromStr for Face {
    type Err = String;
    fn from_str(s: &str) -> Result<Face, String> {
        match s {
            "drainer" => Ok(Face::Drainer),
            "lambda" => Ok(Face::Lambda),
            other => Err(format!("face {other:?}: expected drainer or lambda")),
        }
    }
}

/// The drainers of a run: one for a plain run, the conductor's replicas for a chaos run.
pub enum Drainers {
    /// The plain run's one drainer.
    Plain(Incarnation),
    /// The chaos run's.
    Chaos(Conductor),
    /// The chaos run's on the Lambda face, with its schedule.
    Lambda(lambda::LambdaFace, Schedule),
}

/// The plain run's drainer, as the audit log and the group's history name it.
const PLAIN: &str = "drainer";

impl Drainers {
    /// Starts the drainers for `spec` (its identity is replaced), playing `chaos` if given
    /// over `actions` terminate actions.
    pub fn start(
        sandbox: &Sandbox,
        group: &Group,
        spec: Spec,
        chaos: Option<&ChaosOptions>,
        actions: usize,
        timeline: Timeline,
    ) -> anyhow::Result<Drainers> {
        Ok(match chaos {
            None => Drainers::Plain(Incarnation::start(
                &Spec {
                    identity: PLAIN.into(),
                    ..spec
                },
                1,
                group,
            )?),
            Some(c) => {
                let classes = match c.face {
                    Face::Drainer => c.classes.clone(),
                    Face::Lambda => {
                        c.classes
                            .without(&[Class::Restart, Class::Handover, Class::Race])
                    }
                };
                let schedule = Schedule::from_seed(c.seed, actions, &classes);
                let spec = Spec {
                    // A stopped drainer's claim lapses soon, so a standby takes over within
                    // the hook's heartbeat timeout.
                    // The lab runs on a compressed clock (a 30 s hook heartbeat timeout): retries
                    // back off to 2 s, not 30, and the drain gets a minute more, so a burst of
                    // injected faults costs seconds, not the drain's deadline.
                    settings: Settings {
                        claim_hold: std::time::Duration::from_secs(6),
                        max_retry_pause: std::time::Duration::from_secs(2),
                        drain_margin: spec.settings.drain_margin
                            + std::time::Duration::from_secs(60),
                        // The wait for a load balancer to let go (only an abandoned action's
                        // instance is in one) on the same compressed clock.
                        load_balancers: quiesce_drainer::LoadBalancerWait {
                            timeout: Some(std::time::Duration::from_secs(4)),
                            ..spec.settings.load_balancers
                        },
                        ..spec.settings
                    },
                    timeouts: quiesce_drainer::client::Timeouts {
                        connect: std::time::Duration::from_secs(2),
                        operation: std::time::Duration::from_secs(3),
                        read: std::time::Duration::from_secs(30),
                    },
                    ..spec
                };
                match c.face {
                    Face::Drainer => Drainers::Chaos(Conductor::start(
                        sandbox, group, &spec, schedule, timeline,
                    )?),
                    Face::Lambda => {
                        // Nothing is stalled on this face: no stop to report.
                        let (kills, _) = tokio::sync::mpsc::unbounded_channel();
                        let aws = aws::AwsChaos::new(&schedule, kills, sandbox.store());
                        group.interfere(Arc::new(aws));
                        let face = lambda::LambdaFace::start(
                            &spec,
                            group,
                            schedule.actions.clone(),
                            sandbox.faults(),
                        );
                        Drainers::Lambda(face, schedule)
                    }
                }
            }
        })
    }

    /// The audit callers (by prefix) that are drainers.
    pub fn callers(&self) -> Vec<String> {
        vec![match self {
            Drainers::Plain(_) => PLAIN.to_string(),
            Drainers::Chaos(_) | Drainers::Lambda(..) => conductor::PREFIX.to_string(),
        }]
    }

    /// Stops the drainers as on SIGTERM; for a chaos run, what it injected.
    pub async fn finish(self, sandbox: &Sandbox, group: &Group) -> Option<ChaosReport> {
        match self {
            Drainers::Plain(d) => {
                d.shutdown().await;
                None
            }
            Drainers::Chaos(c) => Some(c.finish(sandbox, group).await),
            Drainers::Lambda(face, schedule) => {
                let lambda = face.finish().await;
                let mut report = conductor::count(&schedule, Vec::new(), &sandbox.audited(), group);
                report.lambda = Some(lambda);
                Some(report)
            }
        }
    }
}
