//! Columns of the everyday kinds beyond nodes, pods and deployments, as upstream's
//! `pkg/printers/internalversion/printers.go` defines them (the default, non-wide columns).

use serde_json::{Value, json};

use super::{age, col};

/// The column definitions for `plural`, or None for a kind printed as Name/Age.
pub(super) fn columns(plural: &str) -> Option<Vec<Value>> {
    let names: &[&str] = match plural {
        "namespaces" => &["Status"],
        "services" => &["Type", "Cluster-IP", "External-IP", "Port(s)"],
        "configmaps" => &["Data"],
        "secrets" => &["Type", "Data"],
        "serviceaccounts" => &["Secrets"],
        "replicasets" => &["Desired", "Current", "Ready"],
        "statefulsets" => &["Ready"],
        "daemonsets" => &[
            "Desired",
            "Current",
            "Ready",
            "Up-to-date",
            "Available",
            "Node Selector",
        ],
        "jobs" => &["Status", "Completions", "Duration"],
        "cronjobs" => &["Schedule", "Timezone", "Suspend", "Active", "Last Schedule"],
        "horizontalpodautoscalers" => &["Reference", "Targets", "MinPods", "MaxPods", "Replicas"],
        "poddisruptionbudgets" => &["Min Available", "Max Unavailable", "Allowed Disruptions"],
        _ => return None,
    };
    let mut columns = vec![col("Name", "string", 0)];
    columns.extend(names.iter().map(|n| col(n, "string", 0)));
    columns.push(col("Age", "string", 0));
    Some(columns)
}

fn count(v: &Value) -> String {
    v.as_i64().unwrap_or(0).to_string()
}

fn or_none(v: &Value) -> String {
    match v {
        Value::String(s) if !s.is_empty() => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => "<none>".into(),
    }
}

fn entries(v: &Value) -> usize {
    v.as_object().map_or(0, |m| m.len())
}

/// `80/TCP,443:30443/TCP`.
fn ports(svc: &Value) -> String {
    let ports: Vec<String> = svc["spec"]["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            let protocol = p["protocol"].as_str().unwrap_or("TCP");
            match p["nodePort"].as_i64().filter(|n| *n > 0) {
                Some(node) => format!("{}:{node}/{protocol}", p["port"]),
                None => format!("{}/{protocol}", p["port"]),
            }
        })
        .collect();
    if ports.is_empty() {
        "<none>".into()
    } else {
        ports.join(",")
    }
}

fn external_ip(svc: &Value) -> String {
    let ingress: Vec<&str> = svc["status"]["loadBalancer"]["ingress"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["ip"].as_str().or_else(|| i["hostname"].as_str()))
        .collect();
    match svc["spec"]["type"].as_str() {
        Some("LoadBalancer") if ingress.is_empty() => "<pending>".into(),
        Some("LoadBalancer") => ingress.join(","),
        Some("ExternalName") => or_none(&svc["spec"]["externalName"]),
        _ => "<none>".into(),
    }
}

fn condition_true(obj: &Value, kind: &str) -> bool {
    obj["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == kind && c["status"] == "True")
}

fn job_status(job: &Value) -> &'static str {
    if condition_true(job, "Complete") {
        "Complete"
    } else if condition_true(job, "Failed") {
        "Failed"
    } else if job["spec"]["suspend"] == true {
        "Suspended"
    } else {
        "Running"
    }
}

/// `3s`, `2m5s`: from start to completion, or to now while running.
fn job_duration(job: &Value) -> String {
    let time = |v: &Value| {
        v.as_str()
            .and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok())
    };
    let Some(start) = time(&job["status"]["startTime"]) else {
        return String::new();
    };
    let end =
        time(&job["status"]["completionTime"]).unwrap_or_else(k8s_openapi::jiff::Timestamp::now);
    let secs = (end.as_second() - start.as_second()).max(0);
    if secs < 120 {
        format!("{secs}s")
    } else {
        format!("{}m{}s", secs / 60, secs % 60)
    }
}

fn hpa_targets(hpa: &Value) -> String {
    let targets: Vec<String> = hpa["spec"]["metrics"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["resource"]["target"]["averageUtilization"].as_i64())
        .map(|t| format!("cpu: <unknown>/{t}%"))
        .collect();
    if targets.is_empty() {
        "<none>".into()
    } else {
        targets.join(", ")
    }
}

/// The cells of `obj` after its name, for a kind [`columns`] knows.
pub(super) fn cells(plural: &str, obj: &Value) -> Option<Vec<Value>> {
    let (spec, status) = (&obj["spec"], &obj["status"]);
    let cells: Vec<String> = match plural {
        "namespaces" => vec![or_none(&status["phase"])],
        "services" => vec![
            or_none(&spec["type"]),
            or_none(&spec["clusterIP"]),
            external_ip(obj),
            ports(obj),
        ],
        "configmaps" => vec![(entries(&obj["data"]) + entries(&obj["binaryData"])).to_string()],
        "secrets" => vec![or_none(&obj["type"]), entries(&obj["data"]).to_string()],
        "serviceaccounts" => vec![obj["secrets"].as_array().map_or(0, Vec::len).to_string()],
        "replicasets" => vec![
            count(&spec["replicas"]),
            count(&status["replicas"]),
            count(&status["readyReplicas"]),
        ],
        "statefulsets" => vec![format!(
            "{}/{}",
            count(&status["readyReplicas"]),
            count(&spec["replicas"])
        )],
        "daemonsets" => vec![
            count(&status["desiredNumberScheduled"]),
            count(&status["currentNumberScheduled"]),
            count(&status["numberReady"]),
            count(&status["updatedNumberScheduled"]),
            count(&status["numberAvailable"]),
            spec["template"]["spec"]["nodeSelector"]
                .as_object()
                .filter(|m| !m.is_empty())
                .map_or("<none>".into(), |m| {
                    m.iter()
                        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                        .collect::<Vec<_>>()
                        .join(",")
                }),
        ],
        "jobs" => vec![
            job_status(obj).into(),
            format!(
                "{}/{}",
                count(&status["succeeded"]),
                count(&spec["completions"])
            ),
            job_duration(obj),
        ],
        "cronjobs" => vec![
            or_none(&spec["schedule"]),
            or_none(&spec["timeZone"]),
            if spec["suspend"] == true {
                "True"
            } else {
                "False"
            }
            .into(),
            status["active"].as_array().map_or(0, Vec::len).to_string(),
            or_none(&status["lastScheduleTime"]),
        ],
        "horizontalpodautoscalers" => vec![
            format!(
                "{}/{}",
                spec["scaleTargetRef"]["kind"].as_str().unwrap_or_default(),
                spec["scaleTargetRef"]["name"].as_str().unwrap_or_default()
            ),
            hpa_targets(obj),
            count(&spec["minReplicas"]),
            count(&spec["maxReplicas"]),
            count(&status["currentReplicas"]),
        ],
        "poddisruptionbudgets" => vec![
            or_none(&spec["minAvailable"]).replace("<none>", "N/A"),
            or_none(&spec["maxUnavailable"]).replace("<none>", "N/A"),
            count(&status["disruptionsAllowed"]),
        ],
        _ => return None,
    };
    let mut row = vec![obj["metadata"]["name"].clone()];
    row.extend(cells.into_iter().map(Value::String));
    row.push(json!(age(obj)));
    Some(row)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::cells;

    #[test]
    fn services_and_jobs_read_as_kubectl_prints_them() {
        let svc = json!({"metadata": {"name": "edge"}, "spec": {"type": "LoadBalancer",
            "clusterIP": "10.96.0.9", "ports": [{"port": 80, "protocol": "TCP"},
            {"port": 443, "nodePort": 30443, "protocol": "TCP"}]}});
        let row = cells("services", &svc).unwrap();
        assert_eq!(
            row[..5],
            [
                json!("edge"),
                json!("LoadBalancer"),
                json!("10.96.0.9"),
                json!("<pending>"),
                json!("80/TCP,443:30443/TCP")
            ]
        );
        let job = json!({"metadata": {"name": "once"}, "spec": {"completions": 2},
            "status": {"succeeded": 2, "startTime": "2026-01-01T00:00:00Z",
                       "completionTime": "2026-01-01T00:02:05Z",
                       "conditions": [{"type": "Complete", "status": "True"}]}});
        let row = cells("jobs", &job).unwrap();
        assert_eq!(row[1..4], [json!("Complete"), json!("2/2"), json!("2m5s")]);
    }
}
