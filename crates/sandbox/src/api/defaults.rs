//! Defaults and status resets the real registries apply on create (upstream
//! `pkg/apis/*/v1/defaults.go` and each strategy's PrepareForCreate), limited to the fields
//! clients of the sandbox read.

use serde_json::{Value, json};

use base64::Engine;

use super::resources::Resource;
use super::status::ApiError;

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

/// What every write does to an object, create or update: a Secret's `stringData` is merged
/// into `data` (upstream's v1 → internal Secret conversion does it on every decode).
pub fn on_write(r: &Resource, obj: &mut Value) {
    if (r.group, r.plural) != ("", "secrets") {
        return;
    }
    let Some(Value::Object(strings)) = obj.as_object_mut().and_then(|o| o.remove("stringData"))
    else {
        return;
    };
    if !obj["data"].is_object() {
        obj["data"] = json!({});
    }
    for (key, value) in strings {
        let text = value.as_str().unwrap_or_default();
        obj["data"][key] = json!(base64::engine::general_purpose::STANDARD.encode(text));
    }
}

/// Applies create-time defaults for `r` to `obj`, whose uid will be `uid`; refuses what the
/// defaults cannot make valid (a Job whose pods would restart forever).
pub fn on_create(r: &Resource, obj: &mut Value, uid: &str) -> Result<(), ApiError> {
    if !obj["metadata"].is_object() {
        obj["metadata"] = json!({});
    }
    on_write(r, obj);
    match (r.group, r.plural) {
        ("", "secrets") => default(obj, &["type"], json!("Opaque")),
        ("", "namespaces") => {
            obj["status"] = json!({"phase": "Active"});
            default(obj, &["spec", "finalizers"], json!(["kubernetes"]));
        }
        ("batch", "jobs") => job(obj, uid)?,
        (super::custom::GROUP, "customresourcedefinitions") => {
            obj["status"] = super::custom::initial_status(obj);
        }
        ("batch", "cronjobs") => {
            default(obj, &["spec", "concurrencyPolicy"], json!("Allow"));
            default(obj, &["spec", "suspend"], json!(false));
            default(obj, &["spec", "successfulJobsHistoryLimit"], json!(3));
            default(obj, &["spec", "failedJobsHistoryLimit"], json!(1));
            obj["status"] = json!({});
            schedule(obj)?;
            let template = &mut obj["spec"]["jobTemplate"];
            job_spec(
                template,
                "spec.jobTemplate.spec.template.spec.restartPolicy",
            )?;
        }
        ("autoscaling", "horizontalpodautoscalers") => {
            default(obj, &["spec", "minReplicas"], json!(1));
            if obj["spec"]["metrics"].is_null() {
                obj["spec"]["metrics"] = json!([{"type": "Resource", "resource": {"name": "cpu",
                    "target": {"type": "Utilization", "averageUtilization": 80}}}]);
            }
            obj["status"] = json!({"currentReplicas": 0, "desiredReplicas": 0});
        }
        ("", "pods") => {
            obj["status"] = json!({"phase": "Pending"});
            pod_spec(&mut obj["spec"]);
        }
        ("", "services") => {
            default(obj, &["spec", "type"], json!("ClusterIP"));
            default(obj, &["spec", "sessionAffinity"], json!("None"));
            if obj["spec"]["clusterIP"].is_null() {
                let n = rand::random::<u16>();
                obj["spec"]["clusterIP"] = json!(format!("10.96.{}.{}", n >> 8, (n & 0xff).max(1)));
            }
            node_ports(obj);
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
    Ok(())
}

/// A Job's defaults (upstream `pkg/apis/batch/v1/defaults.go`) and its generated selector
/// (`pkg/registry/batch/job/strategy.go` generateSelector): the pods carry the Job's uid and
/// name as labels, and the selector matches the uid.
fn job(obj: &mut Value, uid: &str) -> Result<(), ApiError> {
    let name = obj["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    job_spec(obj, "spec.template.spec.restartPolicy")?;
    obj["status"] = json!({});
    let manual = obj["spec"]["manualSelector"].as_bool().unwrap_or(false);
    if !manual {
        let labels = json!({
            "batch.kubernetes.io/controller-uid": uid, "batch.kubernetes.io/job-name": name,
            "controller-uid": uid, "job-name": name,
        });
        obj["spec"]["selector"] =
            json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}});
        let template_labels = &mut obj["spec"]["template"]["metadata"]["labels"];
        if !template_labels.is_object() {
            *template_labels = json!({});
        }
        for (k, v) in labels.as_object().into_iter().flatten() {
            template_labels[k] = v.clone();
        }
    }
    Ok(())
}

/// The spec defaults every Job gets, its own or a CronJob's template; `field` names the
/// restart policy in errors.
fn job_spec(job: &mut Value, field: &str) -> Result<(), ApiError> {
    let spec = &mut job["spec"];
    if spec["completions"].is_null() && spec["parallelism"].is_null() {
        spec["completions"] = json!(1);
    }
    default(job, &["spec", "parallelism"], json!(1));
    default(job, &["spec", "backoffLimit"], json!(6));
    default(job, &["spec", "completionMode"], json!("NonIndexed"));
    default(job, &["spec", "suspend"], json!(false));
    let pod = &mut job["spec"]["template"]["spec"];
    if !matches!(pod["restartPolicy"].as_str(), Some("Never" | "OnFailure")) {
        return Err(ApiError::invalid(
            "Job",
            "",
            field,
            r#"Required value: valid values: "OnFailure", "Never""#,
        ));
    }
    pod_spec(pod);
    Ok(())
}

/// A CronJob's schedule must parse, as upstream's validation requires (`spec.schedule:
/// Invalid value`); the reason is the parser's (croner's wording, not robfig/cron's).
fn schedule(cronjob: &Value) -> Result<(), ApiError> {
    let name = cronjob["metadata"]["name"].as_str().unwrap_or_default();
    let Some(text) = cronjob["spec"]["schedule"].as_str() else {
        return Err(ApiError::invalid(
            "CronJob.batch",
            name,
            "spec.schedule",
            "Required value",
        ));
    };
    crate::sim::schedule::Schedule::parse(text).map_err(|e| {
        ApiError::invalid(
            "CronJob.batch",
            name,
            "spec.schedule",
            &format!("Invalid value: {text:?}: {e}"),
        )
    })?;
    Ok(())
}

/// NodePort and LoadBalancer services get a node port per port from upstream's default range
/// (30000-32767) where none was asked for; 0 is Go's "unset", which protobuf bodies carry.
fn node_ports(svc: &mut Value) {
    if !matches!(
        svc["spec"]["type"].as_str(),
        Some("NodePort" | "LoadBalancer")
    ) {
        return;
    }
    for port in svc["spec"]["ports"].as_array_mut().into_iter().flatten() {
        if port["nodePort"].as_i64().unwrap_or(0) == 0 {
            port["nodePort"] = json!(30000 + rand::random::<u16>() % 2768);
        }
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
