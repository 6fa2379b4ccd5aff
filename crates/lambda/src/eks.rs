//! Authenticating to EKS from a Lambda, which has no `aws` CLI for an exec plugin: the bearer
//! token is a presigned STS `GetCallerIdentity` URL, signed with the function's role and with
//! the cluster name in the signed `x-k8s-aws-id` header, base64url-encoded after the prefix
//! `k8s-aws-v1.` (the aws-iam-authenticator token format EKS accepts; valid 15 minutes, so a
//! new one is made per invocation).

use std::time::{Duration, SystemTime};

use aws_credential_types::provider::ProvideCredentials;
use aws_sigv4::http_request::{
    SignableBody, SignableRequest, SignatureLocation, SigningSettings, sign,
};
use aws_sigv4::sign::v4;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// The signed header EKS checks against the cluster's name.
const CLUSTER_HEADER: &str = "x-k8s-aws-id";

/// A bearer token for `cluster` in `region`, signed with `config`'s credentials.
pub async fn token(
    config: &aws_config::SdkConfig,
    cluster: &str,
    region: &str,
) -> anyhow::Result<String> {
    let provider = config
        .credentials_provider()
        .ok_or_else(|| anyhow::anyhow!("no AWS credentials provider to sign the EKS token"))?;
    let credentials = provider.provide_credentials().await?;
    presign(&credentials.into(), cluster, region, SystemTime::now())
}

fn presign(
    identity: &aws_smithy_runtime_api::client::identity::Identity,
    cluster: &str,
    region: &str,
    now: SystemTime,
) -> anyhow::Result<String> {
    let url =
        format!("https://sts.{region}.amazonaws.com/?Action=GetCallerIdentity&Version=2011-06-15");
    let mut settings = SigningSettings::default();
    settings.signature_location = SignatureLocation::QueryParams;
    settings.expires_in = Some(Duration::from_secs(60));
    let params = v4::SigningParams::builder()
        .identity(identity)
        .region(region)
        .name("sts")
        .time(now)
        .settings(settings)
        .build()?
        .into();
    let request = SignableRequest::new(
        "GET",
        url.as_str(),
        [(CLUSTER_HEADER, cluster)].into_iter(),
        SignableBody::Bytes(&[]),
    )?;
    let (instructions, _signature) = sign(request, &params)?.into_parts();
    let (_, query) = instructions.into_parts();
    let mut signed = url;
    for (key, value) in query {
        signed.push('&');
        signed.push_str(key);
        signed.push('=');
        signed.push_str(&percent_encode(&value));
    }
    Ok(format!("k8s-aws-v1.{}", URL_SAFE_NO_PAD.encode(signed)))
}

/// RFC 3986 encoding of a query value: unreserved characters stay, all else is `%XX`.
fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_credential_types::Credentials;

    #[test]
    fn the_token_is_a_presigned_sts_url_naming_the_cluster() {
        let identity = Credentials::new("AKIDEXAMPLE", "secret", None, None, "test").into();
        let token = presign(&identity, "prod", "eu-west-1", SystemTime::UNIX_EPOCH).unwrap();
        let encoded = token.strip_prefix("k8s-aws-v1.").expect("the EKS prefix");
        let url = String::from_utf8(URL_SAFE_NO_PAD.decode(encoded).unwrap()).unwrap();
        assert!(
            url.starts_with(
                "https://sts.eu-west-1.amazonaws.com/?Action=GetCallerIdentity&Version=2011-06-15&"
            ),
            "{url}"
        );
        assert!(
            url.contains(
                "X-Amz-Credential=AKIDEXAMPLE%2F19700101%2Feu-west-1%2Fsts%2Faws4_request"
            ),
            "{url}"
        );
        assert!(
            url.contains("X-Amz-SignedHeaders=host%3Bx-k8s-aws-id"),
            "{url}"
        );
        assert!(url.contains("X-Amz-Expires=60"), "{url}");
        assert!(url.contains("X-Amz-Signature="), "{url}");
        assert!(!token.contains('='), "unpadded base64url");
    }
}
