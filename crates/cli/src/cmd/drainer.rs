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
use quiesce_drainer::args::HandlerArgs;
use quiesce_drainer::client::{self, Timeouts};
use quiesce_drainer::lease::{LeaseLock, LeaseTiming};
use quiesce_drainer::metrics::Metrics;
use quiesce_drainer::nodes::NodeIndex;
use quiesce_drainer::{Handler, Settings, WorkerSettings, service};
use tokio::sync::watch;

use super::kube_config;

/// Arguments of `quiesce drainer`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The SQS queue the lifecycle events arrive on (EventBridge rule target or the hook's
    /// notification target).
    #[arg(long, env = "QUIESCE_QUEUE_URL")]
    pub queue_url: String,
    /// What the handler is told, shared with the Lambda.
    #[command(flatten)]
    pub handler: HandlerArgs,
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
    /// Lifecycle actions in hand at once (at least 1). Each is recorded, cordoned and
    /// heartbeated from the moment it is received; a message beyond this waits in the queue,
    /// heartbeated by nobody, so keep it above the most terminations that can come at once
    /// (a whole group's spot reclaim). An action in hand costs a heartbeat call per heartbeat
    /// interval and a visibility extension per half visibility timeout.
    #[arg(long, env = "QUIESCE_MAX_IN_HAND", default_value = "1000", value_parser = quiesce_drainer::args::parse_concurrency)]
    pub max_in_hand: usize,
    /// Where /healthz, /readyz and /metrics are served.
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    /// AWS region (default: the SDK's: AWS_REGION, profile, instance metadata).
    #[arg(long)]
    pub region: Option<String>,
    /// A custom AWS endpoint (VPC endpoint, or moto in tests; default: AWS_ENDPOINT_URL).
    #[arg(long)]
    pub endpoint_url: Option<String>,
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
        args.handler.kube.rate(),
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
    if args.handler.ec2_fallback() {
        nodes = nodes.with_ec2_fallback(Ec2::new(&aws).context("the EC2 fallback")?);
    }
    let settings = Settings {
        identity: Some(identity.clone()),
        ..args.handler.settings()
    };
    let handler = Arc::new(
        Handler::new(
            client.clone(),
            nodes,
            AutoScaling::new(&aws),
            settings,
            Arc::new(Metrics::default()),
        )
        .with_aws_load_balancers(&aws),
    );
    let queue = Arc::new(Sqs::new(&aws, &args.queue_url));
    let lock = LeaseLock::new(client, &args.namespace, &args.lease_name, &identity, timing);
    let workers = WorkerSettings {
        bad_message: args.handler.bad_message,
        max_in_hand: args.max_in_hand,
        ..WorkerSettings::default()
    };
    let (stop, stopped) = watch::channel(false);
    tracing::info!(queue = %args.queue_url, %identity, cluster = ?args.handler.cluster, "drainer starting");
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
