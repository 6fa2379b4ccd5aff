//! One place that builds the AWS SDK configuration, so every client shares the same HTTPS
//! client (rustls on ring — the crypto provider kube already links; two providers in one binary
//! make rustls panic at start) and the same endpoint override (moto in tests, VPC endpoints in
//! production), and the same timeouts: the SDK's default is a connect timeout only, so a
//! stalled endpoint would freeze a heartbeat or a completion forever.

use std::time::Duration;

use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};

/// Where and how to reach AWS. Both fields fall back to the SDK's usual sources
/// (`AWS_REGION`, `AWS_ENDPOINT_URL`, profiles, instance metadata).
#[derive(Debug, Clone, Default)]
pub struct AwsOptions {
    /// The region, e.g. `us-east-1`.
    pub region: Option<String>,
    /// A custom endpoint for every service (moto's server, a VPC endpoint).
    pub endpoint_url: Option<String>,
}

/// Connection set-up to an AWS endpoint.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// One attempt of a call (Auto Scaling and SQS answer in well under a second).
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// A call with its retries (the SDK's standard mode: three attempts, with backoff).
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(30);

/// The timeouts of every call but the long poll, which extends them by its wait
/// ([`crate::queue`]).
pub fn timeouts() -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .operation_attempt_timeout(ATTEMPT_TIMEOUT)
        .operation_timeout(OPERATION_TIMEOUT)
        .build()
}

/// Loads credentials and region the standard way, with our HTTPS client and timeouts.
pub async fn sdk_config(opts: &AwsOptions) -> SdkConfig {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
        .build_https();
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .http_client(http)
        .timeout_config(timeouts());
    if let Some(region) = &opts.region {
        loader = loader.region(Region::new(region.clone()));
    }
    if let Some(url) = &opts.endpoint_url {
        loader = loader.endpoint_url(url);
    }
    loader.load().await
}
