//! Shared setup for the workload controller tests: the real API server, the controllers as
//! kube-rs clients, and a kubelet stand-in that plays the node side through `pods/status`
//! (Running, Ready after an optional startup delay, a pod IP) and finishes graceful
//! deletions, unless a test holds a pod in Terminating with an annotation.

#![allow(
    dead_code,
    reason = "each test binary uses its own subset of the helpers"
)]

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use quiesce_sandbox::api::ApiServer;
use quiesce_sandbox::sim::workloads::WorkloadControllers;
use quiesce_sandbox::time::TimeScale;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

/// Pods with this annotation stay Terminating until a test removes it.
pub const HOLD: &str = "test.quiesce.io/hold-termination";
/// Milliseconds from a pod's start to Ready (default: at once).
pub const READY_AFTER_MS: &str = "test.quiesce.io/ready-after-ms";

/// The API server, the controllers and the kubelet stand-in of one test.
pub struct Cluster {
    pub server: ApiServer,
    controllers: WorkloadControllers,
    kubelet: JoinHandle<()>,
}

impl Cluster {
    /// Everything on a free loopback port, simulated time 10x faster.
    pub async fn start() -> Cluster {
        Self::start_scaled(TimeScale::new(10.0).unwrap()).await
    }

    /// Everything on a free loopback port, simulated time on `scale`.
    pub async fn start_scaled(scale: TimeScale) -> Cluster {
        let server = ApiServer::start("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let controllers = WorkloadControllers::spawn(server.client(), scale);
        let kubelet = tokio::spawn(kubelet(server.client()));
        Cluster {
            server,
            controllers,
            kubelet,
        }
    }

    pub fn client(&self) -> Client {
        self.server.client()
    }

    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client(), "default")
    }

    pub async fn stop(self) {
        self.kubelet.abort();
        self.controllers.stop().await;
        self.server.shutdown().await;
    }
}

/// Creates `obj` (JSON) in `default`.
pub async fn create<K>(api: &Api<K>, obj: Value) -> K
where
    K: kube::Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.create(&Default::default(), &serde_json::from_value(obj).unwrap())
        .await
        .unwrap()
}

/// Waits up to 30 s for `check` to return `Some`, re-checking every 20 ms; panics with `what`.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut interval = tokio::time::interval(Duration::from_millis(20));
    for _ in 0..1500 {
        interval.tick().await;
        if let Some(value) = check().await {
            return value;
        }
        if tokio::time::Instant::now() > deadline {
            break;
        }
    }
    panic!("timed out waiting for {what}");
}

/// Active (not terminating) pods whose names start with `prefix`.
pub async fn active_pods(pods: &Api<Pod>, prefix: &str) -> Vec<Pod> {
    let list = pods.list(&Default::default()).await.unwrap();
    list.items
        .into_iter()
        .filter(|p| p.name_any().starts_with(prefix) && p.metadata.deletion_timestamp.is_none())
        .collect()
}

/// Whether a pod's Ready condition is True.
pub fn ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Plays the kubelet for every pod: starts new ones (Ready after their delay, with an IP)
/// and removes terminating ones (grace 0) unless held.
async fn kubelet(client: Client) {
    let pods: Api<Pod> = Api::all(client);
    let next_ip = Arc::new(AtomicU32::new(1));
    let stream = watcher(pods.clone(), watcher::Config::default())
        .default_backoff()
        .applied_objects();
    let mut stream = std::pin::pin!(stream);
    while let Some(Ok(pod)) = stream.next().await {
        let api: Api<Pod> = Api::namespaced(
            pods.clone().into_client(),
            &pod.namespace().unwrap_or_default(),
        );
        let name = pod.name_any();
        if pod.metadata.deletion_timestamp.is_some() {
            if !pod.annotations().contains_key(HOLD) {
                let _ = api
                    .delete(&name, &DeleteParams::default().grace_period(0))
                    .await;
            }
            continue;
        }
        if pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running") {
            continue;
        }
        let ip = format!("10.0.0.{}", next_ip.fetch_add(1, Ordering::Relaxed));
        let delay = pod
            .annotations()
            .get(READY_AFTER_MS)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let status = |ready: &str| {
            json!({"status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
                "conditions": [{"type": "Ready", "status": ready, "lastTransitionTime": Timestamp::now().to_string()}]}})
        };
        let _ = api
            .patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(status("False")),
            )
            .await;
        let ready_status = status("True");
        tokio::spawn(async move {
            // A simulated startup delay, not test synchronisation.
            tokio::time::sleep(Duration::from_millis(delay)).await;
            let _ = api
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(ready_status))
                .await;
        });
    }
}
