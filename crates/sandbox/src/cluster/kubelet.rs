//! The simulated kubelets: node status, and each pod's life on its node — Pending → Running →
//! Ready after its startup delay; on deletion Ready goes false at once, the preStop hook and
//! the app's shutdown run (capped by the grace period, as the kubelet's kill does), then the
//! pod is removed with grace 0, which is what a kubelet's final delete does. Pods that are not
//! restarted (Jobs') finish instead of becoming Ready.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::{Value, json};

use super::objects::{self, deleting, duration_annotation};
use super::{Pass, pods};
use crate::api::resources::by_kind;
use crate::api::store::{Part, now};

/// Annotation: simulated time from start to Ready (`5s`).
pub const STARTUP_DELAY: &str = "sandbox.quiesce.io/startup-delay";
/// Annotation: how long an exec or httpGet preStop hook takes (`10s`).
pub const PRESTOP_DELAY: &str = "sandbox.quiesce.io/prestop-delay";
/// Annotation: how long the app takes to exit after SIGTERM (`3s`).
pub const SHUTDOWN_DELAY: &str = "sandbox.quiesce.io/shutdown-delay";
/// Annotation (`"true"`): a runtime outside the sandbox runs this pod's containers, as a real
/// node's kubelet runs them — `quiesce lab` starts each one as an OS process. The simulated
/// kubelet still binds it (Running, pod IP) and turns it unready when it is deleted, but leaves
/// Ready to that runtime's readiness probe and the final delete (grace 0) to its containers'
/// exit, instead of timing either.
pub const EXTERNAL_RUNTIME: &str = "sandbox.quiesce.io/external-runtime";
/// Annotation (`"true"`): the image never pulls, so the pod stays Pending in ImagePullBackOff,
/// as a kubelet reports it (phase Pending, container waiting with that reason).
pub const IMAGE_PULL_FAILS: &str = "sandbox.quiesce.io/image-pull-fails";

/// Keeps every node Ready with capacity, the status a kubelet posts.
pub(super) fn nodes(pass: &mut Pass<'_>) {
    let nodes = by_kind("", "Node");
    for (i, node) in pass.all(nodes).into_iter().enumerate() {
        let ready = node["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready");
        if ready && !node["status"]["allocatable"].is_null() {
            continue;
        }
        pass.update(nodes, &node, Part::Status, |n| {
            let status = &mut n["status"];
            if status["capacity"].is_null() {
                status["capacity"] = json!({"cpu": "4", "memory": "16Gi", "pods": "110"});
            }
            if status["allocatable"].is_null() {
                status["allocatable"] = status["capacity"].clone();
            }
            let t = now();
            status["conditions"] = json!([{"type": "Ready", "status": "True", "reason": "KubeletReady",
                "message": "kubelet is posting ready status", "lastHeartbeatTime": t, "lastTransitionTime": t}]);
            status["addresses"] = json!([{"type": "InternalIP", "address": format!("10.0.{}.{}", i / 250, i % 250 + 1)},
                {"type": "Hostname", "address": objects::name(&node)}]);
            status["nodeInfo"] = json!({"kubeletVersion": "v1.33.0-sandbox", "osImage": "quiesce sandbox",
                "kernelVersion": "simulated", "containerRuntimeVersion": "sandbox://1", "architecture": "amd64",
                "operatingSystem": "linux"});
        });
    }
}

fn startup_delay(pass: &Pass<'_>, pod: &Value) -> Duration {
    let probe = pod["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["readinessProbe"]["initialDelaySeconds"].as_u64())
        .max()
        .map(Duration::from_secs);
    duration_annotation(pod, STARTUP_DELAY)
        .or(probe)
        .unwrap_or(pass.opts.startup_delay)
}

/// How long termination takes: preStop (sleep action or annotation), then the app's shutdown,
/// never longer than the grace period.
fn termination(pod: &Value) -> Duration {
    let sleep = pod["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["lifecycle"]["preStop"]["sleep"]["seconds"].as_u64())
        .max()
        .map(Duration::from_secs);
    let prestop = sleep
        .or_else(|| duration_annotation(pod, PRESTOP_DELAY))
        .unwrap_or_default();
    let shutdown = duration_annotation(pod, SHUTDOWN_DELAY).unwrap_or_default();
    let grace = pod["metadata"]["deletionGracePeriodSeconds"]
        .as_u64()
        .map_or(Duration::from_secs(30), Duration::from_secs);
    (prestop + shutdown).min(grace)
}

fn ready_condition(ready: bool) -> Value {
    let s = if ready { "True" } else { "False" };
    let t = now();
    json!([
        {"type": "Initialized", "status": "True", "lastTransitionTime": t},
        {"type": "Ready", "status": s, "lastTransitionTime": t},
        {"type": "ContainersReady", "status": s, "lastTransitionTime": t},
        {"type": "PodScheduled", "status": "True", "lastTransitionTime": t},
    ])
}

/// One status per container of the pod, as the kubelet reports them: `state` is the
/// container's state object (`running`, `waiting`, `terminated`) for the container given.
fn statuses_of(pod: &Value, ready: bool, started: bool, state: impl Fn(&Value) -> Value) -> Value {
    let statuses: Vec<Value> = pod["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            json!({"name": c["name"], "image": c["image"], "imageID": "", "ready": ready,
            "started": started, "restartCount": 0, "state": state(c)})
        })
        .collect();
    json!(statuses)
}

fn container_statuses(pod: &Value, ready: bool) -> Value {
    let t = now();
    statuses_of(pod, ready, true, |_| json!({"running": {"startedAt": t}}))
}

/// A pod whose containers are not restarted (a Job's) runs to completion: its run lasts its
/// startup delay, then every container exits 0 and the pod is Succeeded, as the kubelet
/// reports a finished pod.
fn runs_to_completion(pod: &Value) -> bool {
    matches!(
        pod["spec"]["restartPolicy"].as_str(),
        Some("Never" | "OnFailure")
    )
}

fn complete(pod: &mut Value) {
    let t = now();
    let started_at = pod["status"]["startTime"].clone();
    let statuses = statuses_of(pod, false, false, |_| {
        json!({"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": started_at,
        "finishedAt": t}})
    });
    pod["status"]["phase"] = json!("Succeeded");
    pod["status"]["conditions"] = ready_condition(false);
    pod["status"]["containerStatuses"] = statuses;
}

fn image_pull_back_off(pod: &Value) -> Value {
    statuses_of(pod, false, false, |c| {
        json!({"waiting": {"reason": "ImagePullBackOff",
        "message": format!("Back-off pulling image {}", c["image"])}})
    })
}

/// Drives every bound pod through its lifecycle.
pub(super) fn pod_lifecycles(pass: &mut Pass<'_>) {
    let mut node_names = HashSet::new();
    pass.store.for_each(by_kind("", "Node"), |n| {
        node_names.insert(objects::name(n).to_string());
    });
    let now_instant = pass.now;
    for pod in pass.matching(pods(), needs_kubelet) {
        let Some(node) = pod["spec"]["nodeName"].as_str() else {
            continue;
        };
        if !node_names.contains(node) {
            continue;
        }
        let uid = objects::uid(&pod).to_string();
        let external = pod["metadata"]["annotations"][EXTERNAL_RUNTIME] == "true";
        if deleting(&pod) {
            pass.state.ready_at.remove(&uid);
            let gone_at = *pass
                .state
                .gone_at
                .entry(uid.clone())
                .or_insert_with(|| now_instant + pass.opts.time_scale.real(termination(&pod)));
            if crate::api::eviction::is_ready(&pod) {
                pass.update(pods(), &pod, Part::Status, |p| {
                    p["status"]["conditions"] = ready_condition(false);
                    p["status"]["containerStatuses"] = container_statuses(p, false);
                });
            }
            if external {
                continue;
            }
            if now_instant >= gone_at {
                pass.delete(pods(), &pod, Some(0));
                pass.state.gone_at.remove(&uid);
            } else {
                pass.wake_at(gone_at);
            }
            continue;
        }
        if objects::terminal(&pod) {
            continue;
        }
        match pod["status"]["phase"].as_str() {
            Some("Running") => {
                if external || crate::api::eviction::is_ready(&pod) {
                    continue;
                }
                let delay = pass.opts.time_scale.real(startup_delay(pass, &pod));
                let ready_at = *pass
                    .state
                    .ready_at
                    .entry(uid)
                    .or_insert(now_instant + delay);
                if now_instant >= ready_at && runs_to_completion(&pod) {
                    pass.update(pods(), &pod, Part::Status, complete);
                } else if now_instant >= ready_at {
                    pass.update(pods(), &pod, Part::Status, |p| {
                        p["status"]["conditions"] = ready_condition(true);
                        p["status"]["containerStatuses"] = container_statuses(p, true);
                    });
                } else {
                    pass.wake_at(ready_at);
                }
            }
            _ if pod["metadata"]["annotations"][IMAGE_PULL_FAILS] == "true" => {
                if pod["status"]["containerStatuses"].is_null() {
                    pass.update(pods(), &pod, Part::Status, |p| {
                        p["status"]["phase"] = json!("Pending");
                        p["status"]["conditions"] = ready_condition(false);
                        p["status"]["containerStatuses"] = image_pull_back_off(p);
                    });
                }
            }
            _ => {
                pass.state.next_ip += 1;
                let n = pass.state.next_ip;
                let ip = format!("10.244.{}.{}", (n / 250) % 250, n % 250 + 1);
                let ready_at = now_instant + pass.opts.time_scale.real(startup_delay(pass, &pod));
                pass.state.ready_at.insert(uid, ready_at);
                pass.wake_at(ready_at);
                pass.update(pods(), &pod, Part::Status, |p| {
                    p["status"]["phase"] = json!("Running");
                    p["status"]["podIP"] = json!(ip);
                    p["status"]["podIPs"] = json!([{"ip": ip}]);
                    p["status"]["hostIP"] = json!("10.0.0.1");
                    p["status"]["startTime"] = json!(now());
                    p["status"]["conditions"] = ready_condition(false);
                    p["status"]["containerStatuses"] = container_statuses(p, false);
                });
            }
        }
    }
    forget_gone(pass);
}

/// Whether a pod may need its kubelet: not one bound, Running and Ready (or left to an
/// external runtime), and not one that has finished, unless it is being deleted.
fn needs_kubelet(pod: &Value) -> bool {
    if pod["spec"]["nodeName"].is_null() {
        return false;
    }
    if deleting(pod) {
        return true;
    }
    let settled = objects::terminal(pod)
        || pod["status"]["phase"] == "Running"
            && (pod["metadata"]["annotations"][EXTERNAL_RUNTIME] == "true"
                || crate::api::eviction::is_ready(pod));
    !settled
}

/// Drops the timers of pods that no longer exist.
fn forget_gone(pass: &mut Pass<'_>) {
    let state = &mut *pass.state;
    if state.ready_at.is_empty() && state.gone_at.is_empty() {
        return;
    }
    let mut live = HashSet::new();
    pass.store.for_each(pods(), |p| {
        let uid = objects::uid(p);
        if state.ready_at.contains_key(uid) || state.gone_at.contains_key(uid) {
            live.insert(uid.to_string());
        }
    });
    state.ready_at.retain(|uid, _| live.contains(uid));
    state.gone_at.retain(|uid, _| live.contains(uid));
}
