//! The real kubectl (v1.32) against the bare API server, no simulated cluster: discovery and
//! short names, `create -f`, the three patch types, `scale`, server-side Tables, `get -w` streaming,
//! graceful `delete`, kubectl's rendering of our `Status` errors, typed creates in protobuf,
//! `auth can-i`, `get all` and `explain`.

mod api_support;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use api_support::kubectl::Kubectl;
use api_support::{pod, server};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use quiesce_sandbox::api::ApiServer;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};

/// The row of `table` whose first column is `name`, split into columns.
fn row<'a>(table: &'a str, name: &str) -> Vec<&'a str> {
    table
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .unwrap_or_else(|| panic!("no row {name} in:\n{table}"))
        .split_whitespace()
        .collect()
}

type Lines = tokio::io::Lines<BufReader<tokio::process::ChildStdout>>;

/// The next line a streaming kubectl prints, within a deadline.
async fn next_line(lines: &mut Lines) -> String {
    tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .expect("kubectl printed a line within 20s")
        .unwrap()
        .expect("kubectl is still streaming")
}

async fn ready_node(server: &ApiServer, name: &str) {
    let nodes: Api<Node> = Api::all(server.client());
    let node = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "status": {"conditions": [{"type": "Ready", "status": "True"}],
                   "addresses": [{"type": "InternalIP", "address": "10.0.0.7"}],
                   "nodeInfo": {"kubeletVersion": "v1.33.0", "osImage": "Bottlerocket OS 1.20",
                                "kernelVersion": "6.1.0", "containerRuntimeVersion": "containerd://1.7.0",
                                "architecture": "amd64", "operatingSystem": "linux",
                                "bootID": "", "machineID": "", "systemUUID": "", "kubeProxyVersion": ""}}
    }))
    .unwrap();
    nodes.create(&PostParams::default(), &node).await.unwrap();
    nodes
        .patch_status(
            name,
            &Default::default(),
            &kube::api::Patch::Merge(json!({"status": node.status})),
        )
        .await
        .unwrap();
}

fn write_manifest(dir: &Path) -> PathBuf {
    let path = dir.join("app.yaml");
    std::fs::write(
        &path,
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: app
        image: registry.invalid/web:1
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: web
spec:
  minAvailable: 1
  selector:
    matchLabels: {app: web}
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {app: web}
  ports:
  - port: 80
"#,
    )
    .unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_create_and_patch() {
    let server = server().await;
    let k = Kubectl::new(&server);
    let resources = k.ok(&["api-resources", "--no-headers"]).await;
    for (plural, short) in [
        ("pods", "po"),
        ("nodes", "no"),
        ("deployments", "deploy"),
        ("poddisruptionbudgets", "pdb"),
        ("daemonsets", "ds"),
    ] {
        assert_eq!(row(&resources, plural)[1], short, "{resources}");
    }

    let manifest = write_manifest(k.dir());
    let created = k.ok(&["create", "-f", manifest.to_str().unwrap()]).await;
    for line in [
        "deployment.apps/web created",
        "poddisruptionbudget.policy/web created",
        "service/web created",
    ] {
        assert!(created.contains(line), "{created}");
    }
    let again = k.run(&["create", "-f", manifest.to_str().unwrap()]).await;
    assert!(!again.status.success());
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(
        stderr.contains(r#"Error from server (AlreadyExists): error when creating"#)
            && stderr.contains(r#"deployments.apps "web" already exists"#),
        "{stderr}"
    );

    k.ok(&["rollout", "restart", "deployment/web"]).await;
    let annotations = k
        .ok(&[
            "get",
            "deploy",
            "web",
            "-o",
            "jsonpath={.metadata.generation} {.spec.template.metadata.annotations}",
        ])
        .await;
    assert!(
        annotations.starts_with("2 ") && annotations.contains("kubectl.kubernetes.io/restartedAt"),
        "{annotations}"
    );
    k.ok(&[
        "patch",
        "deploy",
        "web",
        "--type=json",
        "-p",
        r#"[{"op": "replace", "path": "/spec/replicas", "value": 3}]"#,
    ])
    .await;
    let scaled = k.ok(&["scale", "deploy/web", "--replicas=4"]).await;
    assert_eq!(scaled.trim(), "deployment.apps/web scaled");
    k.ok(&["label", "pdb", "web", "team=edge"]).await;
    let got = k
        .ok(&[
            "get",
            "deploy,pdb",
            "-o",
            "jsonpath={.items[0].spec.replicas} {.items[1].metadata.labels.team}",
        ])
        .await;
    assert_eq!(got, "4 edge");

    let missing = k.run(&["get", "pod", "nope"]).await;
    assert_eq!(
        String::from_utf8_lossy(&missing.stderr).trim(),
        r#"Error from server (NotFound): pods "nope" not found"#
    );
    let bad = k.run(&["get", "pods", "-l", "a in (b"]).await;
    assert!(!bad.status.success());
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_cordon_watch_and_graceful_delete() {
    let server = server().await;
    let k = Kubectl::new(&server);
    ready_node(&server, "ip-10-0-0-7").await;
    let pods: Api<Pod> = Api::namespaced(server.client(), "default");
    pods.create(
        &PostParams::default(),
        &pod("web-1", Some("ip-10-0-0-7"), json!({"app": "web"})),
    )
    .await
    .unwrap();

    let nodes = k.ok(&["get", "nodes", "-o", "wide"]).await;
    let header: Vec<&str> = nodes.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        &header[..6],
        ["NAME", "STATUS", "ROLES", "AGE", "VERSION", "INTERNAL-IP"]
    );
    assert_eq!(row(&nodes, "ip-10-0-0-7")[1], "Ready");
    assert_eq!(row(&nodes, "ip-10-0-0-7")[5], "10.0.0.7");
    k.ok(&["cordon", "ip-10-0-0-7"]).await;
    let nodes = k.ok(&["get", "nodes"]).await;
    assert_eq!(row(&nodes, "ip-10-0-0-7")[1], "Ready,SchedulingDisabled");
    k.ok(&["uncordon", "ip-10-0-0-7"]).await;
    let nodes = k.ok(&["get", "no"]).await;
    assert_eq!(row(&nodes, "ip-10-0-0-7")[1], "Ready");

    let wide = k.ok(&["get", "pods", "-o", "wide"]).await;
    assert!(
        wide.lines().next().unwrap().contains("NOMINATED NODE"),
        "{wide}"
    );
    let web = row(&wide, "web-1");
    assert_eq!((web[1], web[2]), ("0/1", "Pending"));
    assert!(web.contains(&"ip-10-0-0-7"), "{wide}");

    // `get -w` streams: the pod we then delete shows up as Terminating.
    let mut watch = k
        .command(&["get", "pods", "-w"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
    let first = next_line(&mut lines).await;
    assert!(first.starts_with("NAME"), "{first}");
    let listed = next_line(&mut lines).await;
    assert!(listed.starts_with("web-1"), "{listed}");
    k.ok(&["delete", "pod", "web-1", "--wait=false"]).await;
    let event = next_line(&mut lines).await;
    assert_eq!(
        event.split_whitespace().take(3).collect::<Vec<_>>(),
        ["web-1", "0/1", "Terminating"]
    );
    watch.kill().await.unwrap();
    let terminating = pods.get("web-1").await.unwrap();
    assert_eq!(terminating.metadata.deletion_grace_period_seconds, Some(30));

    pods.delete("web-1", &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    let gone = k.ok(&["get", "pods", "--ignore-not-found"]).await;
    assert_eq!(gone, "");
    server.shutdown().await;
}

/// kubectl's typed creates send protobuf (`application/vnd.kubernetes.protobuf`); each lands
/// as the object the JSON path would have stored, special types (IntOrString, Quantity,
/// bytes) in their JSON form.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_creates_arrive_as_protobuf_and_store_json_objects() {
    let server = server().await;
    let k = Kubectl::new(&server);
    let verbose = k.run(&["create", "namespace", "play", "-v=9"]).await;
    assert!(verbose.status.success(), "{verbose:?}");
    let log = String::from_utf8_lossy(&verbose.stderr);
    assert!(
        log.contains(r#"-H "Content-Type: application/vnd.kubernetes.protobuf""#),
        "kubectl sent protobuf:\n{log}"
    );
    let ns = ["-n", "play"];
    for args in [
        &[
            "create",
            "deployment",
            "web",
            "--image=nginx:1.27",
            "--replicas=2",
            "--port=8080",
        ][..],
        &["create", "service", "clusterip", "web", "--tcp=80:8080"],
        &[
            "create",
            "poddisruptionbudget",
            "web",
            "--selector=app=web",
            "--min-available=50%",
        ],
        &[
            "create",
            "configmap",
            "cfg",
            "--from-literal=mode=fast",
            "--from-literal=empty=",
        ],
        &[
            "create",
            "secret",
            "generic",
            "pw",
            "--from-literal=password=hunter2",
        ],
        &["create", "serviceaccount", "bot"],
        &[
            "create",
            "job",
            "once",
            "--image=busybox",
            "--",
            "echo",
            "hi",
        ],
        &[
            "create",
            "cronjob",
            "nightly",
            "--image=busybox",
            "--schedule=0 3 * * *",
        ],
        &[
            "create",
            "quota",
            "q",
            "--hard=cpu=1500m,memory=2Gi,pods=10",
        ],
        &[
            "create",
            "role",
            "reader",
            "--verb=get,list",
            "--resource=pods",
        ],
        &[
            "create",
            "rolebinding",
            "reader",
            "--role=reader",
            "--serviceaccount=play:bot",
        ],
        &[
            "create",
            "clusterrole",
            "nodes",
            "--verb=get",
            "--resource=nodes",
        ],
        &["create", "ingress", "web", "--rule=web.example/*=web:80"],
        &["create", "priorityclass", "high", "--value=1000"],
    ] {
        k.ok(&[&ns[..], args].concat()).await;
    }
    let get = |kind: &str, name: &str| {
        let store = server.store();
        let r = quiesce_sandbox::api::resources::RESOURCES
            .iter()
            .find(|r| r.kind == kind)
            .unwrap();
        let namespace = if r.namespaced { "play" } else { "" };
        store.get(r, namespace, name).unwrap()
    };
    assert_eq!(get("Namespace", "play")["status"]["phase"], "Active");
    let web = get("Deployment", "web");
    assert_eq!(web["spec"]["replicas"], 2);
    assert_eq!(web["spec"]["selector"]["matchLabels"]["app"], "web");
    let container = &web["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], "nginx:1.27");
    assert_eq!(container["ports"][0]["containerPort"], 8080);
    assert_eq!(web["metadata"]["generation"], 1);
    assert!(web["metadata"].get("creationTimestamp").is_some());
    assert!(web["metadata"].get("generateName").is_none(), "{web}");
    let svc = get("Service", "web");
    assert_eq!(svc["spec"]["ports"][0]["port"], 80);
    assert_eq!(
        svc["spec"]["ports"][0]["targetPort"], 8080,
        "IntOrString as int"
    );
    assert!(
        svc["spec"]["clusterIP"]
            .as_str()
            .unwrap()
            .starts_with("10.96.")
    );
    assert_eq!(
        get("PodDisruptionBudget", "web")["spec"]["minAvailable"],
        "50%",
        "IntOrString as string"
    );
    let cfg = get("ConfigMap", "cfg");
    assert_eq!(cfg["data"], json!({"mode": "fast", "empty": ""}));
    let secret = get("Secret", "pw");
    assert_eq!(
        secret["data"]["password"], "aHVudGVyMg==",
        "bytes as base64"
    );
    assert_eq!(secret["type"], "Opaque");
    assert_eq!(
        get("ServiceAccount", "bot")["metadata"]["namespace"],
        "play"
    );
    let job = get("Job", "once");
    let pod = &job["spec"]["template"]["spec"];
    assert_eq!(pod["restartPolicy"], "Never");
    assert_eq!(pod["containers"][0]["command"], json!(["echo", "hi"]));
    let uid = job["metadata"]["uid"].as_str().unwrap();
    assert_eq!(
        job["spec"]["selector"]["matchLabels"]["batch.kubernetes.io/controller-uid"],
        uid
    );
    assert_eq!(get("CronJob", "nightly")["spec"]["schedule"], "0 3 * * *");
    assert_eq!(
        get("ResourceQuota", "q")["spec"]["hard"],
        json!({"cpu": "1500m", "memory": "2Gi", "pods": "10"}),
        "Quantity as string"
    );
    assert_eq!(
        get("RoleBinding", "reader")["subjects"][0],
        json!({"kind": "ServiceAccount", "name": "bot", "namespace": "play"})
    );
    assert_eq!(
        get("ClusterRole", "nodes")["rules"][0]["verbs"],
        json!(["get"])
    );
    assert_eq!(
        get("Ingress", "web")["spec"]["rules"][0]["host"],
        "web.example"
    );
    assert_eq!(get("PriorityClass", "high")["value"], 1000);
    server.shutdown().await;
}

/// `auth can-i` (a protobuf SelfSubjectAccessReview), `get all` (discovery categories) and
/// `explain` (the OpenAPI v3 schemas) answer as on a cluster that allows everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn can_i_get_all_and_explain() {
    let server = server().await;
    let k = Kubectl::new(&server);
    assert_eq!(
        k.ok(&["auth", "can-i", "delete", "nodes"]).await.trim(),
        "yes"
    );
    let rules = k.ok(&["auth", "can-i", "--list"]).await;
    assert!(rules.lines().any(|l| l.starts_with("*.*")), "{rules}");

    let manifest = write_manifest(k.dir());
    k.ok(&["create", "-f", manifest.to_str().unwrap()]).await;
    k.ok(&["create", "configmap", "not-in-all"]).await;
    let all = k.ok(&["get", "all", "-o", "name"]).await;
    let mut names: Vec<&str> = all.lines().collect();
    names.sort_unstable();
    assert_eq!(
        names,
        ["deployment.apps/web", "service/web"],
        "`all` holds workloads and services, not PDBs or ConfigMaps"
    );

    k.ok(&["create", "service", "nodeport", "edge", "--tcp=443:8443"])
        .await;
    let services = k.ok(&["get", "services"]).await;
    let header: Vec<&str> = services
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        [
            "NAME",
            "TYPE",
            "CLUSTER-IP",
            "EXTERNAL-IP",
            "PORT(S)",
            "AGE"
        ]
    );
    let edge = row(&services, "edge");
    assert_eq!((edge[1], edge[3]), ("NodePort", "<none>"));
    let node_port: u16 = edge[4]
        .strip_prefix("443:")
        .and_then(|p| p.strip_suffix("/TCP"))
        .unwrap_or_else(|| panic!("a node port allocated: {services}"))
        .parse()
        .unwrap();
    assert!((30000..=32767).contains(&node_port), "{services}");
    assert_eq!(
        row(&k.ok(&["get", "namespaces"]).await, "default")[1],
        "Active"
    );

    let explained = k.ok(&["explain", "deployment.spec.strategy.type"]).await;
    assert!(
        explained.contains("FIELD: type <string>")
            && explained.contains(r#"Can be "Recreate" or "RollingUpdate""#),
        "{explained}"
    );
    let hpa = k
        .ok(&["explain", "hpa.spec", "--api-version=autoscaling/v2"])
        .await;
    assert!(
        hpa.contains("maxReplicas") && hpa.contains("<integer> -required-"),
        "{hpa}"
    );
    server.shutdown().await;
}

/// kubectl's `--validate` becomes `fieldValidation`: Strict (its default) refuses an unknown
/// field with upstream's "strict decoding error", Warn stores the object without it and
/// kubectl prints the server's warning.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_fields_are_refused_or_warned_and_never_stored() {
    let server = server().await;
    let k = Kubectl::new(&server);
    let path = k.dir().join("typo.yaml");
    std::fs::write(
        &path,
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cfg\n  lables: {app: web}\ndata: {a: b}\n",
    )
    .unwrap();
    let path = path.to_str().unwrap();
    let strict = k.run(&["apply", "-f", path]).await;
    assert!(!strict.status.success());
    let stderr = String::from_utf8_lossy(&strict.stderr);
    assert!(
        stderr.contains(
            r#"ConfigMap in version "v1" cannot be handled as a ConfigMap: strict decoding error: unknown field "metadata.lables""#
        ),
        "{stderr}"
    );
    let warned = k.run(&["apply", "-f", path, "--validate=warn"]).await;
    assert!(warned.status.success(), "{warned:?}");
    let stderr = String::from_utf8_lossy(&warned.stderr);
    assert!(
        stderr.contains(r#"Warning: unknown field "metadata.lables""#),
        "{stderr}"
    );
    let stored = k.ok(&["get", "configmap", "cfg", "-o", "json"]).await;
    let stored: serde_json::Value = serde_json::from_str(&stored).unwrap();
    assert!(stored["metadata"].get("lables").is_none(), "{stored}");
    assert_eq!(stored["data"], json!({"a": "b"}));
    server.shutdown().await;
}
