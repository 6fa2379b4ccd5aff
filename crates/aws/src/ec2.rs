//! The fallback for nodes without an AWS providerID: EC2 `DescribeInstances` gives the
//! instance's PrivateDnsName, which is the node name under the default EKS AMI's hostname
//! scheme. One signed Query API call over rustls + ring — the full aws-sdk-ec2 crate would be
//! the biggest dependency of the workspace (research: 8 GB of memory to build) for this one
//! field.

use std::time::SystemTime;

use aws_credential_types::provider::ProvideCredentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// Why the lookup failed.
#[derive(Debug, thiserror::Error)]
#[error("EC2 DescribeInstances for {instance}: {message}")]
pub struct Ec2Error {
    /// The instance asked about.
    pub instance: String,
    /// What went wrong.
    pub message: String,
}

/// A minimal EC2 client for `DescribeInstances`.
#[derive(Clone)]
pub struct Ec2 {
    config: aws_config::SdkConfig,
    http: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<bytes::Bytes>>,
}

impl Ec2 {
    /// A client with `config`'s credentials, region and endpoint override.
    pub fn new(config: &aws_config::SdkConfig) -> Result<Ec2, Ec2Error> {
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(crate::sdk::CONNECT_TIMEOUT));
        http.enforce_http(false);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_native_roots(rustls::crypto::ring::default_provider())
            .map_err(|e| Ec2Error {
                instance: String::new(),
                message: format!("loading the system's root certificates: {e}"),
            })?
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        Ok(Ec2 {
            config: config.clone(),
            http: Client::builder(TokioExecutor::new()).build(https),
        })
    }

    /// The instance's PrivateDnsName; `None` if EC2 does not know the instance. Bounded by
    /// the SDK's operation timeout, as every other AWS call.
    pub async fn private_dns_name(&self, instance: &str) -> Result<Option<String>, Ec2Error> {
        match tokio::time::timeout(crate::sdk::OPERATION_TIMEOUT, self.describe(instance)).await {
            Ok(answer) => answer,
            Err(_) => Err(Ec2Error {
                instance: instance.to_string(),
                message: format!("no answer within {:?}", crate::sdk::OPERATION_TIMEOUT),
            }),
        }
    }

    async fn describe(&self, instance: &str) -> Result<Option<String>, Ec2Error> {
        let fail = |message: String| Ec2Error {
            instance: instance.to_string(),
            message,
        };
        let region = self
            .config
            .region()
            .map(|r| r.to_string())
            .ok_or_else(|| fail("no AWS region configured".into()))?;
        let base = self
            .config
            .endpoint_url()
            .map(|u| u.trim_end_matches('/').to_string())
            .unwrap_or_else(|| format!("https://ec2.{region}.amazonaws.com"));
        let url =
            format!("{base}/?Action=DescribeInstances&InstanceId.1={instance}&Version=2016-11-15");
        let uri: http::Uri = url.parse().map_err(|e| fail(format!("{url}: {e}")))?;
        let host = uri.authority().map(|a| a.to_string()).unwrap_or_default();
        let credentials = self
            .config
            .credentials_provider()
            .ok_or_else(|| fail("no AWS credentials provider".into()))?
            .provide_credentials()
            .await
            .map_err(|e| fail(format!("credentials: {e}")))?;
        let identity = credentials.into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&region)
            .name("ec2")
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| fail(e.to_string()))?
            .into();
        let signable = SignableRequest::new(
            "GET",
            url.as_str(),
            [("host", host.as_str())].into_iter(),
            SignableBody::Bytes(&[]),
        )
        .map_err(|e| fail(e.to_string()))?;
        let (instructions, _) = sign(signable, &params)
            .map_err(|e| fail(e.to_string()))?
            .into_parts();
        let mut request = http::Request::get(uri)
            .header("host", &host)
            .body(Full::default())
            .map_err(|e| fail(e.to_string()))?;
        instructions.apply_to_request_http1x(&mut request);
        let response = self
            .http
            .request(request)
            .await
            .map_err(|e| fail(e.to_string()))?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| fail(e.to_string()))?
            .to_bytes();
        let text = String::from_utf8_lossy(&body);
        if text.contains("InvalidInstanceID.NotFound") {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(fail(format!("HTTP {status}: {text}")));
        }
        Ok(element(&text, "privateDnsName").filter(|n| !n.is_empty()))
    }
}

/// The text of the first `<name>…</name>` in an EC2 Query API XML answer.
fn element(xml: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&format!("</{name}>"))?;
    Some(xml[start..start + end].trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_first_element() {
        let xml = "<DescribeInstancesResponse><reservationSet><item><instancesSet><item>\
                   <instanceId>i-1</instanceId><privateDnsName>ip-10-0-0-5.ec2.internal</privateDnsName>\
                   </item></instancesSet></item></reservationSet></DescribeInstancesResponse>";
        assert_eq!(
            element(xml, "privateDnsName").as_deref(),
            Some("ip-10-0-0-5.ec2.internal")
        );
        assert_eq!(element(xml, "missing"), None);
    }
}
