//! The drain settings as command-line flags and environment variables, defined once for
//! `quiesce drain`, `quiesce drainer` and `quiesce-lambda` (which reads the same `QUIESCE_…`
//! variables with no flags), so the three cannot drift apart: before, the Lambda had no way to
//! take nodes out of load balancers at all.
//!
//! It lives here, not in `quiesce-core` (no CLI or I/O there) and not in the cli crate (the
//! Lambda does not depend on it): the drainer crate is what both the cli and the Lambda
//! already build on, and [`HandlerArgs::settings`] turns the flags into its [`Settings`].

use std::num::NonZeroU32;
use std::time::Duration;

use clap::builder::BoolishValueParser;
use quiesce_core::DrainOptions;
use quiesce_kube::cluster::Cordon;

use crate::client::Rate;
use crate::{BadMessage, LoadBalancerWait, OnLbDrainTimeout, Settings, UnknownInstance};

/// How a node is drained and fenced, for every entry point. Flags take `true`/`false`,
/// `yes`/`no`, `1`/`0` from their environment variable.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct DrainSwitches {
    /// Evict pods without a controller (they are lost) and ignore do-not-disrupt (otherwise
    /// they block the drain).
    #[arg(long, env = "QUIESCE_FORCE", value_parser = BoolishValueParser::new())]
    pub force: bool,
    /// Surge every Deployment that cannot lose a pod (otherwise only those annotated
    /// `quiesce.io/drain-strategy: surge`).
    #[arg(long, env = "QUIESCE_SURGE", value_parser = BoolishValueParser::new(), conflicts_with = "no_surge")]
    pub surge: bool,
    /// Surge nothing, not even annotated Deployments (then no `patch` on Deployments is
    /// needed: the chart grants none without surge).
    #[arg(long, env = "QUIESCE_NO_SURGE", value_parser = BoolishValueParser::new())]
    pub no_surge: bool,
    /// Also taint the node while draining, as `key=value:Effect`.
    #[arg(long, env = "QUIESCE_TAINT")]
    pub taint: Option<String>,
    /// Label the node out of external load balancers before evicting (the default of
    /// `quiesce drainer` and the Lambda).
    #[arg(
        long,
        env = "QUIESCE_EXCLUDE_FROM_LOAD_BALANCERS",
        value_parser = BoolishValueParser::new(),
        overrides_with = "keep_in_load_balancers"
    )]
    pub exclude_from_load_balancers: bool,
    /// Leave the node in external load balancers while draining (the default of
    /// `quiesce drain`).
    #[arg(
        long,
        env = "QUIESCE_KEEP_IN_LOAD_BALANCERS",
        value_parser = BoolishValueParser::new(),
        overrides_with = "exclude_from_load_balancers"
    )]
    pub keep_in_load_balancers: bool,
    /// With the load-balancer label, do not also taint the node
    /// `ToBeDeletedByClusterAutoscaler:NoSchedule` (the taint on which the AWS Load Balancer
    /// Controller deregisters the node and kube-proxy fails its health check). For clusters
    /// where Cluster Autoscaler's use of that taint must not be imitated.
    #[arg(
        long,
        env = "QUIESCE_NO_FENCE_TAINT",
        value_parser = BoolishValueParser::new(),
        overrides_with = "fence_taint"
    )]
    pub no_fence_taint: bool,
    /// Taint the node `ToBeDeletedByClusterAutoscaler:NoSchedule` along with the
    /// load-balancer label (the default), re-applied if it disappears during the drain.
    #[arg(
        long,
        env = "QUIESCE_FENCE_TAINT",
        value_parser = BoolishValueParser::new(),
        overrides_with = "no_fence_taint"
    )]
    pub fence_taint: bool,
    /// Before calling the node done, wait until its instance is no longer a target of any
    /// ELBv2 target group routing to it (needs AWS credentials and the ELBv2 read permissions;
    /// the default of `quiesce drainer` and the Lambda).
    #[arg(
        long,
        env = "QUIESCE_WAIT_LOAD_BALANCERS",
        value_parser = BoolishValueParser::new(),
        overrides_with = "no_wait_load_balancers"
    )]
    pub wait_load_balancers: bool,
    /// Do not wait for load-balancer deregistration (the default of `quiesce drain`).
    #[arg(
        long,
        env = "QUIESCE_NO_WAIT_LOAD_BALANCERS",
        value_parser = BoolishValueParser::new(),
        overrides_with = "wait_load_balancers"
    )]
    pub no_wait_load_balancers: bool,
    /// The longest wait for load-balancer deregistration, counted in the drain's deadline
    /// (default: the largest deregistration delay of the waited target groups plus 30s).
    #[arg(long, env = "QUIESCE_LB_DRAIN_TIMEOUT", value_parser = humantime::parse_duration)]
    pub lb_drain_timeout: Option<Duration>,
    /// What a target still draining at the end of that wait leads to: `abandon` the hook (the
    /// node is uncordoned and kept) or `continue` anyway.
    #[arg(long, env = "QUIESCE_ON_LB_DRAIN_TIMEOUT", default_value = "abandon", value_parser = parse_on_lb_timeout)]
    pub on_lb_drain_timeout: OnLbDrainTimeout,
    /// Deregister the instance from target groups nobody else will (neither this cluster's
    /// AWS Load Balancer Controller nor the Auto Scaling group; needs
    /// `elasticloadbalancing:DeregisterTargets`) instead of skipping them with a warning.
    #[arg(long, env = "QUIESCE_DEREGISTER_FOREIGN_TARGETS", value_parser = BoolishValueParser::new())]
    pub deregister_foreign_targets: bool,
}

impl DrainSwitches {
    /// How the node is fenced. `exclude_by_default` is the command's own default for the
    /// load-balancer label: a node about to be terminated leaves its load balancers (NTH
    /// issue #316), a node drained by hand for maintenance stays unless asked.
    pub fn cordon(&self, exclude_by_default: bool) -> Cordon {
        Cordon {
            // An empty variable (a template's unset parameter) is no taint.
            taint: self.taint.clone().filter(|t| !t.is_empty()),
            exclude_from_load_balancers: if self.keep_in_load_balancers {
                false
            } else {
                self.exclude_from_load_balancers || exclude_by_default
            },
            fence_taint: !self.no_fence_taint,
        }
    }

    /// The wait for load-balancer deregistration; `wait_by_default` is the command's own
    /// default.
    pub fn load_balancers(&self, wait_by_default: bool) -> LoadBalancerWait {
        LoadBalancerWait {
            enabled: if self.no_wait_load_balancers {
                false
            } else {
                self.wait_load_balancers || wait_by_default
            },
            timeout: self.lb_drain_timeout,
            on_timeout: self.on_lb_drain_timeout,
            deregister_foreign: self.deregister_foreign_targets,
        }
    }

    /// The drain engine's switches; emptyDir data is the caller's decision (an instance's
    /// disks go with it, a node drained by hand keeps them).
    pub fn options(&self, delete_emptydir_data: bool) -> DrainOptions {
        DrainOptions {
            force: self.force,
            delete_emptydir_data,
            surge_all: self.surge,
            never_surge: self.no_surge,
        }
    }
}

/// What the lifecycle-hook handler is told, shared by `quiesce drainer` and the Lambda.
#[derive(Debug, Clone, clap::Args)]
pub struct HandlerArgs {
    /// Act only on hooks whose NotificationMetadata names this cluster (plain or
    /// `{"cluster": NAME}`); others are left on the queue for their own drainer.
    #[arg(long, env = "QUIESCE_CLUSTER")]
    pub cluster: Option<String>,
    /// An instance that is no node of this cluster: `ignore` leaves its message for another
    /// cluster's drainer, `continue` completes its hook.
    #[arg(long, env = "QUIESCE_UNKNOWN_INSTANCE", default_value = "ignore", value_parser = parse_unknown)]
    pub unknown_instance: UnknownInstance,
    /// A message that is not a lifecycle event: `delete` it (logged in full) or `keep` it for
    /// the queue's dead-letter redrive.
    #[arg(long, env = "QUIESCE_BAD_MESSAGE", default_value = "delete", value_parser = parse_bad)]
    pub bad_message: BadMessage,
    /// Added to the deadline derived from the node's workload (grace periods, budget rounds,
    /// replacement startup).
    #[arg(long, env = "QUIESCE_DRAIN_MARGIN", default_value = "2m", value_parser = humantime::parse_duration)]
    pub drain_margin: Duration,
    /// How long a replacement pod takes to become Ready, for the deadline.
    #[arg(long, env = "QUIESCE_REPLACEMENT_STARTUP", default_value = "1m", value_parser = humantime::parse_duration)]
    pub replacement_startup: Duration,
    /// How long a launching instance may take to become a Ready node before ABANDON.
    #[arg(long, env = "QUIESCE_LAUNCH_TIMEOUT", default_value = "10m", value_parser = humantime::parse_duration)]
    pub launch_timeout: Duration,
    /// Drains in progress at once (at least 1). Every received action is recorded, cordoned
    /// and heartbeated at once however many arrive; only the evictions wait for a slot.
    #[arg(long, env = "QUIESCE_MAX_CONCURRENT", default_value = "4", value_parser = parse_concurrency)]
    pub max_concurrent: usize,
    /// The drain switches.
    #[command(flatten)]
    pub drain: DrainSwitches,
    /// The Kubernetes client's rate limit.
    #[command(flatten)]
    pub kube: ClientArgs,
    /// Do not look up nodes without an AWS providerID by the instance's PrivateDnsName (EC2
    /// DescribeInstances; needs ec2:DescribeInstances).
    #[arg(long, env = "QUIESCE_NO_EC2_FALLBACK", value_parser = BoolishValueParser::new())]
    pub no_ec2_fallback: bool,
}

/// The variable the Lambda read before `QUIESCE_NO_EC2_FALLBACK`, still honoured: `false`
/// turns the fallback off.
pub const LEGACY_EC2_FALLBACK: &str = "QUIESCE_EC2_FALLBACK";

/// How hard the drainer may press the API server, as client-go's `--kube-api-qps` and
/// `--kube-api-burst` of the control-plane components (defaults: [`Rate::default`]).
#[derive(Debug, Clone, clap::Args)]
pub struct ClientArgs {
    /// Requests per second the Kubernetes client sends on average (client-side rate limit).
    #[arg(long, env = "QUIESCE_KUBE_QPS", default_value = "50", value_parser = parse_qps)]
    pub kube_qps: f64,
    /// Requests the Kubernetes client may send at once after a quiet spell.
    #[arg(long, env = "QUIESCE_KUBE_BURST", default_value = "100")]
    pub kube_burst: NonZeroU32,
}

impl ClientArgs {
    /// The client's rate limit.
    pub fn rate(&self) -> Rate {
        Rate {
            qps: self.kube_qps,
            burst: self.kube_burst,
        }
    }
}

fn parse_qps(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(q) if q.is_finite() && q > 0.0 => Ok(q),
        Ok(_) => Err(format!(
            "{s}: expected a number of requests per second above 0"
        )),
        Err(e) => Err(format!("{s:?} is not a number: {e}")),
    }
}

impl HandlerArgs {
    /// Whether nodes without an AWS providerID are looked up by PrivateDnsName: unless
    /// `--no-ec2-fallback`, or the older `QUIESCE_EC2_FALLBACK=false`.
    pub fn ec2_fallback(&self) -> bool {
        let legacy_off = std::env::var(LEGACY_EC2_FALLBACK).is_ok_and(|v| v.trim() == "false");
        !(self.no_ec2_fallback || legacy_off)
    }

    /// The handler's settings: a terminating instance's emptyDir data goes with its disks,
    /// and it leaves its load balancers unless kept.
    pub fn settings(&self) -> Settings {
        Settings {
            cluster: self.cluster.clone(),
            unknown_instance: self.unknown_instance,
            drain_margin: self.drain_margin,
            replacement_startup: self.replacement_startup,
            launch_timeout: self.launch_timeout,
            drain: self.drain.options(true),
            cordon: self.drain.cordon(true),
            load_balancers: self.drain.load_balancers(true),
            max_drains: self.max_concurrent,
            ..Settings::default()
        }
    }
}

fn parse_unknown(s: &str) -> Result<UnknownInstance, String> {
    s.parse()
}

fn parse_on_lb_timeout(s: &str) -> Result<OnLbDrainTimeout, String> {
    s.parse()
}

fn parse_bad(s: &str) -> Result<BadMessage, String> {
    s.parse()
}

/// A count that must be at least 1 (`--max-concurrent`, `--max-in-hand`): 0 would never
/// handle a message.
pub fn parse_concurrency(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("0 would never handle a message: expected at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("{s:?} is not a whole number: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_wins_over_the_default_and_exclude_over_its_absence() {
        let kept = DrainSwitches {
            keep_in_load_balancers: true,
            ..DrainSwitches::default()
        };
        assert!(!kept.cordon(true).exclude_from_load_balancers);
        let excluded = DrainSwitches {
            exclude_from_load_balancers: true,
            ..DrainSwitches::default()
        };
        assert!(excluded.cordon(false).exclude_from_load_balancers);
        assert!(
            !DrainSwitches::default()
                .cordon(false)
                .exclude_from_load_balancers
        );
        assert!(
            DrainSwitches::default()
                .cordon(true)
                .exclude_from_load_balancers
        );
    }
}
