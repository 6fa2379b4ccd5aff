//! Deployment rollouts (RollingUpdate bounds, `kubectl rollout restart` + `rollout status`)
//! and the disruption controller's PDB status, with evictions, against the real sandbox
//! API server and the real kubectl.

mod workload_support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{EvictParams, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};
use serde_json::{Value, json};
use workload_support::{Cluster, READY_AFTER_MS, active_pods, create, eventually, ready};

fn deployment(name: &str, replicas: i32, ready_after_ms: u32, strategy: Value) -> Value {
    json!({"metadata": {"name": name}, "spec": {"replicas": replicas, "strategy": strategy,
        "selector": {"matchLabels": {"app": name}},
        "template": {"metadata": {"labels": {"app": name}, "annotations": {READY_AFTER_MS: ready_after_ms.to_string()}},
                     "spec": {"nodeName": "node-1", "containers": [{"name": "app", "image": "app:1"}]}}}})
}

/// The deployment is fully rolled out at `generation`, as `kubectl rollout status` judges it.
async fn rolled_out(
    deployments: &Api<Deployment>,
    name: &str,
    generation: i64,
    replicas: i32,
) -> Option<Deployment> {
    let d = deployments.get(name).await.ok()?;
    let s = d.status.clone()?;
    let done = s.observed_generation == Some(generation)
        && s.updated_replicas == Some(replicas)
        && s.replicas == Some(replicas)
        && s.available_replicas == Some(replicas);
    done.then_some(d)
}

/// Records the fewest Ready live pods over every change of `pods`.
async fn track_ready(pods: Api<Pod>, fewest: Arc<Mutex<usize>>) {
    let mut state: BTreeMap<String, (bool, bool)> = BTreeMap::new();
    let mut synced = false;
    let stream = watcher(pods, watcher::Config::default()).default_backoff();
    let mut stream = std::pin::pin!(stream);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while let Ok(Some(Ok(event))) = tokio::time::timeout_at(deadline, stream.next()).await {
        let mut apply = |pod: Pod, gone: bool| {
            let live = !gone && pod.metadata.deletion_timestamp.is_none();
            state.insert(pod.name_any(), (live && ready(&pod), live));
        };
        match event {
            watcher::Event::Apply(p) | watcher::Event::InitApply(p) => apply(p, false),
            watcher::Event::Delete(p) => apply(p, true),
            watcher::Event::Init => state.clear(),
            watcher::Event::InitDone => synced = true,
        }
        if !synced {
            continue;
        }
        let ready_now = state.values().filter(|(r, _)| *r).count();
        let mut f = fewest.lock().unwrap();
        *f = (*f).min(ready_now);
    }
}

/// Records the most replicas the ReplicaSets of `app` asked for at once. This is the quantity
/// maxSurge bounds: the deployment controller's `NewRSNewReplicas` compares
/// `replicas + maxSurge` with the sum of the ReplicaSets' `spec.replicas`
/// (`GetReplicaCountForReplicaSets`, kubernetes pkg/controller/deployment/util), not with
/// live pods, so for a moment after an old ReplicaSet is scaled down its pod may still be live
/// beside the new ReplicaSet's extra pod — on a real cluster as in the sandbox.
async fn track_requested(sets: Api<ReplicaSet>, app: &str, most: Arc<Mutex<i32>>) {
    let mut requested: BTreeMap<String, i32> = BTreeMap::new();
    let config = watcher::Config::default().labels(&format!("app={app}"));
    let stream = watcher(sets, config).default_backoff();
    let mut stream = std::pin::pin!(stream);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while let Ok(Some(Ok(event))) = tokio::time::timeout_at(deadline, stream.next()).await {
        match event {
            watcher::Event::Apply(rs) | watcher::Event::InitApply(rs) => {
                let wanted = rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
                requested.insert(rs.name_any(), wanted);
            }
            watcher::Event::Delete(rs) => {
                requested.remove(&rs.name_any());
            }
            watcher::Event::Init => requested.clear(),
            watcher::Event::InitDone => {}
        }
        let mut m = most.lock().unwrap();
        *m = (*m).max(requested.values().sum());
    }
}

#[tokio::test]
async fn rolling_update_keeps_ready_pods_within_max_unavailable_and_surge() {
    let c = Cluster::start().await;
    let deployments: Api<Deployment> = c.api();
    let pods: Api<Pod> = c.api();
    let strategy =
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": "25%"}});
    create(&deployments, deployment("web", 4, 100, strategy)).await;
    eventually("the first rollout", || {
        rolled_out(&deployments, "web", 1, 4)
    })
    .await;

    // Every pod change from here on, in the API's order: the fewest Ready (and not
    // terminating) pods and the most live pods at any point.
    let fewest_ready = Arc::new(Mutex::new(usize::MAX));
    let most_requested = Arc::new(Mutex::new(0));
    let history = tokio::spawn(track_ready(pods.clone(), fewest_ready.clone()));
    let sets = tokio::spawn(track_requested(c.api(), "web", most_requested.clone()));
    eventually("the watches to start", || async {
        (*fewest_ready.lock().unwrap() < usize::MAX && *most_requested.lock().unwrap() > 0)
            .then_some(())
    })
    .await;
    deployments
        .patch("web", &PatchParams::default(), &Patch::Merge(json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "app:2"}]}}}})))
        .await
        .unwrap();
    let d = eventually("the second rollout", || {
        rolled_out(&deployments, "web", 2, 4)
    })
    .await;
    history.abort();
    sets.abort();
    let min_ready = *fewest_ready.lock().unwrap();
    let max_requested = *most_requested.lock().unwrap();
    assert!(
        min_ready >= 3,
        "Ready pods dropped to {min_ready}, below replicas - maxUnavailable = 3"
    );
    assert!(
        max_requested <= 5,
        "the ReplicaSets asked for {max_requested} pods, above replicas + maxSurge = 5"
    );

    let live = active_pods(&pods, "web-").await;
    let new_hash = live[0].labels()["pod-template-hash"].clone();
    assert!(
        live.iter()
            .all(|p| p.labels()["pod-template-hash"] == new_hash)
    );
    assert_eq!(
        d.annotations()
            .get("deployment.kubernetes.io/revision")
            .map(String::as_str),
        Some("2")
    );
    c.stop().await;
}

/// The real kubectl, pointed at the test's API server.
struct Kubectl {
    kubeconfig: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Kubectl {
    fn new(c: &Cluster) -> Kubectl {
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            serde_saphyr::to_string(&c.server.kubeconfig()).unwrap(),
        )
        .unwrap();
        Kubectl {
            kubeconfig,
            _dir: dir,
        }
    }

    /// Runs kubectl (at most 60 s): whether it succeeded, and its stdout and stderr.
    async fn run(&self, args: &[&str]) -> (bool, String) {
        let mut cmd = tokio::process::Command::new("kubectl");
        cmd.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--request-timeout=20s")
            .args(args);
        let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
            .await
            .unwrap()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), text)
    }

    /// Runs kubectl and insists it succeeds.
    async fn ok(&self, args: &[&str]) -> String {
        let (success, text) = self.run(args).await;
        assert!(success, "kubectl {args:?} failed: {text}");
        text
    }
}

#[tokio::test]
async fn kubectl_rollout_status_fails_once_the_progress_deadline_passes() {
    let c = Cluster::start().await;
    let deployments: Api<Deployment> = c.api();
    // Pods that never become Ready within the test; a 3 s deadline is 0.3 s at 10x.
    let mut stuck = deployment("stuck", 2, 600_000, json!({}));
    stuck["spec"]["progressDeadlineSeconds"] = json!(3);
    create(&deployments, stuck).await;
    let (success, text) = Kubectl::new(&c)
        .run(&["rollout", "status", "deployment/stuck", "--timeout=30s"])
        .await;
    assert!(
        !success && text.contains("exceeded its progress deadline"),
        "{text}"
    );
    let d = deployments.get("stuck").await.unwrap();
    let conditions = d.status.unwrap().conditions.unwrap();
    let progressing = conditions
        .iter()
        .find(|c| c.type_ == "Progressing")
        .unwrap();
    assert_eq!(
        (progressing.status.as_str(), progressing.reason.as_deref()),
        ("False", Some("ProgressDeadlineExceeded"))
    );
    c.stop().await;
}

#[tokio::test]
async fn kubectl_rollout_restart_completes_with_upstream_conditions() {
    let c = Cluster::start().await;
    let deployments: Api<Deployment> = c.api();
    let sets: Api<ReplicaSet> = c.api();
    create(&deployments, deployment("api", 2, 50, json!({}))).await;
    eventually("the first rollout", || {
        rolled_out(&deployments, "api", 1, 2)
    })
    .await;

    let kubectl = Kubectl::new(&c);
    kubectl.ok(&["rollout", "restart", "deployment/api"]).await;
    let status = kubectl
        .ok(&["rollout", "status", "deployment/api", "--timeout=60s"])
        .await;
    assert!(status.contains("successfully rolled out"), "{status}");

    let d = deployments.get("api").await.unwrap();
    let conditions = d.status.unwrap().conditions.unwrap();
    let find = |t: &str| conditions.iter().find(|c| c.type_ == t).unwrap();
    assert_eq!(
        (
            find("Available").status.as_str(),
            find("Available").reason.as_deref()
        ),
        ("True", Some("MinimumReplicasAvailable"))
    );
    assert_eq!(
        (
            find("Progressing").status.as_str(),
            find("Progressing").reason.as_deref()
        ),
        ("True", Some("NewReplicaSetAvailable"))
    );
    assert_eq!(
        d.metadata.annotations.unwrap()["deployment.kubernetes.io/revision"],
        "2"
    );
    let replicas: Vec<_> = sets
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(|rs| rs.spec.as_ref().unwrap().replicas)
        .collect();
    assert_eq!(replicas.len(), 2, "the old ReplicaSet is kept as history");
    assert!(
        replicas.contains(&Some(0)) && replicas.contains(&Some(2)),
        "{replicas:?}"
    );
    c.stop().await;
}

/// Creates a PDB over `app` and waits for the controller's first status (its condition:
/// a failed sync, like upstream's failSafe, leaves observedGeneration alone).
async fn budget(
    pdbs: &Api<PodDisruptionBudget>,
    name: &str,
    app: &str,
    spec: Value,
) -> PodDisruptionBudget {
    let mut full = json!({"selector": {"matchLabels": {"app": app}}});
    json_patch::merge(&mut full, &spec);
    create(pdbs, json!({"metadata": {"name": name}, "spec": full})).await;
    eventually("the PDB status", || async {
        let pdb = pdbs.get(name).await.ok()?;
        pdb.status
            .as_ref()?
            .conditions
            .as_ref()?
            .iter()
            .any(|c| c.type_ == "DisruptionAllowed")
            .then_some(pdb)
    })
    .await
}

/// (expectedPods, currentHealthy, desiredHealthy, disruptionsAllowed, condition reason).
fn numbers(pdb: &PodDisruptionBudget) -> (i32, i32, i32, i32, String) {
    let s = pdb.status.clone().unwrap();
    let reason = s
        .conditions
        .unwrap()
        .iter()
        .find(|c| c.type_ == "DisruptionAllowed")
        .unwrap()
        .reason
        .clone();
    (
        s.expected_pods,
        s.current_healthy,
        s.desired_healthy,
        s.disruptions_allowed,
        reason,
    )
}

#[tokio::test]
async fn pdb_status_arithmetic_matches_upstream() {
    let c = Cluster::start().await;
    let deployments: Api<Deployment> = c.api();
    let pdbs: Api<PodDisruptionBudget> = c.api();
    let pods: Api<Pod> = c.api();
    create(&deployments, deployment("db", 3, 0, json!({}))).await;
    eventually("3 available", || rolled_out(&deployments, "db", 1, 3)).await;

    let sufficient = "SufficientPods".to_owned();
    let max_unavailable =
        budget(&pdbs, "max-unavailable", "db", json!({"maxUnavailable": 1})).await;
    assert_eq!(numbers(&max_unavailable), (3, 3, 2, 1, sufficient.clone()));
    assert_eq!(
        max_unavailable.status.as_ref().unwrap().observed_generation,
        Some(1)
    );
    let min_int = budget(&pdbs, "min-int", "db", json!({"minAvailable": 2})).await;
    assert_eq!(numbers(&min_int), (3, 3, 2, 1, sufficient.clone()));
    let min_half = budget(&pdbs, "min-half", "db", json!({"minAvailable": "50%"})).await;
    assert_eq!(
        numbers(&min_half),
        (3, 3, 2, 1, sufficient.clone()),
        "50% of 3 rounds up to 2"
    );
    let min_all = budget(&pdbs, "min-all", "db", json!({"minAvailable": "100%"})).await;
    assert_eq!(
        numbers(&min_all),
        (3, 3, 3, 0, "InsufficientPods".to_owned())
    );

    // A pod no controller owns has no scale: the sync fails safe, allowing nothing.
    create(
        &pods,
        json!({"metadata": {"name": "loner", "labels": {"app": "loner"}},
        "spec": {"nodeName": "node-1", "containers": [{"name": "app", "image": "app:1"}]}}),
    )
    .await;
    let orphan = budget(&pdbs, "orphan", "loner", json!({"maxUnavailable": 1})).await;
    assert_eq!(orphan.status.as_ref().unwrap().disruptions_allowed, 0);
    assert_eq!(numbers(&orphan).4, "SyncFailed");
    c.stop().await;
}

#[tokio::test]
async fn eviction_turns_from_429_to_allowed_once_the_replacement_is_ready() {
    let c = Cluster::start().await;
    let deployments: Api<Deployment> = c.api();
    let pdbs: Api<PodDisruptionBudget> = c.api();
    let pods: Api<Pod> = c.api();
    create(&deployments, deployment("queue", 2, 300, json!({}))).await;
    eventually("2 available", || rolled_out(&deployments, "queue", 1, 2)).await;
    let pdb = budget(&pdbs, "queue", "queue", json!({"maxUnavailable": 1})).await;
    assert_eq!(numbers(&pdb).3, 1);

    let names: Vec<_> = active_pods(&pods, "queue-")
        .await
        .iter()
        .map(|p| p.name_any())
        .collect();
    pods.evict(&names[0], &EvictParams::default())
        .await
        .unwrap();
    let refused = pods
        .evict(&names[1], &EvictParams::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, kube::Error::Api(s) if s.code == 429),
        "{refused:?}"
    );

    eventually("the second eviction to be allowed", || async {
        pods.evict(&names[1], &EvictParams::default()).await.ok()
    })
    .await;
    let survivors = active_pods(&pods, "queue-").await;
    assert!(
        survivors
            .iter()
            .any(|p| ready(p) && !names.contains(&p.name_any())),
        "a Ready replacement existed"
    );
    c.stop().await;
}

#[tokio::test]
async fn recreate_removes_every_old_pod_before_creating_new_ones() {
    let c = Cluster::start().await;
    let deployments: Api<Deployment> = c.api();
    let pods: Api<Pod> = c.api();
    create(
        &deployments,
        deployment("batch", 3, 20, json!({"type": "Recreate"})),
    )
    .await;
    eventually("the first rollout", || {
        rolled_out(&deployments, "batch", 1, 3)
    })
    .await;
    let old_hash = active_pods(&pods, "batch-").await[0].labels()["pod-template-hash"].clone();

    // Over every pod change: was a new-template pod ever present beside a live old one?
    let overlap = Arc::new(Mutex::new(None::<bool>));
    let watch = tokio::spawn({
        let (pods, overlap, old_hash) = (pods.clone(), overlap.clone(), old_hash.clone());
        async move {
            let mut state: BTreeMap<String, (bool, bool)> = BTreeMap::new();
            let stream = watcher(pods, watcher::Config::default())
                .default_backoff()
                .touched_objects();
            let mut stream = std::pin::pin!(stream);
            let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
            while let Ok(Some(Ok(pod))) = tokio::time::timeout_at(deadline, stream.next()).await {
                let old = pod.labels().get("pod-template-hash") == Some(&old_hash);
                state.insert(
                    pod.name_any(),
                    (old, pod.metadata.deletion_timestamp.is_none()),
                );
                let both =
                    state.values().any(|(o, live)| *o && *live) && state.values().any(|(o, _)| !o);
                let mut seen = overlap.lock().unwrap();
                *seen = Some(seen.unwrap_or(false) || both);
            }
        }
    });
    eventually("the watch to start", || async {
        overlap.lock().unwrap().map(|_| ())
    })
    .await;
    deployments
        .patch("batch", &PatchParams::default(), &Patch::Merge(json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "app:2"}]}}}})))
        .await
        .unwrap();
    eventually("the second rollout", || {
        rolled_out(&deployments, "batch", 2, 3)
    })
    .await;
    watch.abort();
    assert_eq!(
        *overlap.lock().unwrap(),
        Some(false),
        "a new pod existed while an old one was live"
    );
    c.stop().await;
}
