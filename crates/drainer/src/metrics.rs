//! Prometheus metrics: what an SRE watches during a node-group roll — drains by result and how
//! long each phase took, evictions, heartbeats, hook completions, and what became of each
//! queue message.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;

/// Every metric the drainer exports.
pub struct Metrics {
    registry: Registry,
    drains: Family<Labels, Counter>,
    phases: Family<Labels, Histogram>,
    evictions: Family<Labels, Counter>,
    heartbeats: Family<Labels, Counter>,
    completions: Family<Labels, Counter>,
    messages: Family<Labels, Counter>,
    retries: Counter,
    redeliveries: Counter,
}

fn phase_histogram() -> Histogram {
    // 0.5 s … ~68 min: drains of seconds in the lab, tens of minutes in production.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.5, 2.0, 14,
    ))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("quiesce");
        let drains = Family::<Labels, Counter>::default();
        let phases =
            Family::<Labels, Histogram>::new_with_constructor(phase_histogram as fn() -> Histogram);
        let evictions = Family::<Labels, Counter>::default();
        let heartbeats = Family::<Labels, Counter>::default();
        let completions = Family::<Labels, Counter>::default();
        let messages = Family::<Labels, Counter>::default();
        registry.register("drains", "Drains by result", drains.clone());
        registry.register(
            "drain_phase_seconds",
            "Seconds from the start of a drain to the end of each phase (targets-deregistered: the seconds of the wait for load balancers after the drain)",
            phases.clone(),
        );
        registry.register(
            "evictions",
            "Eviction requests by result",
            evictions.clone(),
        );
        registry.register(
            "heartbeats",
            "RecordLifecycleActionHeartbeat calls by result",
            heartbeats.clone(),
        );
        registry.register(
            "lifecycle_completions",
            "CompleteLifecycleAction calls by result",
            completions.clone(),
        );
        registry.register(
            "sqs_messages",
            "Queue messages by what became of them",
            messages.clone(),
        );
        let retries = Counter::default();
        let redeliveries = Counter::default();
        registry.register(
            "retries_in_place",
            "Steps retried in place after a transient failure (the message kept hidden)",
            retries.clone(),
        );
        registry.register(
            "sqs_redeliveries",
            "Messages received again (ApproximateReceiveCount above 1): each brings the dead-letter queue closer",
            redeliveries.clone(),
        );
        Metrics {
            retries,
            redeliveries,
            registry,
            drains,
            phases,
            evictions,
            heartbeats,
            completions,
            messages,
        }
    }
}

fn label(key: &'static str, value: &str) -> Labels {
    vec![(key, value.to_string())]
}

impl Metrics {
    /// A drain ended with `result` (`drained`, `blocked`, `failed`, `paused`).
    pub fn drain(&self, result: &str, report: Option<&quiesce_kube::report::DrainReport>) {
        self.drains.get_or_create(&label("result", result)).inc();
        let Some(report) = report else { return };
        for phase in &report.phases {
            self.phases
                .get_or_create(&label("phase", phase.name.as_str()))
                .observe(phase.seconds);
        }
        let refused: u64 = report.pods.iter().map(|p| u64::from(p.refusals)).sum();
        let accepted = report
            .pods
            .iter()
            .filter(|p| {
                p.action == quiesce_core::Action::Evict
                    && !matches!(
                        p.stage,
                        quiesce_kube::report::Stage::Pending
                            | quiesce_kube::report::Stage::Evicting
                    )
            })
            .count() as u64;
        self.evictions
            .get_or_create(&label("result", "accepted"))
            .inc_by(accepted);
        self.evictions
            .get_or_create(&label("result", "refused"))
            .inc_by(refused);
    }

    /// A phase measured outside the drain engine (`targets-deregistered`) ended `seconds`
    /// after it started.
    pub fn phase(&self, name: &str, seconds: f64) {
        self.phases
            .get_or_create(&label("phase", name))
            .observe(seconds);
    }

    /// A heartbeat was sent (`ok`) or failed (`error`).
    pub fn heartbeat(&self, result: &str) {
        self.heartbeats
            .get_or_create(&label("result", result))
            .inc();
    }

    /// A completion: `continue`, `abandon`, `not-active`, `error`.
    pub fn completion(&self, result: &str) {
        self.completions
            .get_or_create(&label("result", result))
            .inc();
    }

    /// A message's outcome: `deleted`, `retried`, `left`, `invalid`.
    pub fn message(&self, outcome: &str) {
        self.messages
            .get_or_create(&label("outcome", outcome))
            .inc();
    }

    /// A step failed transiently and is tried again in place.
    pub fn retry(&self) {
        self.retries.inc();
    }

    /// A message arrived again after an earlier receive.
    pub fn redelivery(&self) {
        self.redeliveries.inc();
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}
