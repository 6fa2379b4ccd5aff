//! The fallback for nodes without an AWS providerID: EC2 `DescribeInstances` gives the
//! instance's PrivateDnsName, which is the node name under the default EKS AMI's hostname
//! scheme; and `quiesce roll --image-id`: `CreateLaunchTemplateVersion` makes the AMI a version
//! of the group's launch template. Signed Query API calls over rustls + ring — the full
//! aws-sdk-ec2 crate would be the biggest dependency of the workspace (research: 8 GB of
//! memory to build) for these two calls.

use std::time::SystemTime;

use aws_credential_types::provider::ProvideCredentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// Why an EC2 call failed.
#[derive(Debug, thiserror::Error)]
#[error("EC2 {call} for {instance}: {message}")]
pub struct Ec2Error {
    /// The API call.
    pub call: &'static str,
    /// The instance (or launch template) asked about.
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
                call: "(client set-up)",
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

    /// The instance's PrivateDnsName; `None` if EC2 does not know the instance.
    pub async fn private_dns_name(&self, instance: &str) -> Result<Option<String>, Ec2Error> {
        let query = format!("Action=DescribeInstances&InstanceId.1={instance}&Version=2016-11-15");
        match self.call("DescribeInstances", instance, &query).await {
            Ok(text) => Ok(element(&text, "privateDnsName").filter(|n| !n.is_empty())),
            Err(e) if e.message.contains("InvalidInstanceID.NotFound") => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// A new version of launch template `template` from `source_version` with `image_id`
    /// (`CreateLaunchTemplateVersion`); its version number.
    pub async fn create_launch_template_version(
        &self,
        template: &str,
        source_version: &str,
        image_id: &str,
    ) -> Result<String, Ec2Error> {
        let query = form_query(&[
            ("Action", "CreateLaunchTemplateVersion"),
            ("LaunchTemplateId", template),
            ("SourceVersion", source_version),
            ("LaunchTemplateData.ImageId", image_id),
            ("VersionDescription", "quiesce roll --image-id"),
            ("Version", "2016-11-15"),
        ]);
        let text = self
            .call("CreateLaunchTemplateVersion", template, &query)
            .await?;
        element(&text, "versionNumber").ok_or_else(|| Ec2Error {
            call: "CreateLaunchTemplateVersion",
            instance: template.to_string(),
            message: format!("no versionNumber in the answer: {text}"),
        })
    }

    /// One signed GET of the Query API, bounded by the SDK's operation timeout as every
    /// other AWS call; the answer's body, or the error with the service's text.
    async fn call(
        &self,
        call: &'static str,
        subject: &str,
        query: &str,
    ) -> Result<String, Ec2Error> {
        match tokio::time::timeout(crate::sdk::OPERATION_TIMEOUT, self.signed_get(query)).await {
            Ok(answer) => answer,
            Err(_) => Err(format!(
                "no answer within {:?}",
                crate::sdk::OPERATION_TIMEOUT
            )),
        }
        .map_err(|message| Ec2Error {
            call,
            instance: subject.to_string(),
            message,
        })
    }

    async fn signed_get(&self, query: &str) -> Result<String, String> {
        let region = self
            .config
            .region()
            .map(|r| r.to_string())
            .ok_or_else(|| "no AWS region configured".to_string())?;
        let base = self
            .config
            .endpoint_url()
            .map(|u| u.trim_end_matches('/').to_string())
            .unwrap_or_else(|| format!("https://ec2.{region}.amazonaws.com"));
        let url = format!("{base}/?{query}");
        let uri: http::Uri = url.parse().map_err(|e| format!("{url}: {e}"))?;
        let host = uri.authority().map(|a| a.to_string()).unwrap_or_default();
        let credentials = self
            .config
            .credentials_provider()
            .ok_or_else(|| "no AWS credentials provider".to_string())?
            .provide_credentials()
            .await
            .map_err(|e| format!("credentials: {e}"))?;
        let identity = credentials.into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&region)
            .name("ec2")
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| e.to_string())?
            .into();
        let signable = SignableRequest::new(
            "GET",
            url.as_str(),
            [("host", host.as_str())].into_iter(),
            SignableBody::Bytes(&[]),
        )
        .map_err(|e| e.to_string())?;
        let (instructions, _) = sign(signable, &params)
            .map_err(|e| e.to_string())?
            .into_parts();
        let mut request = http::Request::get(uri)
            .header("host", &host)
            .body(Full::default())
            .map_err(|e| e.to_string())?;
        instructions.apply_to_request_http1x(&mut request);
        let response = self
            .http
            .request(request)
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        let text = String::from_utf8_lossy(&body).to_string();
        if !status.is_success() {
            return Err(format!("HTTP {status}: {text}"));
        }
        Ok(text)
    }
}

/// `k=v&…` with every value percent-encoded as SigV4's canonical query wants (RFC 3986
/// unreserved characters kept, a space as `%20`): form_urlencoded writes `+` for a space,
/// which the signer would sign as a plus.
fn form_query(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
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

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(
            form_query(&[("A", "quiesce roll --image-id"), ("V", "$Latest")]),
            "A=quiesce%20roll%20--image-id&V=%24Latest"
        );
    }
}
