//! `SelfSubjectAccessReview` and `SelfSubjectRulesReview`, which `kubectl auth can-i` asks.
//!
//! The sandbox has no authentication or authorisation: every request is allowed, so the
//! answer to every question is yes, and the review says why. Like upstream's review registries
//! (`pkg/registry/authorization/*`) these are create-only and never stored.

use serde_json::{Value, json};

use super::resources::Resource;

/// What the sandbox gives as the reason for every decision.
const REASON: &str = "the quiesce sandbox allows every request (no authorization)";

/// The review `body` with its status filled in, as the 201 answer to its create.
pub fn answer(r: &Resource, mut body: Value) -> Value {
    if !body.is_object() {
        body = json!({});
    }
    body["apiVersion"] = json!(r.api_version());
    body["kind"] = json!(r.kind);
    if !body["metadata"].is_object() {
        body["metadata"] = json!({});
    }
    body["status"] = match r.kind {
        "SelfSubjectRulesReview" => json!({
            "resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}],
            "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
            "incomplete": false,
        }),
        _ => json!({"allowed": true, "reason": REASON}),
    };
    body
}
