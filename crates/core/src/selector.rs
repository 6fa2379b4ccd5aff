//! Label selectors, as the API server evaluates them for PDBs and workloads.
//!
//! Semantics follow `k8s.io/apimachinery/pkg/apis/meta/v1.LabelSelectorAsSelector`: the
//! requirements are ANDed, an empty selector matches everything, and a selector that is absent
//! altogether matches nothing (that is how the disruption controller treats a PDB without one).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// Whether `labels` satisfy `selector`; `None` matches nothing.
pub fn matches(
    selector: Option<&LabelSelector>,
    labels: Option<&BTreeMap<String, String>>,
) -> bool {
    let Some(selector) = selector else {
        return false;
    };
    let empty = BTreeMap::new();
    let labels = labels.unwrap_or(&empty);
    let by_label = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(key, value)| labels.get(key) == Some(value));
    by_label
        && selector.match_expressions.iter().flatten().all(|expr| {
            let values = expr.values.as_deref().unwrap_or_default();
            let current = labels.get(&expr.key);
            match expr.operator.as_str() {
                "In" => current.is_some_and(|v| values.contains(v)),
                "NotIn" => current.is_none_or(|v| !values.contains(v)),
                "Exists" => current.is_some(),
                "DoesNotExist" => current.is_none(),
                _ => false,
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn absent_selector_matches_nothing_and_empty_matches_all() {
        let l = labels(&[("app", "web")]);
        assert!(!matches(None, Some(&l)));
        assert!(matches(Some(&LabelSelector::default()), Some(&l)));
    }

    #[test]
    fn labels_and_expressions_are_anded() {
        let selector = LabelSelector {
            match_labels: Some(labels(&[("app", "web")])),
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "tier".into(),
                operator: "In".into(),
                values: Some(vec!["front".into()]),
            }]),
        };
        assert!(matches(
            Some(&selector),
            Some(&labels(&[("app", "web"), ("tier", "front")]))
        ));
        assert!(!matches(
            Some(&selector),
            Some(&labels(&[("app", "web"), ("tier", "back")]))
        ));
        assert!(!matches(
            Some(&selector),
            Some(&labels(&[("tier", "front")]))
        ));
    }
}
