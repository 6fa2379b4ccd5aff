//! How the drainer drains: the settings every entry point (the Deployment, the Lambda, the lab)
//! hands the handler.

use std::str::FromStr;
use std::time::Duration;

use quiesce_core::DrainOptions;
use quiesce_kube::cluster::Cordon;

/// What to do with an instance that is not a node of this cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UnknownInstance {
    /// Leave the message for the drainer of another cluster reading the same queue.
    #[default]
    Ignore,
    /// Complete the hook with CONTINUE: nothing of ours runs there.
    Continue,
}

impl FromStr for UnknownInstance {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "ignore" => Ok(UnknownInstance::Ignore),
            "continue" => Ok(UnknownInstance::Continue),
            other => Err(format!(
                "unknown-instance policy {other:?}: expected ignore or continue"
            )),
        }
    }
}

/// What happens when the instance is still a draining target of a load balancer at the end
/// of the wait for it (`--on-lb-drain-timeout`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnLbDrainTimeout {
    /// ABANDON the hook (the safe default: connections still routed to the instance would be
    /// cut by its termination).
    #[default]
    Abandon,
    /// CONTINUE anyway, with a warning on the node.
    Continue,
}

impl FromStr for OnLbDrainTimeout {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "abandon" => Ok(OnLbDrainTimeout::Abandon),
            "continue" => Ok(OnLbDrainTimeout::Continue),
            other => Err(format!(
                "load-balancer drain timeout policy {other:?}: expected abandon or continue"
            )),
        }
    }
}

/// The wait for the instance to leave its load balancers' target groups before CONTINUE
/// (see [`crate::targets`]).
#[derive(Debug, Clone)]
pub struct LoadBalancerWait {
    /// Whether to wait at all (it needs the ELBv2 read permissions).
    pub enabled: bool,
    /// The longest wait; `None`: the largest deregistration delay of the waited groups plus
    /// [`crate::targets::MARGIN`].
    pub timeout: Option<Duration>,
    /// What a target still draining at the end of the wait leads to.
    pub on_timeout: OnLbDrainTimeout,
    /// Deregister the instance from target groups nobody else will (not the controller's,
    /// not the Auto Scaling group's) instead of skipping them with a warning.
    pub deregister_foreign: bool,
}

impl Default for LoadBalancerWait {
    fn default() -> Self {
        LoadBalancerWait {
            enabled: true,
            timeout: None,
            on_timeout: OnLbDrainTimeout::Abandon,
            deregister_foreign: false,
        }
    }
}

/// How the drainer drains. Defaults suit a node that is about to be terminated.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Only act on hooks whose NotificationMetadata names this cluster (plain, or JSON
    /// `{"cluster": …}`); others are left for their own drainer. Hooks without metadata are
    /// always ours.
    pub cluster: Option<String>,
    /// See [`UnknownInstance`].
    pub unknown_instance: UnknownInstance,
    /// Added to the workload-derived drain deadline.
    pub drain_margin: Duration,
    /// How long a replacement pod takes to become Ready, for the deadline.
    pub replacement_startup: Duration,
    /// How long a launching instance may take to become a Ready node before ABANDON.
    pub launch_timeout: Duration,
    /// The drain engine's switches.
    pub drain: DrainOptions,
    /// How the node is fenced.
    pub cordon: Cordon,
    /// Wait for replacements to be Ready before CONTINUE (see
    /// [`quiesce_kube::engine::DrainSpec::replacement_gate`]); off only for the lab's
    /// kubectl-drain baseline.
    pub replacement_gate: bool,
    /// This actor's name in the records it claims (see [`crate::claim`]); `None` makes one
    /// unique to the handler (host, process, handler), which is right for a Lambda
    /// invocation and for a test's second drainer.
    pub identity: Option<String>,
    /// How long a claim on a node's action stands without renewal: how soon another actor
    /// takes over from one that died mid-drain.
    pub claim_hold: Duration,
    /// Drains in progress at once. Every received action is claimed, cordoned and
    /// heartbeated at once however many arrive; only the evictions wait for a slot.
    pub max_drains: usize,
    /// The longest pause between two tries of a step that failed transiently (an API server
    /// outage): the step is retried in place, the message kept hidden and the hook
    /// heartbeated, instead of returning the message and burning one of its receives.
    pub max_retry_pause: Duration,
    /// The wait for load-balancer deregistration before CONTINUE; it runs only when the
    /// handler has a [`quiesce_aws::elbv2::LoadBalancers`] client
    /// ([`crate::Handler::with_load_balancers`]).
    pub load_balancers: LoadBalancerWait,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            cluster: None,
            unknown_instance: UnknownInstance::Ignore,
            drain_margin: Duration::from_secs(120),
            replacement_startup: Duration::from_secs(60),
            launch_timeout: Duration::from_secs(600),
            drain: DrainOptions {
                // The node's disks go with the instance: emptyDir data is lost either way.
                delete_emptydir_data: true,
                ..DrainOptions::default()
            },
            cordon: Cordon::default(),
            replacement_gate: true,
            identity: None,
            claim_hold: Duration::from_secs(60),
            max_drains: 4,
            max_retry_pause: Duration::from_secs(30),
            load_balancers: LoadBalancerWait::default(),
        }
    }
}
