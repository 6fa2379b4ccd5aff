//! One place that builds the AWS SDK configuration, so every client shares the same HTTPS
//! client (rustls on ring — the crypto provider kube already links; two providers in one binary
//! make rustls panic at start) and the same endpoint override (moto in tests, VPC endpoints in
//! production).

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

/// Loads credentials and region the standard way, with our HTTPS client.
pub async fn sdk_config(opts: &AwsOptions) -> SdkConfig {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
        .build_https();
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).http_client(http);
    if let Some(region) = &opts.region {
        loader = loader.region(Region::new(region.clone()));
    }
    if let Some(url) = &opts.endpoint_url {
        loader = loader.endpoint_url(url);
    }
    loader.load().await
}
