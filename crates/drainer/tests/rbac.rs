//! The Helm chart grants exactly what the drainer uses. The drainer runs its production path
//! (watched node index, Lease leader election, SQS loop, a terminate hook with a surge) against
//! the sandbox with a marked client; the sandbox records every request it made, and each one is
//! turned into the (apiGroup, resource, verb) an RBAC rule must allow.

mod support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use quiesce_aws::hooks::AutoScaling;
use quiesce_drainer::lease::LeaseLock;
use quiesce_drainer::metrics::Metrics;
use quiesce_drainer::nodes::NodeIndex;
use quiesce_drainer::{Handler, WorkerSettings, service};
use quiesce_sandbox::api::{AUDIT_HEADER, Audited};
use quiesce_testbed::helm;
use serde_json::json;
use support::bed;

/// (apiGroup, resource, verb, name). A request's name is the object's it names in its URL; a
/// grant's is one of its rule's `resourceNames`, or None when the rule allows any name.
type Permission = (String, String, String, Option<String>);

/// Whether `grant` allows `used`: RBAC matches a rule with resourceNames only on those names.
fn covers(grant: &Permission, used: &Permission) -> bool {
    (&grant.0, &grant.1, &grant.2) == (&used.0, &used.1, &used.2)
        && (grant.3.is_none() || grant.3 == used.3)
}

/// The requests in `used` that no grant in `chart` allows.
fn not_granted<'a>(
    used: &'a BTreeSet<Permission>,
    chart: &BTreeSet<Permission>,
) -> Vec<&'a Permission> {
    used.iter()
        .filter(|u| !chart.iter().any(|g| covers(g, u)))
        .collect()
}

/// A 1-replica Deployment marked for surge: its pod is replaced before it is evicted, which
/// is the drain engine's path that reads and patches Deployments; and a StatefulSet with pods
/// on every node (the scheduler spreads them), whose replica count the gate reads. The
/// Deployment's pod mounts a claim bound to a PersistentVolume, attached to its node by the
/// VolumeAttachment the test creates, so the drain waits for a detach.
const SURGED: &str = r#"
objects:
  - apiVersion: v1
    kind: PersistentVolume
    metadata: {name: api-data}
    spec:
      capacity: {storage: 1Gi}
      accessModes: [ReadWriteOnce]
      csi: {driver: ebs.csi.aws.com, volumeHandle: vol-0123456789abcdef0}
  - apiVersion: v1
    kind: PersistentVolumeClaim
    metadata: {name: api-data, namespace: default}
    spec:
      accessModes: [ReadWriteOnce]
      resources: {requests: {storage: 1Gi}}
      volumeName: api-data
  - apiVersion: apps/v1
    kind: StatefulSet
    metadata: {name: db, namespace: default}
    spec:
      replicas: 6
      podManagementPolicy: Parallel
      serviceName: db
      selector: {matchLabels: {app: db}}
      template:
        metadata: {labels: {app: db}, annotations: {sandbox.quiesce.io/startup-delay: 1s}}
        spec:
          terminationGracePeriodSeconds: 1
          containers: [{name: db, image: db:1, resources: {requests: {cpu: 10m, memory: 16Mi}}}]
  - apiVersion: apps/v1
    kind: Deployment
    metadata: {name: api, namespace: default, annotations: {quiesce.io/drain-strategy: surge}}
    spec:
      replicas: 1
      selector: {matchLabels: {app: api}}
      template:
        metadata: {labels: {app: api}, annotations: {sandbox.quiesce.io/startup-delay: 1s}}
        spec:
          terminationGracePeriodSeconds: 2
          volumes: [{name: data, persistentVolumeClaim: {claimName: api-data}}]
          containers: [{name: api, image: api:1, resources: {requests: {cpu: 10m, memory: 16Mi}}}]
"#;

/// What an RBAC rule must allow for one request (None: a discovery path every
/// authenticated client may read).
fn permission(request: &Audited) -> Option<Permission> {
    let parts: Vec<&str> = request.path.trim_matches('/').split('/').collect();
    let (group, rest) = match parts.as_slice() {
        ["api", "v1", rest @ ..] => ("", rest),
        ["apis", group, _version, rest @ ..] => (*group, rest),
        _ => return None,
    };
    let rest = match rest {
        ["namespaces", _ns, more @ ..] if !more.is_empty() => more,
        other => other,
    };
    let (resource, name, sub) = match rest {
        [] => return None,
        [resource] => (*resource, None, None),
        [resource, name] => (*resource, Some(*name), None),
        [resource, name, sub, ..] => (*resource, Some(*name), Some(*sub)),
    };
    let watch = request
        .query
        .split('&')
        .any(|kv| kv == "watch=true" || kv == "watch=1");
    let verb = match (request.method.as_str(), name) {
        ("GET", _) if watch => "watch",
        ("GET", Some(_)) => "get",
        ("GET", None) => "list",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", Some(_)) => "delete",
        ("DELETE", None) => "deletecollection",
        (other, _) => panic!("unexpected method {other} in {request:?}"),
    };
    let resource = match sub {
        Some(sub) => format!("{resource}/{sub}"),
        None => resource.to_string(),
    };
    Some((
        group.to_string(),
        resource,
        verb.to_string(),
        name.map(str::to_string),
    ))
}

/// What the chart's ClusterRole and Roles allow, rendered by Helm's own engine with `values`.
fn granted(values: &serde_json::Value) -> BTreeSet<Permission> {
    let chart = helm::chart_dir();
    let objects = helm::template(&chart, "quiesce", "kube-system", values)
        .and_then(|r| r.objects())
        .unwrap_or_else(|e| panic!("rendering {}: {e}", chart.display()));
    let mut out = BTreeSet::new();
    let roles = objects
        .iter()
        .filter(|o| o["kind"] == "ClusterRole" || o["kind"] == "Role");
    for rule in roles.flat_map(|r| r["rules"].as_array().expect("rules is a list")) {
        let names: Vec<Option<String>> = match rule["resourceNames"].as_array() {
            Some(names) => names
                .iter()
                .map(|n| Some(n.as_str().unwrap().into()))
                .collect(),
            None => vec![None],
        };
        for group in rule["apiGroups"].as_array().into_iter().flatten() {
            for resource in rule["resources"].as_array().into_iter().flatten() {
                for verb in rule["verbs"].as_array().into_iter().flatten() {
                    for name in &names {
                        out.insert((
                            group.as_str().unwrap().to_string(),
                            resource.as_str().unwrap().to_string(),
                            verb.as_str().unwrap().to_string(),
                            name.clone(),
                        ));
                    }
                }
            }
        }
    }
    out
}

/// Granted but not reached by this test's run, each for a reason a reader can check.
fn exercised_elsewhere() -> BTreeSet<Permission> {
    // The replacement gate watches Deployments, ReplicaSets and StatefulSets in every gated
    // namespace, so each grant is exercised by any gated drain.
    BTreeSet::new()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chart_grants_exactly_the_calls_the_drainer_makes() {
    let bed = bed(4, 0, 30, SURGED).await;
    let mut config = kube::Config::from_custom_kubeconfig(
        bed.sandbox_kubeconfig(),
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .unwrap();
    config
        .headers
        .push((AUDIT_HEADER.parse().unwrap(), "drainer".parse().unwrap()));
    let client =
        quiesce_drainer::client::build(config, Default::default(), Default::default()).unwrap();
    let (nodes, keep_index) = NodeIndex::watched(client.clone());
    let index = tokio::spawn(keep_index);
    let handler = Arc::new(Handler::new(
        client.clone(),
        nodes,
        AutoScaling::new(&bed.aws),
        bed.settings(),
        Arc::new(Metrics::default()),
    ));
    let lock = LeaseLock::new(
        client,
        "kube-system",
        "quiesce-drainer",
        "drainer-0",
        quiesce_drainer::lease::LeaseTiming::for_duration(Duration::from_secs(3)).unwrap(),
    );
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let settings = WorkerSettings {
        wait: Duration::from_secs(1),
        ..WorkerSettings::default()
    };
    let lead = tokio::spawn(service::lead(lock, bed.queue(), handler, settings, stopped));

    // The node that runs the surged Deployment's pod, so the surge path runs.
    let pods: kube::Api<k8s_openapi::api::core::v1::Pod> = kube::Api::all(bed.sandbox.client());
    let api_node = || async {
        pods.list(&kube::api::ListParams::default().labels("app=api"))
            .await
            .unwrap()
            .items
            .iter()
            .find_map(|p| p.spec.as_ref()?.node_name.clone())
    };
    bed.wait_for("the api pod scheduled", Duration::from_secs(20), || async {
        api_node().await.is_some()
    })
    .await;
    bed.wait_for("every db pod Ready", Duration::from_secs(30), || async {
        support::ready_pods(&bed.sandbox, "app=db").await == 6
    })
    .await;
    // The api pod's volume is attached to its node until the pod is gone, and 5 s longer (the
    // sandbox's detach, outlasting the wait for the replacement), so the drain finds it still
    // attached and watches it go.
    let attachment: k8s_openapi::api::storage::v1::VolumeAttachment =
        serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": "csi-api-data",
                "annotations": {(quiesce_sandbox::sim::attachdetach::DETACH_DELAY): "5s"},
            },
            "spec": {
                "attacher": "ebs.csi.aws.com",
                "nodeName": api_node().await.unwrap(),
                "source": {"persistentVolumeName": "api-data"},
            },
        }))
        .unwrap();
    kube::Api::all(bed.sandbox.client())
        .create(&kube::api::PostParams::default(), &attachment)
        .await
        .unwrap();
    // Three of the four nodes go, the api pod's among them: between them they run every
    // kind of pod (the scheduler spreads the six db pods and three web pods), so every path
    // of the drain runs at least once. The fourth node takes what they had.
    let api = api_node().await.unwrap();
    let db_nodes: Vec<String> = pods
        .list(&kube::api::ListParams::default().labels("app=db"))
        .await
        .unwrap()
        .items
        .iter()
        .filter_map(|p| p.spec.as_ref()?.node_name.clone())
        .collect();
    // The survivor runs neither the api pod nor (least-loaded scheduling may pack them) most
    // db pods.
    let survivor = (1..=4)
        .map(|i| format!("node-{i}"))
        .filter(|n| *n != api)
        .min_by_key(|n| db_nodes.iter().filter(|d| *d == n).count())
        .unwrap();
    for (i, victim) in bed.instances.clone().into_iter().enumerate() {
        if format!("node-{}", i + 1) == survivor {
            continue;
        }
        bed.terminate(&victim).await;
        bed.wait_result(&victim, "CONTINUE", Duration::from_secs(60))
            .await;
    }
    // The holder renews the lease (an update) every second.
    bed.wait_for("a lease renewal", Duration::from_secs(10), || async {
        bed.sandbox
            .audited()
            .iter()
            .any(|r| r.method == "PUT" && r.path.contains("/leases/"))
    })
    .await;
    stop.send(true).unwrap();
    lead.await.unwrap();
    index.abort();

    let used: BTreeSet<Permission> = bed
        .sandbox
        .audited()
        .iter()
        .filter(|r| r.caller == "drainer")
        .filter_map(permission)
        .collect();
    let chart = granted(&serde_json::Value::Null);
    let missing = not_granted(&used, &chart);
    assert!(missing.is_empty(), "the chart does not grant {missing:?}");
    let unused: Vec<_> = chart
        .iter()
        .filter(|g| !used.iter().any(|u| covers(g, u)))
        .filter(|p| !exercised_elsewhere().contains(*p))
        .collect();
    assert!(
        unused.is_empty(),
        "the chart grants {unused:?}, which the drainer never uses"
    );
    // Without surge (drainer.surge never, i.e. --no-surge: the planner surges nothing, see
    // quiesce-core's plan tests) the chart grants exactly the same minus patching Deployments,
    // the one call only a surge makes; with surge for all it grants the default's.
    let surge_patch = (
        "apps".to_string(),
        "deployments".to_string(),
        "patch".to_string(),
        None,
    );
    assert!(
        used.iter().any(|u| covers(&surge_patch, u)),
        "the run surged: {used:?}"
    );
    for never in [json!("never"), json!(false)] {
        let without = granted(&json!({"drainer": {"surge": never}}));
        let mut expected = chart.clone();
        expected.remove(&surge_patch);
        assert_eq!(without, expected, "drainer.surge={never}");
    }
    for all in [json!("all"), json!(true)] {
        assert_eq!(
            granted(&json!({"drainer": {"surge": all}})),
            chart,
            "drainer.surge={all}"
        );
    }
    for needed in [
        ("", "pods/eviction", "create"),
        ("apps", "statefulsets", "watch"),
        ("coordination.k8s.io", "leases", "update"),
        ("", "nodes", "watch"),
        ("storage.k8s.io", "volumeattachments", "watch"),
    ] {
        assert!(
            used.iter()
                .any(|u| (u.0.as_str(), u.1.as_str(), u.2.as_str()) == needed),
            "the run exercised {needed:?}: {used:?}"
        );
    }
    // The Lease is read and renewed by name: a chart for another Lease name does not let this
    // drainer (whose --lease-name is the default) renew it.
    let elsewhere = granted(&serde_json::json!({"drainer": {"leaseName": "elsewhere"}}));
    let lease_verbs: BTreeSet<&str> = not_granted(&used, &elsewhere)
        .iter()
        .filter(|p| p.1 == "leases")
        .map(|p| p.2.as_str())
        .collect();
    assert_eq!(
        lease_verbs,
        BTreeSet::from(["get", "update"]),
        "get and update are limited to the Lease named by drainer.leaseName"
    );
}
