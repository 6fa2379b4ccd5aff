//! Every error is a `Status` with the real code, reason and message; malformed requests never
//! panic or drop the connection; injected faults look to clients like a struggling server.

mod api_support;

use std::time::{Duration, Instant};

use api_support::{Answer, api_error, pod, send, send_json, server};
use k8s_openapi::api::core::v1::{Pod, ReplicationController};
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use quiesce_sandbox::api::FaultKind;
use quiesce_sandbox::api::resources::lookup;
use serde_json::{Value, json};

const PODS: &str = "/api/v1/namespaces/default/pods";

/// method, path, content type, body → code, reason.
type Case = (
    &'static str,
    &'static str,
    &'static str,
    &'static [u8],
    u16,
    &'static str,
);

#[tokio::test]
async fn malformed_requests_get_status_errors_on_a_live_connection() {
    let server = server().await;
    let cases: [Case; 8] = [
        (
            "POST",
            PODS,
            "application/json",
            b"{\"metadata\": ",
            400,
            "BadRequest",
        ),
        (
            "POST",
            PODS,
            "application/json",
            b"[1, 2]",
            400,
            "BadRequest",
        ),
        (
            "GET",
            "/api/v1/namespaces/default/widgets",
            "application/json",
            b"",
            404,
            "NotFound",
        ),
        (
            "GET",
            "/apis/nope.example/v1",
            "application/json",
            b"",
            404,
            "NotFound",
        ),
        (
            "GET",
            "/api/v1/pods?labelSelector=a%20in%20(b",
            "application/json",
            b"",
            400,
            "BadRequest",
        ),
        (
            "GET",
            "/api/v1/pods?fieldSelector=spec.bogus%3Dx",
            "application/json",
            b"",
            400,
            "BadRequest",
        ),
        (
            "PUT",
            PODS,
            "application/json",
            b"{}",
            405,
            "MethodNotAllowed",
        ),
        (
            "PATCH",
            "/api/v1/namespaces/default/pods/x",
            "text/plain",
            b"{}",
            415,
            "UnsupportedMediaType",
        ),
    ];
    for (method, path, content_type, body, code, reason) in cases {
        let answer = send(&server, method, path, content_type, body).await;
        assert_eq!(
            (
                answer.code,
                answer.body["kind"].as_str(),
                answer.body["reason"].as_str()
            ),
            (code, Some("Status"), Some(reason)),
            "{method} {path}: {}",
            answer.body
        );
        assert_eq!(answer.body["status"], "Failure");
        assert_eq!(answer.body["code"], code);
    }
    let truncated = send(
        &server,
        "POST",
        PODS,
        "application/json",
        b"{\"metadata\": ",
    )
    .await;
    assert_eq!(
        truncated.body["message"],
        r#"the object provided is unrecognized (must be of type Pod): couldn't get version/kind; json parse error: unexpected end of JSON input ({"metadata": )"#
    );
    // The server still answers after all that.
    let pods: Api<Pod> = Api::namespaced(server.client(), "default");
    assert!(
        pods.list(&Default::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    server.shutdown().await;
}

#[tokio::test]
async fn create_validates_names_and_namespaces() {
    let server = server().await;
    let nameless = send_json(&server, "POST", PODS, json!({"metadata": {}})).await;
    assert_eq!(
        (nameless.code, nameless.body["reason"].as_str()),
        (422, Some("Invalid"))
    );
    assert_eq!(
        nameless.body["details"]["causes"][0]["field"], "metadata.name",
        "{}",
        nameless.body
    );
    let elsewhere: Api<Pod> = Api::namespaced(server.client(), "nowhere");
    let (code, _, message) = api_error(
        elsewhere
            .create(&PostParams::default(), &pod("a", None, json!({})))
            .await
            .unwrap_err(),
    );
    assert_eq!(
        (code, message.as_str()),
        (404, r#"namespaces "nowhere" not found"#)
    );

    let pods: Api<Pod> = Api::namespaced(server.client(), "default");
    let mut generated = pod("", None, json!({}));
    generated.metadata.name = None;
    generated.metadata.generate_name = Some("web-".into());
    let made = pods
        .create(&PostParams::default(), &generated)
        .await
        .unwrap();
    let name = made.metadata.name.unwrap();
    assert!(name.starts_with("web-") && name.len() == 9, "{name}");

    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    pods.create(&dry, &pod("dry", None, json!({})))
        .await
        .unwrap();
    assert_eq!(api_error(pods.get("dry").await.unwrap_err()).0, 404);

    let unserved: Api<ReplicationController> = Api::namespaced(server.client(), "default");
    assert_eq!(
        api_error(unserved.list(&Default::default()).await.unwrap_err()).0,
        404
    );
    server.shutdown().await;
}

#[tokio::test]
async fn finalizers_hold_a_deleted_object_until_emptied() {
    let server = server().await;
    let pods: Api<Pod> = Api::namespaced(server.client(), "default");
    let mut held = pod("held", None, json!({}));
    held.metadata.finalizers = Some(vec!["example.com/hold".into()]);
    pods.create(&PostParams::default(), &held).await.unwrap();
    pods.delete("held", &DeleteParams::default()).await.unwrap();
    let deleting = pods.get("held").await.unwrap();
    assert!(deleting.metadata.deletion_timestamp.is_some());
    let stale_rv = DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            uid: None,
            resource_version: Some("1".into()),
        }),
        ..Default::default()
    };
    assert_eq!(
        api_error(pods.delete("held", &stale_rv).await.unwrap_err()).0,
        409
    );
    pods.patch(
        "held",
        &Default::default(),
        &kube::api::Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    assert_eq!(api_error(pods.get("held").await.unwrap_err()).0, 404);
    server.shutdown().await;
}

#[tokio::test]
async fn injected_faults_hit_the_matching_requests_only() {
    let server = server().await;
    let faults = server.faults();
    let pods: Api<Pod> = Api::namespaced(server.client(), "default");
    faults.inject(Some("POST"), Some("pods"), 2, FaultKind::InternalError);
    for _ in 0..2 {
        let (code, reason, _) = api_error(
            pods.create(&PostParams::default(), &pod("a", None, json!({})))
                .await
                .unwrap_err(),
        );
        assert_eq!((code, reason.as_str()), (500, "InternalError"));
    }
    assert!(
        pods.list(&Default::default())
            .await
            .unwrap()
            .items
            .is_empty(),
        "a GET is not hit"
    );
    pods.create(&PostParams::default(), &pod("a", None, json!({})))
        .await
        .expect("the third create goes through");

    faults.inject(
        None,
        Some("pods"),
        1,
        FaultKind::Timeout(Duration::from_millis(200)),
    );
    let started = Instant::now();
    let (code, reason, _) = api_error(pods.get("a").await.unwrap_err());
    assert_eq!((code, reason.as_str()), (504, "Timeout"));
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "the answer was held back"
    );

    faults.inject(
        Some("get"),
        None,
        1,
        FaultKind::Delay(Duration::from_millis(200)),
    );
    let started = Instant::now();
    assert_eq!(
        pods.get("a").await.unwrap().metadata.name.as_deref(),
        Some("a")
    );
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "the answer was held back"
    );

    faults.inject(None, None, 5, FaultKind::InternalError);
    faults.clear();
    pods.get("a").await.expect("cleared faults do not fire");
    server.shutdown().await;
}

/// A fault aimed at one caller hits only that caller's requests, and the audit log says which
/// request it hit, what each was answered and where it fell in the watch history.
#[tokio::test]
async fn a_fault_for_one_caller_spares_the_others_and_the_audit_log_names_its_hit() {
    use quiesce_sandbox::api::AUDIT_HEADER;
    let server = server().await;
    let client_as = |caller: &str| {
        let mut config = kube::Config::new(server.url().parse().unwrap());
        config
            .headers
            .push((AUDIT_HEADER.parse().unwrap(), caller.parse().unwrap()));
        kube::Client::try_from(config).unwrap()
    };
    let target: Api<Pod> = Api::namespaced(client_as("drainer-a#1"), "default");
    let other: Api<Pod> = Api::namespaced(client_as("observer"), "default");
    server.faults().inject_for_caller(
        "drainer-a",
        Some("GET"),
        Some("pods"),
        1,
        FaultKind::InternalError,
    );
    other
        .list(&Default::default())
        .await
        .expect("another caller is spared");
    let (code, _, _) = api_error(target.list(&Default::default()).await.unwrap_err());
    assert_eq!(code, 500);
    target
        .list(&Default::default())
        .await
        .expect("one use only");
    let audited = server.audited();
    let faults: Vec<_> = audited
        .iter()
        .map(|a| (a.caller.as_str(), a.status, a.fault))
        .collect();
    assert_eq!(
        faults,
        [
            ("observer", Some(200), None),
            ("drainer-a#1", Some(500), Some(FaultKind::InternalError)),
            ("drainer-a#1", Some(200), None),
        ]
    );
    assert!(
        audited
            .iter()
            .all(|a| a.revision == server.store().resource_version())
    );
}

async fn merge_patch(
    server: &quiesce_sandbox::api::ApiServer,
    query: &str,
    patch: Value,
) -> Answer {
    let path = format!("{PODS}/web{query}");
    let body = patch.to_string();
    send(
        server,
        "PATCH",
        &path,
        "application/merge-patch+json",
        body.as_bytes(),
    )
    .await
}

/// A merge patch is validated by its own fields (the stored object has no unknown field to
/// find), with the answers a check of the whole patched object gives: Strict refuses an
/// unknown field nested in an object the pod already has, or in a list item the patch
/// brings, even as null (the list is stored as sent); Warn and Ignore store the patch without
/// it; a null for an unknown field deletes nothing and is no error. An in-process writer
/// cannot store an unknown field either, so no later patch meets one.
#[tokio::test]
async fn merge_patches_are_checked_as_the_patched_object_would_be() {
    let server = server().await;
    let pods: Api<Pod> = Api::namespaced(server.client(), "default");
    pods.create(
        &PostParams::default(),
        &pod("web", None, json!({"app": "web"})),
    )
    .await
    .unwrap();
    let typos = json!({"metadata": {"labels": {"x": "1"}, "lables": {"y": "2"}},
        "spec": {"dnsPolicyy": "None", "nodeSelector": {"disk": "ssd"}}});
    let strict = merge_patch(&server, "?fieldValidation=Strict", typos.clone()).await;
    assert_eq!(strict.code, 400, "{:?}", strict.body);
    assert_eq!(
        strict.body["message"],
        r#"Pod in version "v1" cannot be handled as a Pod: strict decoding error: unknown field "metadata.lables", unknown field "spec.dnsPolicyy""#
    );
    let web = pods.get("web").await.unwrap();
    assert!(
        !web.metadata.labels.unwrap().contains_key("x"),
        "nothing written"
    );

    let item = |policy: Value| {
        json!({"spec": {"containers": [
            {"name": "app", "image": "app:2", "imagePullPolicyy": policy}]}})
    };
    for policy in [json!("Always"), Value::Null] {
        let strict = merge_patch(&server, "?fieldValidation=Strict", item(policy)).await;
        assert_eq!(strict.code, 400, "{:?}", strict.body);
        assert!(
            strict.body["message"]
                .as_str()
                .unwrap()
                .ends_with(r#"unknown field "spec.containers[0].imagePullPolicyy""#),
            "{}",
            strict.body
        );
    }
    let deletion = merge_patch(
        &server,
        "?fieldValidation=Strict",
        json!({"metadata": {"lables": null}, "spec": {"dnsPolicyy": null}}),
    )
    .await;
    assert_eq!((deletion.code, deletion.warnings.len()), (200, 0));

    let warned = merge_patch(&server, "", typos.clone()).await;
    assert_eq!(warned.code, 200, "{:?}", warned.body);
    assert_eq!(
        warned.warnings,
        [
            r#"299 - "unknown field \"metadata.lables\"""#,
            r#"299 - "unknown field \"spec.dnsPolicyy\"""#
        ]
    );
    assert_eq!(
        warned.body["metadata"]["labels"],
        json!({"app": "web", "x": "1"})
    );
    assert!(warned.body["metadata"].get("lables").is_none());
    assert!(warned.body["spec"].get("dnsPolicyy").is_none());
    assert_eq!(warned.body["spec"]["nodeSelector"], json!({"disk": "ssd"}));
    let ignored = merge_patch(&server, "?fieldValidation=Ignore", item(json!("Always"))).await;
    assert_eq!((ignored.code, ignored.warnings.len()), (200, 0));
    assert_eq!(
        ignored.body["spec"]["containers"][0],
        json!({"name": "app", "image": "app:2"})
    );

    // The store drops what an in-process writer brings that the schema does not define.
    let store = server.store();
    let pods_resource = lookup("", "v1", "pods").unwrap();
    let created = store
        .create(
            pods_resource,
            "default",
            json!({"metadata": {"name": "direct", "lables": {}},
                "spec": {"containers": [{"name": "app", "image": "app:1", "imagee": "x"}]}}),
            false,
        )
        .unwrap();
    assert!(created["metadata"].get("lables").is_none(), "{created}");
    assert_eq!(created["spec"]["containers"][0].get("imagee"), None);
    let modified = store
        .modify(
            pods_resource,
            "default",
            "direct",
            quiesce_sandbox::api::store::Part::Main,
            |p| {
                let mut p = p.clone();
                p["spec"]["nodeNmae"] = json!("node-1");
                p["spec"]["nodeSelector"] = json!({"disk": "ssd"});
                Ok(p)
            },
        )
        .unwrap();
    assert!(modified["spec"].get("nodeNmae").is_none(), "{modified}");
    assert_eq!(modified["spec"]["nodeSelector"], json!({"disk": "ssd"}));
    server.shutdown().await;
}
