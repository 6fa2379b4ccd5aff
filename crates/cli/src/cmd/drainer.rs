//! `quiesce drainer`: the in-cluster lifecycle-hook drainer (EventBridge/Auto Scaling → SQS →
//! drain → CONTINUE/ABANDON). Two replicas; the Lease holder reads the queue.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use quiesce_aws::ec2::Ec2;
use quiesce_aws::hooks::AutoScaling;
use quiesce_aws::queue::Sqs;
use quiesce_aws::sdk::{AwsOptions, sdk_config};
use quiesce_core::DrainOptions;
use quiesce_drainer::client::{self, Timeouts};
use quiesce_drainer::lease::{LeaseLock, LeaseTiming};
use quiesce_drainer::metrics::Metrics;
use quiesce_drainer::nodes::NodeIndex;
use quiesce_drainer::{BadMessage, Handler, Settings, UnknownInstance, WorkerSettings, service};
use quiesce_kube::cluster::Cordon;
use tokio::sync::watch;

use super::kube_config;

/// Arguments of `quiesce drainer`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The SQS queue the lifecycle events arrive on (EventBridge rule target or the hook's
    /// notification target).
    #[arg(long, env = "QUIESCE_QUEUE_URL")]
    pub queue_url: String,
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
    /// Kubeconfig to use (default: in-cluster, $KUBECONFIG or ~/.kube/config).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Namespace of the leader-election Lease (the drainer's own namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "kube-system")]
    pub namespace: String,
    /// Name of the leader-election Lease.
    #[arg(long, default_value = "quiesce-drainer")]
    pub lease_name: String,
    /// This replica's identity in the Lease (the pod name).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// How long a standby waits on an unrenewed Lease before taking over (at least 1s). The
    /// leader stops acting once it could not renew for two thirds of it, and renews every
    /// 2/15 of it (client-go's 15s / 10s / 2s).
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    pub lease_duration: Duration,
    /// Where /healthz, /readyz and /metrics are served.
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    /// Added to the deadline derived from the node's workload (grace periods, budget rounds,
    /// replacement startup).
    #[arg(long, default_value = "2m", value_parser = humantime::parse_duration)]
    pub drain_margin: Duration,
    /// How long a replacement pod takes to become Ready, for the deadline.
    #[arg(long, default_value = "1m", value_parser = humantime::parse_duration)]
    pub replacement_startup: Duration,
    /// How long a launching instance may take to become a Ready node before ABANDON.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub launch_timeout: Duration,
    /// Drains in progress at once (at least 1). Every received action is recorded, cordoned
    /// and heartbeated at once however many arrive; only the evictions wait for a slot.
    #[arg(long, default_value = "4", value_parser = parse_concurrency)]
    pub max_concurrent: usize,
    /// Evict pods without a controller and ignore do-not-disrupt (otherwise they block the
    /// drain and the hook is abandoned).
    #[arg(long)]
    pub force: bool,
    /// Surge every Deployment that cannot lose a pod, not only annotated ones.
    #[arg(long)]
    pub surge: bool,
    /// Also taint the node while draining, as `key=value:Effect`.
    #[arg(long)]
    pub taint: Option<String>,
    /// Do not label the node out of external load balancers before evicting.
    #[arg(long)]
    pub keep_in_load_balancers: bool,
    /// Do not look up nodes without an AWS providerID by the instance's PrivateDnsName (EC2
    /// DescribeInstances; needs ec2:DescribeInstances).
    #[arg(long)]
    pub no_ec2_fallback: bool,
    /// AWS region (default: the SDK's: AWS_REGION, profile, instance metadata).
    #[arg(long)]
    pub region: Option<String>,
    /// A custom AWS endpoint (VPC endpoint, or moto in tests; default: AWS_ENDPOINT_URL).
    #[arg(long)]
    pub endpoint_url: Option<String>,
}

fn parse_unknown(s: &str) -> Result<UnknownInstance, String> {
    s.parse()
}

fn parse_bad(s: &str) -> Result<BadMessage, String> {
    s.parse()
}

fn parse_concurrency(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("0 would never handle a message: expected at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("{s:?} is not a whole number: {e}")),
    }
}

/// Runs until SIGTERM or SIGINT.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(drainer(args))
}

async fn drainer(args: Args) -> anyhow::Result<ExitCode> {
    let timing = LeaseTiming::for_duration(args.lease_duration).context("--lease-duration")?;
    let client = client::build(
        kube_config(args.kubeconfig.as_deref()).await?,
        Timeouts::default(),
    )?;
    let aws = sdk_config(&AwsOptions {
        region: args.region.clone(),
        endpoint_url: args.endpoint_url.clone(),
    })
    .await;
    let identity = match args.identity.clone() {
        Some(id) => id,
        None => std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .context("no --identity/POD_NAME and no hostname")?,
    };
    let (mut nodes, keep_index) = NodeIndex::watched(client.clone());
    tokio::spawn(keep_index);
    if !args.no_ec2_fallback {
        nodes = nodes.with_ec2_fallback(Ec2::new(&aws).context("the EC2 fallback")?);
    }
    let settings = Settings {
        cluster: args.cluster.clone(),
        unknown_instance: args.unknown_instance,
        drain_margin: args.drain_margin,
        replacement_startup: args.replacement_startup,
        launch_timeout: args.launch_timeout,
        drain: DrainOptions {
            force: args.force,
            delete_emptydir_data: true,
            surge_all: args.surge,
        },
        cordon: Cordon {
            taint: args.taint.clone(),
            exclude_from_load_balancers: !args.keep_in_load_balancers,
        },
        replacement_gate: true,
        identity: Some(identity.clone()),
        max_drains: args.max_concurrent,
        ..Settings::default()
    };
    let handler = Arc::new(Handler::new(
        client.clone(),
        nodes,
        AutoScaling::new(&aws),
        settings,
        Arc::new(Metrics::default()),
    ));
    let queue = Arc::new(Sqs::new(&aws, &args.queue_url));
    let lock = LeaseLock::new(client, &args.namespace, &args.lease_name, &identity, timing);
    let workers = WorkerSettings {
        bad_message: args.bad_message,
        ..WorkerSettings::default()
    };
    let (stop, stopped) = watch::channel(false);
    tracing::info!(queue = %args.queue_url, %identity, cluster = ?args.cluster, "drainer starting");
    let http = tokio::spawn(service::serve_http(
        args.listen,
        handler.clone(),
        stopped.clone(),
    ));
    let lead = tokio::spawn(service::lead(lock, queue, handler, workers, stopped));
    super::shutdown_signal().await;
    tracing::info!("stopping: actions in hand stay recorded on their nodes for the next leader");
    stop.send_replace(true);
    lead.await?;
    http.await?.context("serving HTTP")?;
    Ok(ExitCode::SUCCESS)
}
