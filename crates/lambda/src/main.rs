//! `quiesce-lambda`: the Lambda bootstrap. Configuration comes from the environment (the SAM
//! template in deploy/sam sets it):
//!
//! - `QUIESCE_QUEUE_URL`: the queue the event source mapping reads (to set visibility);
//! - `QUIESCE_CLUSTER`: the EKS cluster's name (token audience, and the hooks it acts on);
//! - `QUIESCE_API_SERVER`, `QUIESCE_CA_DATA`: the cluster's endpoint and base64 CA bundle,
//!   or `KUBECONFIG` for any other cluster;
//! - `QUIESCE_NO_EC2_FALLBACK` (`true` turns off the PrivateDnsName lookup; the older
//!   `QUIESCE_EC2_FALLBACK=false` still does);
//! - the drain settings of `quiesce drainer`, under the same variables (`QUIESCE_UNKNOWN_INSTANCE`,
//!   `QUIESCE_BAD_MESSAGE`, `QUIESCE_KEEP_IN_LOAD_BALANCERS`, `QUIESCE_TAINT`, `QUIESCE_FORCE`,
//!   `QUIESCE_SURGE`, `QUIESCE_DRAIN_MARGIN`, `QUIESCE_MAX_CONCURRENT`, …): see
//!   [`quiesce_drainer::args::HandlerArgs`].

use std::sync::Arc;
use std::time::SystemTime;

use anyhow::Context;
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use lambda_runtime::{LambdaEvent, service_fn};
use quiesce_aws::ec2::Ec2;
use quiesce_aws::hooks::AutoScaling;
use quiesce_aws::queue::Sqs;
use quiesce_aws::sdk::{AwsOptions, sdk_config};
use quiesce_drainer::client::{self, Rate, Timeouts};
use quiesce_drainer::metrics::Metrics;
use quiesce_drainer::nodes::NodeIndex;
use quiesce_drainer::{Handler, Settings};
use quiesce_lambda::{BatchSettings, LambdaSettings, handle_batch, settings_from_env};
use tokio::time::Instant;

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

async fn kube_client(
    aws: &aws_config::SdkConfig,
    cluster: Option<&str>,
    rate: Rate,
) -> anyhow::Result<kube::Client> {
    let config = match (env("QUIESCE_API_SERVER"), cluster) {
        (Some(server), Some(cluster)) => {
            let region = aws
                .region()
                .map(|r| r.to_string())
                .context("no AWS region for the EKS token")?;
            let token = quiesce_lambda::eks::token(aws, cluster, &region).await?;
            let yaml = format!(
                "apiVersion: v1\nkind: Config\nclusters: [{{name: eks, cluster: {{server: {server}, certificate-authority-data: {ca}}}}}]\nusers: [{{name: lambda, user: {{token: {token}}}}}]\ncontexts: [{{name: eks, context: {{cluster: eks, user: lambda}}}}]\ncurrent-context: eks\n",
                ca = env("QUIESCE_CA_DATA").context("QUIESCE_API_SERVER needs QUIESCE_CA_DATA")?,
            );
            let kubeconfig = kube::config::Kubeconfig::from_yaml(&yaml)?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?
        }
        _ => kube::Config::infer()
            .await
            .context("set QUIESCE_API_SERVER + QUIESCE_CA_DATA + QUIESCE_CLUSTER, or KUBECONFIG")?,
    };
    Ok(client::build(config, Timeouts::default(), rate)?)
}

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(env("QUIESCE_LOG").unwrap_or_else(|| "info".into()))
        .without_time()
        .init();
    let aws = sdk_config(&AwsOptions::default()).await;
    let queue_url = env("QUIESCE_QUEUE_URL").context("QUIESCE_QUEUE_URL is required")?;
    let LambdaSettings {
        handler: settings,
        batch,
        rate,
        ec2_fallback,
    } = settings_from_env()?;
    let cluster = settings.cluster.clone();
    let queue = Arc::new(Sqs::new(&aws, queue_url));
    // Nodes without an AWS providerID are found by PrivateDnsName unless turned off.
    let ec2 = if ec2_fallback {
        Some(Ec2::new(&aws)?)
    } else {
        None
    };
    let aws = Arc::new(aws);
    let shared = Arc::new(Shared {
        aws,
        queue,
        settings,
        batch,
        rate,
        cluster,
        ec2,
    });
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| {
        // Boxed: the drain's future is deep enough to overflow the compiler's layout limit
        // when inlined into the runtime's.
        Box::pin(invoke(shared.clone(), event))
    }))
    .await
}

/// What every invocation shares.
struct Shared {
    aws: Arc<aws_config::SdkConfig>,
    queue: Arc<Sqs>,
    settings: Settings,
    batch: BatchSettings,
    rate: Rate,
    cluster: Option<String>,
    ec2: Option<Ec2>,
}

async fn invoke(
    shared: Arc<Shared>,
    event: LambdaEvent<SqsEvent>,
) -> Result<SqsBatchResponse, lambda_runtime::Error> {
    // A fresh client per invocation: the EKS token lives 15 minutes.
    let client = kube_client(&shared.aws, shared.cluster.as_deref(), shared.rate)
        .await
        .map_err(|e| lambda_runtime::Error::from(format!("{e:#}")))?;
    let mut nodes = NodeIndex::listed(client.clone());
    if let Some(ec2) = &shared.ec2 {
        nodes = nodes.with_ec2_fallback(ec2.clone());
    }
    let handler = Handler::new(
        client,
        nodes,
        AutoScaling::new(&shared.aws),
        shared.settings.clone(),
        Arc::new(Metrics::default()),
    )
    .with_aws_load_balancers(&shared.aws);
    let left = event
        .context
        .deadline()
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    Ok(handle_batch(
        &handler,
        &*shared.queue,
        &event.payload,
        Instant::now() + left,
        &shared.batch,
    )
    .await)
}
