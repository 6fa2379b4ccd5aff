//! EC2 instance → Kubernetes node. On EKS (and any cluster running the AWS cloud provider) a
//! node's `spec.providerID` is `aws:///<availability-zone>/<instance-id>`; matching on it is
//! exact, unlike guessing from the node name, which differs with custom hostnames.

/// The instance id in a providerID, if it is an AWS one.
pub fn instance_id(provider_id: &str) -> Option<&str> {
    let rest = provider_id.strip_prefix("aws://")?;
    let id = rest.rsplit('/').next()?;
    (id.starts_with("i-") && id.len() > 2 && id[2..].chars().all(|c| c.is_ascii_hexdigit()))
        .then_some(id)
}

/// The node among `(name, providerID)` pairs whose providerID names `instance`.
pub fn node_for<'a>(
    nodes: impl IntoIterator<Item = (&'a str, &'a str)>,
    instance: &str,
) -> Option<&'a str> {
    nodes
        .into_iter()
        .find(|(_, provider)| instance_id(provider) == Some(instance))
        .map(|(name, _)| name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_ids() {
        assert_eq!(
            instance_id("aws:///us-east-1a/i-0abc123def4567890"),
            Some("i-0abc123def4567890")
        );
        assert_eq!(instance_id("aws://us-east-1a/i-0abc"), Some("i-0abc"));
        assert_eq!(instance_id("gce://project/zone/vm-1"), None);
        assert_eq!(instance_id("aws:///us-east-1a/not-an-instance"), None);
    }

    #[test]
    fn finds_the_node() {
        let nodes = [
            ("ip-10-0-1-5.ec2.internal", "aws:///us-east-1a/i-01"),
            ("other", "aws:///us-east-1b/i-02"),
        ];
        assert_eq!(node_for(nodes, "i-02"), Some("other"));
        assert_eq!(node_for(nodes, "i-03"), None);
    }
}
