//! Defaults and status resets the real registries apply on create (upstream
//! `pkg/apis/*/v1/defaults.go` and each strategy's PrepareForCreate), limited to the fields
//! clients of the sandbox read.

use serde_json::{Value, json};

use super::resources::Resource;

fn default(obj: &mut Value, path: &[&str], value: Value) {
    let mut cur = obj;
    for part in &path[..path.len() - 1] {
        if !cur[*part].is_object() {
            cur[*part] = json!({});
        }
        cur = &mut cur[*part];
    }
    let last = path[path.len() - 1];
    if cur[last].is_null() {
        cur[last] = value;
    }
}

/// Applies create-time defaults for `r` to `obj`.
pub fn on_create(r: &Resource, obj: &mut Value) {
    if !obj["metadata"].is_object() {
        obj["metadata"] = json!({});
    }
    match (r.group, r.plural) {
        ("", "pods") => {
            obj["status"] = json!({"phase": "Pending"});
            pod_spec(&mut obj["spec"]);
        }
        ("", "namespaces") => obj["status"] = json!({"phase": "Active"}),
        ("", "services") => {
            default(obj, &["spec", "type"], json!("ClusterIP"));
            default(obj, &["spec", "sessionAffinity"], json!("None"));
            if obj["spec"]["clusterIP"].is_null() {
                let n = rand::random::<u16>();
                obj["spec"]["clusterIP"] = json!(format!("10.96.{}.{}", n >> 8, (n & 0xff).max(1)));
            }
            obj["status"] = json!({"loadBalancer": {}});
        }
        ("apps", "deployments") => {
            default(obj, &["spec", "replicas"], json!(1));
            default(obj, &["spec", "revisionHistoryLimit"], json!(10));
            default(obj, &["spec", "progressDeadlineSeconds"], json!(600));
            default(obj, &["spec", "strategy", "type"], json!("RollingUpdate"));
            if obj["spec"]["strategy"]["type"] == "RollingUpdate" {
                default(
                    obj,
                    &["spec", "strategy", "rollingUpdate", "maxSurge"],
                    json!("25%"),
                );
                default(
                    obj,
                    &["spec", "strategy", "rollingUpdate", "maxUnavailable"],
                    json!("25%"),
                );
            }
            workload(obj);
        }
        ("apps", "statefulsets") => {
            default(obj, &["spec", "replicas"], json!(1));
            default(obj, &["spec", "podManagementPolicy"], json!("OrderedReady"));
            default(
                obj,
                &["spec", "updateStrategy", "type"],
                json!("RollingUpdate"),
            );
            workload(obj);
        }
        ("apps", "replicasets") => {
            default(obj, &["spec", "replicas"], json!(1));
            workload(obj);
        }
        ("apps", "daemonsets") => {
            default(
                obj,
                &["spec", "updateStrategy", "type"],
                json!("RollingUpdate"),
            );
            workload(obj);
        }
        ("policy", "poddisruptionbudgets") => {
            obj["status"] = json!({"disruptionsAllowed": 0, "currentHealthy": 0, "desiredHealthy": 0, "expectedPods": 0});
        }
        _ => {}
    }
}

fn workload(obj: &mut Value) {
    obj["status"] = json!({});
    pod_spec(&mut obj["spec"]["template"]["spec"]);
}

fn pod_spec(spec: &mut Value) {
    if !spec.is_object() {
        *spec = json!({});
    }
    default(spec, &["terminationGracePeriodSeconds"], json!(30));
    default(spec, &["restartPolicy"], json!("Always"));
    default(spec, &["dnsPolicy"], json!("ClusterFirst"));
    default(spec, &["schedulerName"], json!("default-scheduler"));
    if spec["containers"].is_null() {
        spec["containers"] = json!([]);
    }
}
