//! The real kubectl (v1.32, on every machine) against the sandbox: what an operator types
//! must behave as on a real cluster.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::wait::{Condition, await_condition};
use quiesce_sandbox::scenario::Scenario;
use quiesce_sandbox::time::TimeScale;
use quiesce_sandbox::{Sandbox, SandboxOptions};
use serde_json::json;

const DEADLINE: Duration = Duration::from_secs(30);

struct Cluster {
    sandbox: Sandbox,
    kubeconfig: PathBuf,
    _dir: tempfile::TempDir,
}

async fn cluster(scenario: Scenario) -> Cluster {
    let sandbox = Sandbox::start(SandboxOptions {
        scenario,
        time_scale: TimeScale::new(10.0).unwrap(),
        ..Default::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    sandbox.write_kubeconfig(&kubeconfig).unwrap();
    Cluster {
        sandbox,
        kubeconfig,
        _dir: dir,
    }
}

impl Cluster {
    /// Runs kubectl to completion (its own `--request-timeout` bounds each call), whatever
    /// its exit status.
    async fn run(&self, args: &[&str]) -> Output {
        let mut cmd = tokio::process::Command::new("kubectl");
        cmd.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--request-timeout=20s")
            .args(args);
        tokio::time::timeout(Duration::from_secs(90), cmd.output())
            .await
            .expect("kubectl finished within 90s")
            .expect("kubectl runs")
    }

    /// Runs kubectl, failing the test on a non-zero exit.
    async fn kubectl(&self, args: &[&str]) -> Output {
        let out = self.run(args).await;
        assert!(
            out.status.success(),
            "kubectl {args:?} failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    async fn wait<K, C>(&self, api: Api<K>, name: &str, cond: C)
    where
        K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
        C: Condition<K>,
    {
        tokio::time::timeout(DEADLINE, await_condition(api, name, cond))
            .await
            .unwrap_or_else(|_| panic!("{name} reached the condition within {DEADLINE:?}"))
            .unwrap();
    }

    async fn deployment_ready(&self, name: &str, replicas: i32) {
        let api: Api<Deployment> = Api::namespaced(self.sandbox.client(), "default");
        self.wait(api, name, move |d: Option<&Deployment>| {
            d.and_then(|d| d.status.as_ref()).is_some_and(|s| {
                s.ready_replicas == Some(replicas)
                    && s.updated_replicas == Some(replicas)
                    && s.replicas == Some(replicas)
            })
        })
        .await;
    }
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_nodes_and_pods() {
    let c = cluster(Scenario::default_for(3)).await;
    c.deployment_ready("web", 3).await;
    let nodes = stdout(&c.kubectl(&["get", "nodes"]).await);
    assert_eq!(
        nodes.lines().filter(|l| l.contains(" Ready ")).count(),
        3,
        "{nodes}"
    );
    let pods = stdout(&c.kubectl(&["get", "pods", "-o", "wide"]).await);
    assert!(pods.lines().next().unwrap().contains("NODE"), "{pods}");
    let web_running = pods
        .lines()
        .filter(|l| l.starts_with("web-") && l.contains("1/1") && l.contains("Running"))
        .count();
    assert_eq!(web_running, 3, "{pods}");
    c.sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cordon_and_uncordon() {
    let c = cluster(Scenario::nodes_only(2)).await;
    let nodes: Api<Node> = Api::all(c.sandbox.client());
    c.kubectl(&["cordon", "node-1"]).await;
    assert_eq!(
        nodes
            .get("node-1")
            .await
            .unwrap()
            .spec
            .unwrap()
            .unschedulable,
        Some(true)
    );
    let listing = stdout(&c.kubectl(&["get", "nodes"]).await);
    assert!(listing.contains("Ready,SchedulingDisabled"), "{listing}");
    c.kubectl(&["uncordon", "node-1"]).await;
    assert_ne!(
        nodes
            .get("node-1")
            .await
            .unwrap()
            .spec
            .unwrap()
            .unschedulable,
        Some(true)
    );
    c.sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_moves_pods_to_other_nodes() {
    let c = cluster(Scenario::default_for(3)).await;
    c.deployment_ready("web", 3).await;
    c.deployment_ready("api", 1).await;
    c.kubectl(&[
        "drain",
        "node-1",
        "--ignore-daemonsets",
        "--delete-emptydir-data",
        "--timeout=60s",
    ])
    .await;
    c.deployment_ready("web", 3).await;
    c.deployment_ready("api", 1).await;
    let pods: Api<Pod> = Api::all(c.sandbox.client());
    let left = pods
        .list(&ListParams::default().fields("spec.nodeName=node-1"))
        .await
        .unwrap();
    let names: Vec<String> = left
        .items
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    assert!(
        names.iter().all(|n| n.starts_with("log-agent-")),
        "only the DaemonSet pod stays: {names:?}"
    );
    c.sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pdb_holds_the_drain_until_the_replacement_is_ready() {
    let c = cluster(Scenario::nodes_only(3)).await;
    c.kubectl(&["cordon", "node-2"]).await;
    c.kubectl(&["cordon", "node-3"]).await;
    let client = c.sandbox.client();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "pair"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "pair"}},
            "template": {"metadata": {"labels": {"app": "pair"}, "annotations": {"sandbox.quiesce.io/startup-delay": "10s"}},
                "spec": {"containers": [{"name": "a", "image": "a"}]}}}
    }))
    .unwrap();
    deployments
        .create(&PostParams::default(), &deployment)
        .await
        .unwrap();
    let pdbs: Api<k8s_openapi::api::policy::v1::PodDisruptionBudget> =
        Api::namespaced(client.clone(), "default");
    let pdb = serde_json::from_value(json!({"metadata": {"name": "pair"},
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app": "pair"}}}}))
    .unwrap();
    pdbs.create(&PostParams::default(), &pdb).await.unwrap();
    c.deployment_ready("pair", 2).await;
    c.kubectl(&["uncordon", "node-2"]).await;
    c.kubectl(&["uncordon", "node-3"]).await;
    let out = c
        .kubectl(&["drain", "node-1", "--ignore-daemonsets", "--timeout=60s"])
        .await;
    let log = format!("{}{}", stdout(&out), String::from_utf8_lossy(&out.stderr));
    assert!(
        log.contains("would violate the pod's disruption budget"),
        "the PDB blocked one eviction first:\n{log}"
    );
    assert!(log.contains("node/node-1 drained"), "{log}");
    c.deployment_ready("pair", 2).await;
    c.sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_restart_and_status() {
    let c = cluster(Scenario::default_for(3)).await;
    c.deployment_ready("web", 3).await;
    let before: Api<Deployment> = Api::namespaced(c.sandbox.client(), "default");
    let generation = before.get("web").await.unwrap().metadata.generation;
    c.kubectl(&["rollout", "restart", "deployment/web"]).await;
    let out = c
        .kubectl(&["rollout", "status", "deployment/web", "--timeout=60s"])
        .await;
    assert!(
        stdout(&out).contains("successfully rolled out"),
        "{}",
        stdout(&out)
    );
    let after = before.get("web").await.unwrap();
    assert!(after.metadata.generation > generation);
    let rs = stdout(&c.kubectl(&["get", "replicasets", "-o", "name"]).await);
    assert_eq!(
        rs.lines().filter(|l| l.contains("web-")).count(),
        2,
        "old and new ReplicaSets: {rs}"
    );
    c.sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_pods_watch_streams_changes() {
    let c = cluster(Scenario::nodes_only(1)).await;
    let mut child = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&c.kubeconfig)
        .args(["get", "pods", "-w"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = BufReader::new(child.stdout.take().unwrap());
    std::thread::spawn(move || {
        for line in reader.lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let pods: Api<Pod> = Api::namespaced(c.sandbox.client(), "default");
    let pod = serde_json::from_value(json!({"metadata": {"name": "watched"},
        "spec": {"containers": [{"name": "a", "image": "a"}]}}))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let deadline = std::time::Instant::now() + DEADLINE;
    let mut seen = Vec::new();
    while !seen
        .iter()
        .any(|l: &String| l.starts_with("watched") && l.contains("Running"))
    {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => seen.push(line),
            Err(_) => {
                panic!("kubectl get pods -w never showed the pod Running; it printed {seen:?}")
            }
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    c.sandbox.shutdown().await;
}

impl Cluster {
    /// kubectl's stdout, the command run in namespace `play`.
    async fn play(&self, args: &[&str]) -> String {
        stdout(&self.kubectl(&[&["-n", "play"], args].concat()).await)
    }

    /// Polls `args` until its output satisfies `done`, within [`DEADLINE`]; the last output.
    async fn until(&self, args: &[&str], done: impl Fn(&str) -> bool) -> String {
        let deadline = std::time::Instant::now() + DEADLINE;
        loop {
            let out = self.play(args).await;
            if done(&out) {
                return out;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "kubectl {args:?} never got there within {DEADLINE:?}; last output:\n{out}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The images of the pods labelled `app=web` that are not being deleted, sorted.
    async fn web_images(&self) -> Vec<String> {
        let pods: Api<Pod> = Api::namespaced(self.sandbox.client(), "play");
        let mut images: Vec<String> = pods
            .list(&ListParams::default().labels("app=web"))
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .flat_map(|p| p.spec.unwrap().containers)
            .filter_map(|c| c.image)
            .collect();
        images.sort();
        images
    }

    async fn web_images_become(&self, image: &str, count: usize) {
        let deadline = std::time::Instant::now() + DEADLINE;
        let want = vec![image.to_string(); count];
        loop {
            let images = self.web_images().await;
            if images == want {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the pods never all ran {image}: {images:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// One scripted session of the commands people type on a fresh sandbox, each checked by its
/// effect: typed creates (protobuf), expose, scale, autoscale, set image, rollout
/// status/history/undo/restart, get all, describe, explain, logs, auth can-i, wait, label,
/// annotate, cordon, drain, and delete namespace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everyday_commands_have_their_effects() {
    let c = cluster(Scenario::nodes_only(3)).await;
    c.kubectl(&["create", "namespace", "play"]).await;
    c.play(&[
        "create",
        "deployment",
        "web",
        "--image=nginx:1.26",
        "--replicas=2",
    ])
    .await;
    c.play(&["rollout", "status", "deployment/web", "--timeout=60s"])
        .await;
    c.web_images_become("nginx:1.26", 2).await;

    c.play(&[
        "expose",
        "deployment",
        "web",
        "--port=80",
        "--target-port=8080",
    ])
    .await;
    let svc = c
        .play(&[
            "get",
            "service",
            "web",
            "-o",
            "jsonpath={.spec.selector.app} {.spec.ports[0].targetPort}",
        ])
        .await;
    assert_eq!(svc, "web 8080");
    c.play(&["create", "service", "clusterip", "api", "--tcp=80:80"])
        .await;
    c.play(&[
        "create",
        "poddisruptionbudget",
        "web",
        "--selector=app=web",
        "--max-unavailable=1",
    ])
    .await;
    c.play(&["create", "configmap", "cfg", "--from-literal=mode=fast"])
        .await;
    c.play(&[
        "create",
        "secret",
        "generic",
        "pw",
        "--from-literal=password=hunter2",
    ])
    .await;
    c.play(&["create", "serviceaccount", "bot"]).await;
    c.play(&[
        "create",
        "cronjob",
        "nightly",
        "--image=busybox",
        "--schedule=0 3 * * *",
    ])
    .await;

    c.play(&["scale", "deployment/web", "--replicas=3"]).await;
    c.web_images_become("nginx:1.26", 3).await;
    c.play(&["autoscale", "deployment/web", "--min=4", "--max=6"])
        .await;
    c.until(
        &[
            "get",
            "deployment",
            "web",
            "-o",
            "jsonpath={.spec.replicas}",
        ],
        |r| r == "4",
    )
    .await;
    c.web_images_become("nginx:1.26", 4).await;

    c.play(&["set", "image", "deployment/web", "nginx=nginx:1.27"])
        .await;
    c.play(&["rollout", "status", "deployment/web", "--timeout=60s"])
        .await;
    c.web_images_become("nginx:1.27", 4).await;
    let history = c.play(&["rollout", "history", "deployment/web"]).await;
    assert_eq!(
        history
            .lines()
            .filter(|l| l.starts_with(char::is_numeric))
            .count(),
        2,
        "{history}"
    );
    c.play(&["rollout", "undo", "deployment/web"]).await;
    c.play(&["rollout", "status", "deployment/web", "--timeout=60s"])
        .await;
    c.web_images_become("nginx:1.26", 4).await;
    c.play(&["rollout", "restart", "deployment/web"]).await;
    c.until(
        &[
            "get",
            "deployment",
            "web",
            "-o",
            "jsonpath={.spec.template.metadata.annotations}",
        ],
        |a| a.contains("kubectl.kubernetes.io/restartedAt"),
    )
    .await;
    c.play(&["rollout", "status", "deployment/web", "--timeout=60s"])
        .await;

    c.play(&["create", "job", "once", "--image=busybox", "--", "true"])
        .await;
    c.play(&[
        "wait",
        "--for=condition=Complete",
        "job/once",
        "--timeout=30s",
    ])
    .await;
    let succeeded = c
        .play(&["get", "job", "once", "-o", "jsonpath={.status.succeeded}"])
        .await;
    assert_eq!(succeeded, "1");

    let all = c.play(&["get", "all", "-o", "name"]).await;
    for name in [
        "deployment.apps/web",
        "service/web",
        "service/api",
        "job.batch/once",
        "cronjob.batch/nightly",
        "horizontalpodautoscaler.autoscaling/web",
    ] {
        assert!(all.lines().any(|l| l == name), "{name} in get all:\n{all}");
    }
    assert!(all.lines().any(|l| l.starts_with("pod/web-")), "{all}");

    c.play(&["label", "deployment", "web", "tier=front"]).await;
    c.play(&["annotate", "deployment", "web", "owner=team-a"])
        .await;
    let described = c.play(&["describe", "deployment", "web"]).await;
    assert!(
        described.contains("tier=front") && described.contains("owner: team-a"),
        "{described}"
    );
    assert!(described.contains("nginx:1.26"), "{described}");
    let explained = c.kubectl(&["explain", "deployment.spec.replicas"]).await;
    assert!(
        stdout(&explained).contains("<integer>"),
        "{}",
        stdout(&explained)
    );
    let logs = c.play(&["logs", "deployment/web"]).await;
    assert!(logs.contains("runs no containers"), "{logs}");
    let can = c.play(&["auth", "can-i", "create", "deployments"]).await;
    assert_eq!(can.trim(), "yes");

    c.kubectl(&["cordon", "node-1"]).await;
    c.kubectl(&["drain", "node-1", "--ignore-daemonsets", "--timeout=60s"])
        .await;
    let on_node = c
        .play(&[
            "get",
            "pods",
            "--field-selector=spec.nodeName=node-1,status.phase=Running",
            "-o",
            "name",
        ])
        .await;
    assert_eq!(on_node, "", "drained");
    c.web_images_become("nginx:1.26", 4).await;
    let endpoints = c
        .until(
            &[
                "get",
                "endpoints",
                "web",
                "-o",
                "jsonpath={.subsets[0].addresses[*].ip} {.subsets[0].ports[0].port}",
            ],
            |e| e.split_whitespace().count() == 5,
        )
        .await;
    assert!(endpoints.ends_with(" 8080"), "{endpoints}");

    c.kubectl(&["delete", "namespace", "play", "--timeout=60s"])
        .await;
    let namespaces = stdout(&c.kubectl(&["get", "namespaces", "-o", "name"]).await);
    assert!(!namespaces.contains("namespace/play"), "{namespaces}");
    let left = c
        .kubectl(&[
            "get",
            "all,configmaps,secrets,serviceaccounts,pdb",
            "-n",
            "play",
            "-o",
            "name",
        ])
        .await;
    assert_eq!(stdout(&left), "", "delete namespace leaves nothing in it");
    c.sandbox.shutdown().await;
}

/// The public manifests in `shared/corpus` (beside the repository; `QUIESCE_CORPUS` names
/// another place).
fn corpus() -> Vec<PathBuf> {
    let dir = std::env::var_os("QUIESCE_CORPUS")
        .map(PathBuf::from)
        .or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .ancestors()
                .map(|a| a.join("shared/corpus"))
                .find(|d| d.is_dir())
        })
        .expect("the manifest corpus: shared/corpus beside the repository, or QUIESCE_CORPUS");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 10,
        "corpus at {} has {files:?}",
        dir.display()
    );
    files
}

/// The namespaces a manifest names itself.
fn named_namespaces(text: &str) -> Vec<String> {
    let mut names: Vec<String> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("namespace:"))
        .map(|n| n.trim().trim_matches('"').to_string())
        .filter(|n| !n.is_empty())
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Manifests a real cluster refuses under kubectl's default `--validate=strict`, with the
/// unknown field it names: Karpenter's example misspells `allowPrivilegeEscalation`.
const REFUSED: &[(&str, &str)] = &[(
    "aws__karpenter-provider-aws__examples__workloads__disruption-budget.yaml",
    r#"strict decoding error: unknown field "spec.template.spec.containers[0].securityContext.allowPrivilegedEscalation""#,
)];

/// Applies `path`, expecting what a real cluster answers: success, or for a [`REFUSED`]
/// manifest the strict decoding error, after which the user's `--validate=false` applies it.
async fn apply(c: &Cluster, path: &str, namespace: &[&str]) {
    let file = Path::new(path).file_name().unwrap().to_str().unwrap();
    let args = [&["apply", "-f", path][..], namespace].concat();
    match REFUSED.iter().find(|(name, _)| *name == file) {
        None => {
            c.kubectl(&args).await;
        }
        Some((_, error)) => {
            let out = c.run(&args).await;
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success() && stderr.contains(error), "{stderr}");
            c.kubectl(&[&args[..], &["--validate=false"]].concat())
                .await;
        }
    }
}

/// Every public manifest of the corpus applies with `kubectl apply -f` as a user would run it
/// (its namespaces created first, as the manifests expect; a manifest a real cluster refuses
/// is refused the same way first), and its Deployments become Available.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_public_manifests_apply_and_their_deployments_become_available() {
    // Room for every request the manifests make: Karpenter's spread example alone asks for
    // 50 CPUs, which on a real cluster would have nodes provisioned for it.
    let nodes = "nodes:\n- namePrefix: node-\n  count: 6\n  zones: [us-east-1a, us-east-1b, us-east-1c]\n  capacity: {cpu: \"16\", memory: 64Gi, pods: \"110\"}\n";
    let c = cluster(Scenario::from_yaml(nodes, "corpus nodes").unwrap()).await;
    let mut created = std::collections::HashSet::new();
    for (i, file) in corpus().iter().enumerate() {
        let text = std::fs::read_to_string(file).unwrap();
        let path = file.to_str().unwrap();
        let mut namespaces = named_namespaces(&text);
        if namespaces.is_empty() {
            let own = format!("corpus-{i}");
            c.kubectl(&["create", "namespace", &own]).await;
            apply(&c, path, &["-n", &own]).await;
            namespaces.push(own);
        } else {
            for ns in &namespaces {
                if created.insert(ns.clone()) {
                    c.kubectl(&["create", "namespace", ns]).await;
                }
            }
            apply(&c, path, &[]).await;
        }
        for ns in &namespaces {
            let deployments = stdout(
                &c.kubectl(&["get", "deployments", "-n", ns, "-o", "name"])
                    .await,
            );
            if deployments.is_empty() {
                continue;
            }
            c.kubectl(&[
                "wait",
                "--for=condition=Available",
                "deployments",
                "--all",
                "-n",
                ns,
                "--timeout=60s",
            ])
            .await;
        }
    }
    c.sandbox.shutdown().await;
}
