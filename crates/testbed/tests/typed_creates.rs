//! kubectl's typed creates — protobuf request bodies — against the real v1.20 API server and
//! the sandbox: every field the sandbox decoded from the body must be what the real server
//! decoded from the same command. (The real server also adds its own defaults; the sandbox
//! adds fewer, so the comparison runs from the sandbox's object to the real one.)

use std::path::{Path, PathBuf};
use std::time::Duration;

use quiesce_sandbox::api::ApiServer;
use quiesce_testbed::ControlPlane;
use serde_json::Value;

/// The commands compared: kinds both servers serve (v1.20 has no `policy/v1` or `batch/v1`
/// CronJob, so `create pdb` and `create cronjob` are left out).
const COMMANDS: &[&[&str]] = &[
    &[
        "create",
        "deployment",
        "web",
        "--image=nginx:1.27",
        "--replicas=2",
        "--port=8080",
    ],
    &["create", "service", "clusterip", "web", "--tcp=80:8080"],
    &["create", "service", "nodeport", "edge", "--tcp=443:8443"],
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
    &["create", "ingress", "web", "--rule=web.example/*=web:80"],
    &[
        "create",
        "priorityclass",
        "high",
        "--value=1000",
        "--description=urgent",
    ],
    &[
        "create",
        "clusterrole",
        "nodes",
        "--verb=get",
        "--resource=nodes",
    ],
    &[
        "create",
        "clusterrolebinding",
        "nodes",
        "--clusterrole=nodes",
        "--user=ann",
    ],
    &[
        "run",
        "one",
        "--image=nginx",
        "--port=80",
        "--labels=app=one",
        "--env=A=1",
    ],
];

/// What each command created, for `kubectl get`.
const OBJECTS: &[&str] = &[
    "deployment/web",
    "service/web",
    "service/edge",
    "configmap/cfg",
    "secret/pw",
    "serviceaccount/bot",
    "job/once",
    "resourcequota/q",
    "role/reader",
    "rolebinding/reader",
    "ingress.networking.k8s.io/web",
    "priorityclass/high",
    "clusterrole/nodes",
    "clusterrolebinding/nodes",
    "pod/one",
];

async fn kubectl(kubeconfig: &Path, args: &[&str]) -> String {
    let mut cmd = tokio::process::Command::new("kubectl");
    cmd.arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--request-timeout=20s")
        .args(args)
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("kubectl finished within 60s")
        .expect("kubectl runs");
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs every command in namespace `play` and returns the created objects.
async fn create_all(kubeconfig: &Path) -> Vec<Value> {
    kubectl(kubeconfig, &["create", "namespace", "play"]).await;
    for args in COMMANDS {
        kubectl(kubeconfig, &[&["-n", "play"], *args].concat()).await;
    }
    let mut objects = Vec::new();
    for name in OBJECTS {
        let json = kubectl(kubeconfig, &["-n", "play", "get", name, "-o", "json"]).await;
        objects.push(serde_json::from_str(&json).unwrap());
    }
    objects
}

/// Fields each server fills in on its own: identity, timestamps, allocated addresses and
/// ports, status, the job selector's generated uid, and what v1.20 predates.
fn server_owned(path: &str) -> bool {
    const OWNED: &[&str] = &[
        "/metadata/uid",
        "/metadata/resourceVersion",
        "/metadata/creationTimestamp",
        "/metadata/managedFields",
        "/metadata/selfLink",
        "/metadata/generation",
        "/metadata/annotations/deployment.kubernetes.io",
        "/spec/clusterIP",
        "/spec/clusterIPs",
        "/status",
    ];
    // Newer than v1.20: the Job's completionMode and its batch.kubernetes.io labels.
    let newer = path == "/spec/completionMode" || path.contains("batch.kubernetes.io");
    OWNED.iter().any(|o| path.starts_with(o))
        || newer
        || path.contains("controller-uid")
        || path.ends_with("/nodePort")
}

/// Every leaf of `ours` that is not server-owned, with its value in `theirs` (None when
/// absent). Go zero values the sandbox keeps from protobuf (`0`, `false`), which the real
/// server's JSON leaves out, are a documented difference and skipped.
fn differences(path: &str, ours: &Value, theirs: Option<&Value>, out: &mut Vec<String>) {
    if server_owned(path) {
        return;
    }
    match ours {
        Value::Object(map) => {
            for (k, v) in map {
                let key = format!("{path}/{}", k.replace('~', "~0").replace('/', "~1"));
                differences(&key, v, theirs.and_then(|t| t.get(k)), out);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                differences(
                    &format!("{path}/{i}"),
                    v,
                    theirs.and_then(|t| t.get(i)),
                    out,
                );
            }
        }
        Value::Bool(false) if theirs.is_none() => {}
        Value::Number(n) if n.as_i64() == Some(0) && theirs.is_none() => {}
        leaf if Some(leaf) != theirs => {
            out.push(format!("{path}: sandbox {leaf}, real {theirs:?}"))
        }
        _ => {}
    }
}

fn write_kubeconfig(server: &ApiServer, dir: &Path) -> PathBuf {
    let path = dir.join("kubeconfig");
    std::fs::write(&path, serde_json::to_string(&server.kubeconfig()).unwrap()).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_creates_decode_as_on_the_real_server() {
    let plane = ControlPlane::start()
        .await
        .expect("the v1.20 control plane starts");
    let real = create_all(plane.kubeconfig_path()).await;
    let sandbox = ApiServer::start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ours = create_all(&write_kubeconfig(&sandbox, dir.path())).await;
    let mut found = Vec::new();
    for (o, r) in ours.iter().zip(&real) {
        let mut diffs = Vec::new();
        differences("", o, Some(r), &mut diffs);
        if !diffs.is_empty() {
            found.push(format!(
                "{}/{}: {diffs:#?}",
                o["kind"], o["metadata"]["name"]
            ));
        }
    }
    assert!(found.is_empty(), "{found:#?}");
    sandbox.shutdown().await;
}
