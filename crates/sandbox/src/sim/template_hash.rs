//! A stable short hash of a pod template, naming a Deployment's ReplicaSets and a
//! StatefulSet's revisions. Upstream (`pkg/controller/controller_utils.go` ComputeHash) takes
//! FNV-32a over a dump of the template plus the collision count and encodes the decimal
//! digits with `rand.SafeEncodeString`; we do the same over the template's JSON, which is
//! deterministic for k8s-openapi types (struct field order, sorted maps).

use k8s_openapi::api::core::v1::PodTemplateSpec;

/// The alphabet of `rand.SafeEncodeString`: no vowels, no look-alike digits.
const SAFE: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// The `pod-template-hash` of `template` with `collision_count`.
pub(crate) fn template_hash(template: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    let mut bytes = serde_json::to_vec(template).unwrap_or_default();
    if let Some(count) = collision_count {
        bytes.extend_from_slice(&count.to_le_bytes());
    }
    let hash = bytes.iter().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    });
    hash.to_string()
        .bytes()
        .map(|d| char::from(SAFE[usize::from(d) % SAFE.len()]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    #[test]
    fn changes_with_the_template_and_nothing_else() {
        let template = PodTemplateSpec::default();
        let annotated = PodTemplateSpec {
            metadata: Some(ObjectMeta {
                annotations: Some(
                    [("kubectl.kubernetes.io/restartedAt".into(), "now".into())].into(),
                ),
                ..ObjectMeta::default()
            }),
            spec: None,
        };
        assert_eq!(
            template_hash(&template, None),
            template_hash(&template.clone(), None)
        );
        assert_ne!(
            template_hash(&template, None),
            template_hash(&annotated, None)
        );
        assert_ne!(
            template_hash(&template, None),
            template_hash(&template, Some(1))
        );
        assert!(
            template_hash(&template, None)
                .bytes()
                .all(|b| SAFE.contains(&b))
        );
    }
}
