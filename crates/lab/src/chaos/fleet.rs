//! The lab's drainers: the production queue loop and handler, each with its own Kubernetes
//! client (every call bounded in time, every request marked with the drainer's name for the
//! sandbox's audit log) and its own handle on the group (so the group's history says who
//! completed and deleted what). One drainer for a plain run; for a chaos run two replicas
//! under the Lease, stopped and started again as the schedule says.

use std::sync::Arc;
use std::time::Duration;

use quiesce_aws::elbv2::LoadBalancers;
use quiesce_drainer::client::Timeouts;
use quiesce_drainer::lease::{LeaseLock, LeaseTiming};
use quiesce_drainer::metrics::Metrics;
use quiesce_drainer::nodes::NodeIndex;
use quiesce_drainer::{Handler, Settings, WorkerSettings};
use quiesce_sandbox::api::AUDIT_HEADER;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::asg::Group;

/// How the lab's drainers read the queue: a short long-poll and quick retries, so a run
/// does not wait on them; and a visibility timeout well inside the lab's short hook
/// heartbeat timeout (30 s), so the message of a drainer that died comes back to another one
/// before its hook expires (production hooks wait minutes to hours).
pub fn worker_settings() -> WorkerSettings {
    WorkerSettings {
        wait: Duration::from_secs(1),
        retry_after: Duration::from_secs(1),
        visibility: Duration::from_secs(8),
        ..WorkerSettings::default()
    }
}

/// How long a drainer stopped as on SIGTERM may finish its work.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// The Lease the chaos lab's replicas elect a leader on.
pub const LEASE: &str = "quiesce-drainer";

/// A Kubernetes client for `url` as the drainer builds one (every call bounded by
/// `timeouts`), whose requests carry `caller` in the audit header.
pub fn client(url: &str, caller: &str, timeouts: Timeouts) -> anyhow::Result<kube::Client> {
    let mut config = kube::Config::new(url.parse()?);
    config
        .headers
        .push((AUDIT_HEADER.parse()?, caller.parse()?));
    // The production default rate limit: the lab's few nodes stay far below it.
    Ok(quiesce_drainer::client::build(
        config,
        timeouts,
        quiesce_drainer::client::Rate::default(),
    )?)
}

/// One running drainer process: its queue loop and node index. Dropping it (or
/// [`Incarnation::kill`]) stops it at once, as SIGKILL would: nothing is released.
pub struct Incarnation {
    /// The audit caller, `identity#n`.
    pub caller: String,
    tasks: Vec<JoinHandle<()>>,
    stop: watch::Sender<bool>,
}

/// How to start a drainer.
#[derive(Clone)]
pub struct Spec {
    /// The sandbox's URL.
    pub url: String,
    /// The drainer's identity (its claims, its Lease).
    pub identity: String,
    /// The handler's settings; `identity` is set from [`Spec::identity`].
    pub settings: Settings,
    /// Its client's timeouts.
    pub timeouts: Timeouts,
    /// Lead through this Lease timing (two replicas); `None`: read the queue alone.
    pub lease: Option<LeaseTiming>,
    /// Shared by every incarnation, so the run's totals are in one place.
    pub metrics: Arc<Metrics>,
    /// The load balancers the drainer waits on before CONTINUE; `None`: no wait.
    pub load_balancers: Option<Arc<dyn LoadBalancers>>,
}

impl Incarnation {
    /// Starts incarnation `n` of `spec` against `group`.
    pub fn start(spec: &Spec, n: u32, group: &Group) -> anyhow::Result<Incarnation> {
        let caller = format!("{}#{n}", spec.identity);
        let client = client(&spec.url, &caller, spec.timeouts)?;
        let (nodes, keep_index) = NodeIndex::watched(client.clone());
        let hooks = group.as_caller(&caller);
        let settings = Settings {
            identity: Some(spec.identity.clone()),
            ..spec.settings.clone()
        };
        let mut handler = Handler::new(
            client.clone(),
            nodes,
            hooks.clone(),
            settings,
            spec.metrics.clone(),
        );
        if let Some(lb) = &spec.load_balancers {
            handler = handler.with_load_balancers(lb.clone());
        }
        let handler = Arc::new(handler);
        let (stop, stopped) = watch::channel(false);
        let queue = Arc::new(hooks);
        let work: JoinHandle<()> = match spec.lease {
            Some(timing) => {
                let lock = LeaseLock::new(client, "kube-system", LEASE, &spec.identity, timing);
                tokio::spawn(quiesce_drainer::service::lead(
                    lock,
                    queue,
                    handler,
                    worker_settings(),
                    stopped,
                ))
            }
            None => tokio::spawn(quiesce_drainer::worker::run(
                queue,
                handler,
                worker_settings(),
                stopped,
            )),
        };
        Ok(Incarnation {
            caller,
            tasks: vec![work, tokio::spawn(keep_index)],
            stop,
        })
    }

    /// Stops at once, mid-call: a crash.
    pub fn kill(self) {
        drop(self);
    }

    /// Stops as on SIGTERM: the messages in hand are finished (or given back), the Lease
    /// released; what is still running after the grace period is stopped, as the kubelet
    /// does after terminationGracePeriodSeconds.
    pub async fn shutdown(mut self) {
        self.stop.send_replace(true);
        if let Some(work) = self.tasks.first_mut() {
            let _ = tokio::time::timeout(SHUTDOWN_GRACE, work).await;
        }
    }
}

impl Drop for Incarnation {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}
