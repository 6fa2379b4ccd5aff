//! `pods/eviction` against PodDisruptionBudgets, with the codes, messages, causes and headers
//! of upstream's `pkg/registry/core/pod/storage/eviction.go`.

mod api_support;

use api_support::{Answer, api_error, pod, send, send_json, server, set_running};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use quiesce_sandbox::api::ApiServer;
use serde_json::{Value, json};

const VIOLATION: &str = "Cannot evict pod as it would violate the pod's disruption budget.";

/// Creates a PDB over `app=<app>` and writes the status its controller would.
async fn budget(server: &ApiServer, name: &str, app: &str, spec: Value, status: Value) {
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(server.client(), "default");
    let mut full_spec = json!({"selector": {"matchLabels": {"app": app}}});
    json_patch::merge(&mut full_spec, &spec);
    let pdb =
        serde_json::from_value(json!({"metadata": {"name": name}, "spec": full_spec})).unwrap();
    pdbs.create(&PostParams::default(), &pdb).await.unwrap();
    if !status.is_null() {
        pdbs.patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": status})),
        )
        .await
        .unwrap();
    }
}

/// A budget status as the disruption controller writes it for generation 1.
fn observed(allowed: i64, current: i64, desired: i64) -> Value {
    json!({"observedGeneration": 1, "disruptionsAllowed": allowed,
           "currentHealthy": current, "desiredHealthy": desired, "expectedPods": current})
}

/// A bound, Running pod with `app=<app>`, Ready or not.
async fn running_pod(server: &ApiServer, name: &str, app: &str, ready: bool) -> Pod {
    let pods: Api<Pod> = Api::namespaced(server.client(), "default");
    let created = pods
        .create(
            &PostParams::default(),
            &pod(name, Some("n1"), json!({"app": app})),
        )
        .await
        .unwrap();
    set_running(&pods, name, ready).await;
    created
}

async fn evict(server: &ApiServer, name: &str, body: Value) -> Answer {
    evict_path(
        server,
        &format!("/api/v1/namespaces/default/pods/{name}/eviction"),
        body,
    )
    .await
}

async fn evict_path(server: &ApiServer, path: &str, body: Value) -> Answer {
    send_json(server, "POST", path, body).await
}

async fn terminating(server: &ApiServer, name: &str) -> Option<i64> {
    let pods: Api<Pod> = Api::namespaced(server.client(), "default");
    pods.get(name)
        .await
        .unwrap()
        .metadata
        .deletion_grace_period_seconds
}

#[tokio::test]
async fn without_a_budget_the_pod_terminates_with_the_requested_grace() {
    let server = server().await;
    running_pod(&server, "solo", "solo", true).await;
    let answer = evict(
        &server,
        "solo",
        json!({"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "solo"},
               "deleteOptions": {"gracePeriodSeconds": 5}}),
    )
    .await;
    assert_eq!(answer.code, 201);
    assert_eq!(
        (answer.body["kind"].as_str(), answer.body["status"].as_str()),
        (Some("Status"), Some("Success"))
    );
    assert_eq!(terminating(&server, "solo").await, Some(5));

    let pods: Api<Pod> = Api::namespaced(server.client(), "default");
    pods.create(
        &PostParams::default(),
        &pod("unbound", None, json!({"app": "x"})),
    )
    .await
    .unwrap();
    // A v1beta1 body and a body without apiVersion/kind are both accepted, as upstream.
    let answer = evict(
        &server,
        "unbound",
        json!({"apiVersion": "policy/v1beta1", "kind": "Eviction", "metadata": {"name": "unbound"}}),
    )
    .await;
    assert_eq!(answer.code, 201);
    assert_eq!(
        api_error(pods.get("unbound").await.unwrap_err()).0,
        404,
        "an unbound pod goes at once"
    );
    let missing = evict(&server, "nope", json!({"metadata": {"name": "nope"}})).await;
    assert_eq!(
        (missing.code, missing.body["message"].as_str()),
        (404, Some(r#"pods "nope" not found"#))
    );
    let mismatch = evict(&server, "solo", json!({"metadata": {"name": "other"}})).await;
    assert_eq!(mismatch.code, 400);
    server.shutdown().await;
}

#[tokio::test]
async fn a_budget_allows_one_disruption_then_answers_429() {
    let server = server().await;
    running_pod(&server, "web-1", "web", true).await;
    running_pod(&server, "web-2", "web", true).await;
    budget(
        &server,
        "web-pdb",
        "web",
        json!({"minAvailable": 1}),
        observed(1, 2, 1),
    )
    .await;
    let first = evict(&server, "web-1", json!({"metadata": {"name": "web-1"}})).await;
    assert_eq!(first.code, 201);
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(server.client(), "default");
    let status = pdbs.get("web-pdb").await.unwrap().status.unwrap();
    assert_eq!(status.disruptions_allowed, 0);
    assert!(
        status.disrupted_pods.unwrap().contains_key("web-1"),
        "the evicted pod is recorded for the controller"
    );

    // The controller has not caught up: the budget is spent.
    pdbs.patch_status(
        "web-pdb",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": observed(0, 2, 2)})),
    )
    .await
    .unwrap();
    let second = evict(&server, "web-2", json!({"metadata": {"name": "web-2"}})).await;
    assert_eq!(second.code, 429);
    assert_eq!(second.body["reason"], "TooManyRequests");
    assert_eq!(second.body["message"], VIOLATION);
    assert_eq!(
        second.body["details"]["causes"],
        json!([{"reason": "DisruptionBudget",
                "message": "The disruption budget web-pdb needs 2 healthy pods and has 2 currently"}])
    );
    assert_eq!(
        second.retry_after, None,
        "upstream passes 0 seconds, so no Retry-After"
    );
    assert_eq!(
        terminating(&server, "web-2").await,
        None,
        "a refused eviction leaves the pod alone"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_budget_not_yet_observed_asks_to_retry_in_ten_seconds() {
    let server = server().await;
    running_pod(&server, "db-0", "db", true).await;
    budget(
        &server,
        "db-pdb",
        "db",
        json!({"maxUnavailable": 1}),
        Value::Null,
    )
    .await;
    let answer = evict(&server, "db-0", json!({"metadata": {"name": "db-0"}})).await;
    assert_eq!(answer.code, 429);
    assert_eq!(answer.body["message"], VIOLATION);
    assert_eq!(
        answer.body["details"]["causes"][0]["message"],
        "The disruption budget db-pdb is still being processed by the server."
    );
    assert_eq!(answer.body["details"]["retryAfterSeconds"], 10);
    assert_eq!(answer.retry_after.as_deref(), Some("10"));
    server.shutdown().await;
}

#[tokio::test]
async fn two_budgets_are_a_500_and_preconditions_a_409() {
    let server = server().await;
    let created = running_pod(&server, "api-1", "api", true).await;
    budget(
        &server,
        "api-a",
        "api",
        json!({"minAvailable": 0}),
        observed(1, 1, 0),
    )
    .await;
    let wrong_uid = evict(
        &server,
        "api-1",
        json!({"metadata": {"name": "api-1"}, "deleteOptions": {"preconditions": {"uid": "0000"}}}),
    )
    .await;
    let uid = created.metadata.uid.unwrap();
    assert_eq!(wrong_uid.code, 409);
    assert_eq!(
        wrong_uid.body["message"],
        format!(
            "Operation cannot be fulfilled on Pod \"api-1\": the UID in the precondition (0000) does not match the UID in record ({uid}). The object might have been deleted and then recreated"
        )
    );
    budget(
        &server,
        "api-b",
        "api",
        json!({"minAvailable": 0}),
        observed(1, 1, 0),
    )
    .await;
    let two = evict(&server, "api-1", json!({"metadata": {"name": "api-1"}})).await;
    assert_eq!(two.code, 500);
    assert_eq!(
        two.body["message"],
        "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support."
    );
    assert!(
        two.body.get("reason").is_none(),
        "upstream sends no reason: {}",
        two.body
    );
    let right_uid = evict(
        &server,
        "api-1",
        json!({"metadata": {"name": "api-1"}, "deleteOptions": {"preconditions": {"uid": uid}}}),
    )
    .await;
    assert_eq!(right_uid.code, 500, "the budgets are checked after the UID");
    server.shutdown().await;
}

#[tokio::test]
async fn dry_run_changes_nothing() {
    let server = server().await;
    running_pod(&server, "web-1", "web", true).await;
    budget(
        &server,
        "web-pdb",
        "web",
        json!({"minAvailable": 0}),
        observed(1, 1, 0),
    )
    .await;
    let path = "/api/v1/namespaces/default/pods/web-1/eviction?dryRun=All";
    let answer = evict_path(&server, path, json!({"metadata": {"name": "web-1"}})).await;
    assert_eq!(answer.code, 201);
    let in_body = evict(
        &server,
        "web-1",
        json!({"metadata": {"name": "web-1"}, "deleteOptions": {"dryRun": ["All"]}}),
    )
    .await;
    assert_eq!(in_body.code, 201);
    assert_eq!(terminating(&server, "web-1").await, None);
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(server.client(), "default");
    let status = pdbs.get("web-pdb").await.unwrap().status.unwrap();
    assert_eq!(status.disruptions_allowed, 1);
    assert!(status.disrupted_pods.is_none_or(|d| d.is_empty()));
    server.shutdown().await;
}

#[tokio::test]
async fn unhealthy_pods_follow_the_unhealthy_pod_eviction_policy() {
    let server = server().await;
    // IfHealthyBudget (the default): a not-Ready pod may go only while the budget is met.
    running_pod(&server, "a-1", "a", false).await;
    budget(
        &server,
        "a-pdb",
        "a",
        json!({"minAvailable": 2}),
        observed(0, 1, 2),
    )
    .await;
    let refused = evict(&server, "a-1", json!({})).await;
    assert_eq!(
        (refused.code, refused.body["message"].as_str()),
        (429, Some(VIOLATION))
    );
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(server.client(), "default");
    pdbs.patch_status(
        "a-pdb",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": observed(0, 2, 2)})),
    )
    .await
    .unwrap();
    let met = evict(&server, "a-1", json!({})).await;
    assert_eq!(met.code, 201, "the budget is met, the unhealthy pod may go");
    let status = pdbs.get("a-pdb").await.unwrap().status.unwrap();
    assert!(
        status.disrupted_pods.is_none_or(|d| d.is_empty()),
        "an unhealthy pod does not spend the budget"
    );

    // AlwaysAllow: a not-Ready pod goes even when the budget is not met.
    running_pod(&server, "b-1", "b", false).await;
    budget(
        &server,
        "b-pdb",
        "b",
        json!({"minAvailable": 2, "unhealthyPodEvictionPolicy": "AlwaysAllow"}),
        observed(0, 0, 2),
    )
    .await;
    assert_eq!(evict(&server, "b-1", json!({})).await.code, 201);
    // A Ready pod under AlwaysAllow still needs the budget.
    running_pod(&server, "b-2", "b", true).await;
    assert_eq!(evict(&server, "b-2", json!({})).await.code, 429);

    // A Pending pod bypasses the budget altogether.
    let pods: Api<Pod> = Api::namespaced(server.client(), "default");
    pods.create(
        &PostParams::default(),
        &pod("b-3", Some("n1"), json!({"app": "b"})),
    )
    .await
    .unwrap();
    assert_eq!(evict(&server, "b-3", json!({})).await.code, 201);
    server.shutdown().await;
}

#[tokio::test]
async fn a_malformed_eviction_body_is_a_bad_request() {
    let server = server().await;
    running_pod(&server, "p", "p", true).await;
    let answer = send(
        &server,
        "POST",
        "/api/v1/namespaces/default/pods/p/eviction",
        "application/json",
        b"{\"metadata\": ",
    )
    .await;
    assert_eq!(answer.code, 400);
    assert_eq!(answer.body["kind"], "Status");
    assert_eq!(answer.body["reason"], "BadRequest");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_evictions_race_for_the_last_disruption_and_the_loser_gets_429() {
    let server = server().await;
    // Several rounds: the requests must overlap for the race to happen at all. The disruption
    // controller rewriting the budget's status meanwhile is what makes a write conflict.
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(server.client(), "default");
    for round in 0..30 {
        let app = format!("race{round}");
        let (a, b) = (format!("{app}-a"), format!("{app}-b"));
        running_pod(&server, &a, &app, true).await;
        running_pod(&server, &b, &app, true).await;
        budget(
            &server,
            &app,
            &app,
            json!({"maxUnavailable": 1}),
            observed(1, 2, 1),
        )
        .await;
        let controller = async {
            for _ in 0..3 {
                let _ = pdbs
                    .patch_status(
                        &app,
                        &PatchParams::default(),
                        &Patch::Merge(json!({"status": {"expectedPods": 2}})),
                    )
                    .await;
            }
        };
        let (first, second, ()) = tokio::join!(
            evict(&server, &a, json!({"metadata": {"name": a}})),
            evict(&server, &b, json!({"metadata": {"name": b}})),
            controller,
        );
        let mut codes = [first.code, second.code];
        codes.sort();
        assert_eq!(
            codes,
            [201, 429],
            "round {round}: one eviction wins, the other is refused by the budget (never a 409): {first:?} {second:?}"
        );
    }
    server.shutdown().await;
}
