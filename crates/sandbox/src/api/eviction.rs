//! `pods/eviction`, as upstream's `pkg/registry/core/pod/storage/eviction.go` decides it:
//!
//! - pods that are Pending, Succeeded, Failed or already terminating skip the budget
//!   (`canIgnorePDB`);
//! - the PDBs of the pod's namespace whose selector matches it are found; a nil or empty
//!   selector matches nothing here; more than one → 500 with upstream's message and no reason;
//! - `unhealthyPodEvictionPolicy: AlwaysAllow` lets a not-Ready pod go; under the default
//!   `IfHealthyBudget` a not-Ready pod goes only while the budget is met
//!   (currentHealthy ≥ desiredHealthy > 0);
//! - `checkAndDecrement`: a status older than the spec → 429 with a "still being processed"
//!   cause and `Retry-After: 10` (upstream's `createTooManyRequestsError`, since v1.22; v1.20
//!   passed 0); disruptionsAllowed < 0 → 403; more than 2000 disrupted pods → 403; 0 allowed →
//!   429 "Cannot evict pod as it would violate the pod's disruption budget." with a
//!   `DisruptionBudget` cause and no Retry-After (upstream passes 0 seconds, and the testbed's
//!   recording of a real v1.20 server shows no header); otherwise the budget is decremented and
//!   the pod recorded in `status.disruptedPods`;
//! - then the pod is deleted with the eviction's deleteOptions (grace period, preconditions).

use serde_json::{Value, json};

use super::resources::{Resource, lookup};
use super::selector::LabelSelector;
use super::status::{self, ApiError};
use super::store::{DeleteOptions, Part, Store, now};

/// Upstream's `MaxDisruptedPodSize`.
const MAX_DISRUPTED_PODS: usize = 2000;

fn pods() -> &'static Resource {
    lookup("", "v1", "pods").expect("pods are served")
}

fn pdbs() -> &'static Resource {
    lookup("policy", "v1", "poddisruptionbudgets").expect("PDBs are served")
}

/// Whether the pod's Ready condition is True.
pub fn is_ready(pod: &Value) -> bool {
    pod["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

fn can_ignore_pdb(pod: &Value) -> bool {
    matches!(
        pod["status"]["phase"].as_str(),
        Some("Succeeded" | "Failed" | "Pending") | None
    ) || !pod["metadata"]["deletionTimestamp"].is_null()
}

/// The delete options an eviction body carries (`deleteOptions`).
pub fn delete_options(eviction: &Value, dry_run: bool) -> DeleteOptions {
    let opts = &eviction["deleteOptions"];
    DeleteOptions {
        grace_period_seconds: opts["gracePeriodSeconds"].as_i64(),
        uid: opts["preconditions"]["uid"].as_str().map(String::from),
        resource_version: opts["preconditions"]["resourceVersion"]
            .as_str()
            .map(String::from),
        dry_run: dry_run || opts["dryRun"].as_array().is_some_and(|d| !d.is_empty()),
    }
}

/// The message every budget 429 carries; the cause says which budget and why.
const VIOLATION: &str = "Cannot evict pod as it would violate the pod's disruption budget.";

/// Upstream's `Retry-After` for a budget whose status lags its spec.
const PROCESSING_RETRY_SECONDS: u64 = 10;

/// `metav1.StatusCause{Type: DisruptionBudget}` (the Go field `Type` is `reason` in JSON).
fn budget_cause(message: String) -> Value {
    json!([{"reason": "DisruptionBudget", "message": message}])
}

/// Evicts `ns/name` as the `Eviction` body asks; returns the `Status` body of a 201.
pub fn evict(
    store: &Store,
    ns: &str,
    name: &str,
    eviction: &Value,
    dry_run: bool,
) -> Result<Value, ApiError> {
    if eviction["metadata"]["name"]
        .as_str()
        .is_some_and(|n| !n.is_empty() && n != name)
    {
        return Err(ApiError::bad_request(
            "name in URL does not match name in Eviction object",
        ));
    }
    let mut opts = delete_options(eviction, dry_run);
    let pod = store.get(pods(), ns, name)?;
    if let Some(uid) = &opts.uid {
        let actual = pod["metadata"]["uid"].as_str().unwrap_or_default();
        if uid != actual {
            return Err(ApiError::uid_precondition("Pod", name, uid, actual));
        }
    }
    if !can_ignore_pdb(&pod) {
        // Upstream's `shouldEnforceResourceVersion`: the delete is conditional on the pod we
        // judged, so a pod turning Ready meanwhile cannot slip past its budget.
        if opts.resource_version.is_none() {
            opts.resource_version = pod["metadata"]["resourceVersion"]
                .as_str()
                .map(String::from);
        }
        let mut matching = Vec::new();
        store.for_each(pdbs(), |pdb| {
            if pdb["metadata"]["namespace"] != json!(ns) || pdb["spec"]["selector"].is_null() {
                return;
            }
            let selector = LabelSelector::from_object(&pdb["spec"]["selector"]);
            if !selector.is_empty() && selector.matches(&pod["metadata"]["labels"]) {
                matching.push(
                    pdb["metadata"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                );
            }
        });
        if matching.len() > 1 {
            return Err(ApiError::internal(
                "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
            ));
        }
        if let Some(pdb_name) = matching.first() {
            // Two evictions under one budget race for its last disruption: the loser's status
            // write conflicts, and upstream runs the whole check again on a conflict
            // (eviction.go: `retry.OnError(EvictionsRetry, errors.IsConflict, …)`), so it sees
            // the budget spent and answers 429, never the 409 of the write.
            let mut attempts = 0;
            loop {
                match check_and_decrement(store, ns, pdb_name, &pod, opts.dry_run) {
                    Err(e) if e.code == 409 && attempts < EVICTION_RETRIES => attempts += 1,
                    other => break other?,
                }
            }
        }
    }
    store.delete(pods(), ns, name, &opts)?;
    Ok(status::success())
}

/// Upstream's `EvictionsRetry` allows five steps.
const EVICTION_RETRIES: u32 = 5;

fn check_and_decrement(
    store: &Store,
    ns: &str,
    pdb_name: &str,
    pod: &Value,
    dry_run: bool,
) -> Result<(), ApiError> {
    let pdb = store.get(pdbs(), ns, pdb_name)?;
    let pod_status = &pdb["status"];
    if !is_ready(pod) {
        let always = pdb["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow";
        let current = pod_status["currentHealthy"].as_i64().unwrap_or(0);
        let desired = pod_status["desiredHealthy"].as_i64().unwrap_or(0);
        if always || (current >= desired && desired > 0) {
            return Ok(());
        }
    }
    let observed = pod_status["observedGeneration"].as_i64().unwrap_or(0);
    let generation = pdb["metadata"]["generation"].as_i64().unwrap_or(0);
    if observed < generation {
        return Err(ApiError::too_many_requests(
            VIOLATION,
            PROCESSING_RETRY_SECONDS,
            budget_cause(format!(
                "The disruption budget {pdb_name} is still being processed by the server."
            )),
        ));
    }
    let allowed = pod_status["disruptionsAllowed"].as_i64().unwrap_or(0);
    if allowed < 0 {
        return Err(forbidden("pdb disruptions allowed is negative"));
    }
    let disrupted = pod_status["disruptedPods"]
        .as_object()
        .map_or(0, |m| m.len());
    if disrupted > MAX_DISRUPTED_PODS {
        return Err(forbidden(
            "DisruptedPods map too big - too many evictions not confirmed by PDB controller",
        ));
    }
    if allowed == 0 {
        let desired = pod_status["desiredHealthy"].as_i64().unwrap_or(0);
        let current = pod_status["currentHealthy"].as_i64().unwrap_or(0);
        return Err(ApiError::too_many_requests(
            VIOLATION,
            0,
            budget_cause(format!(
                "The disruption budget {pdb_name} needs {desired} healthy pods and has {current} currently"
            )),
        ));
    }
    if dry_run {
        return Ok(());
    }
    let pod_name = pod["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let expected_rv = pdb["metadata"]["resourceVersion"].clone();
    store.modify(pdbs(), ns, pdb_name, Part::Status, |current| {
        let mut next = current.clone();
        next["metadata"]["resourceVersion"] = expected_rv;
        next["status"]["disruptionsAllowed"] = json!(allowed - 1);
        if !next["status"]["disruptedPods"].is_object() {
            next["status"]["disruptedPods"] = json!({});
        }
        next["status"]["disruptedPods"][pod_name] = json!(now());
        Ok(next)
    })?;
    Ok(())
}

fn forbidden(message: &str) -> ApiError {
    ApiError {
        code: 403,
        reason: "Forbidden",
        message: message.to_string(),
        details: None,
        retry_after: None,
    }
}
