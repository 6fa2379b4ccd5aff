//! The kubelet stand-in for the real control plane, written once as a plain client of the
//! Kubernetes API: it registers Ready nodes (as a kubelet would, clearing the `not-ready` taint
//! the TaintNodesByCondition admission plugin adds), marks bound pods Running and Ready after
//! their `sandbox.quiesce.io/startup-delay`, and finishes graceful deletions with grace 0.
//! The sandbox brings its own simulated kubelets; this is what the v1.20 control plane lacks.

use std::collections::BTreeSet;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

/// Pods wait this long after binding before the stand-in marks them Ready.
pub const STARTUP_DELAY_ANNOTATION: &str = "sandbox.quiesce.io/startup-delay";
/// A pod with this annotation is never marked Ready (a crash-looping app).
pub const NEVER_READY_ANNOTATION: &str = "test.quiesce.io/never-ready";

/// Registers a Ready node with `cpu` cores, 8 GiB and 110 pods.
pub async fn add_ready_node(client: &Client, name: &str, cpu: &str) -> Result<(), kube::Error> {
    let nodes: Api<Node> = Api::all(client.clone());
    let node = json!({"metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}}});
    nodes
        .create(
            &PostParams::default(),
            &serde_json::from_value(node).expect("a valid Node"),
        )
        .await?;
    nodes
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"taints": null}})),
        )
        .await?;
    let resources = json!({"cpu": cpu, "memory": "8Gi", "pods": "110"});
    let status = json!({"status": {
        "capacity": resources, "allocatable": resources,
        "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "stand-in"}]
    }});
    nodes
        .patch_status(name, &PatchParams::default(), &Patch::Merge(status))
        .await?;
    Ok(())
}

/// Runs the pod side of the stand-in until the returned task is aborted.
pub fn spawn(client: Client) -> tokio::task::JoinHandle<()> {
    tokio::spawn(run(client))
}

async fn run(client: Client) {
    let api: Api<Pod> = Api::all(client.clone());
    let mut started: BTreeSet<String> = BTreeSet::new();
    let mut events = watcher(api, watcher::Config::default())
        .default_backoff()
        .applied_objects()
        .boxed();
    while let Some(Ok(pod)) = events.next().await {
        let uid = pod.uid().unwrap_or_default();
        let pods: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace().unwrap_or_default());
        let name = pod.name_any();
        if pod.metadata.deletion_timestamp.is_some() {
            let dp = DeleteParams {
                grace_period_seconds: Some(0),
                preconditions: Some(Preconditions {
                    uid: Some(uid),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            tokio::spawn(async move {
                let _ = pods.delete(&name, &dp).await;
            });
            continue;
        }
        let bound = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_ref())
            .is_some();
        let annotations = pod.annotations();
        if !bound || started.contains(&uid) || annotations.contains_key(NEVER_READY_ANNOTATION) {
            continue;
        }
        started.insert(uid);
        let delay = annotations
            .get(STARTUP_DELAY_ANNOTATION)
            .and_then(|d| humantime::parse_duration(d).ok())
            .unwrap_or_default();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let status = json!({"status": {"phase": "Running", "conditions": [
                {"type": "Ready", "status": "True"}, {"type": "ContainersReady", "status": "True"},
                {"type": "Initialized", "status": "True"}, {"type": "PodScheduled", "status": "True"}]}});
            let _ = pods
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(status))
                .await;
        });
    }
}
