//! The EndpointSlice controller: one slice per Service with a selector, its endpoints' conditions
//! as upstream sets them since KEP-1672 — ready = Ready and not terminating, serving = Ready,
//! terminating = being deleted — so clients that balance over slices see a pod leave the
//! moment its deletion starts.

use serde_json::{Value, json};

use super::objects::{self, deleting};
use super::{Pass, pods};
use crate::api::eviction::is_ready;
use crate::api::resources::by_kind;
use crate::api::selector::LabelSelector;
use crate::api::store::Part;

fn target_port(service_port: &Value, pod: &Value) -> i64 {
    match &service_port["targetPort"] {
        Value::Number(n) => n.as_i64().unwrap_or(0),
        Value::String(name) => pod["spec"]["containers"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|c| c["ports"].as_array().into_iter().flatten())
            .find(|p| p["name"] == json!(name))
            .and_then(|p| p["containerPort"].as_i64())
            .unwrap_or(0),
        _ => service_port["port"].as_i64().unwrap_or(0),
    }
}

/// Reconciles one slice per selecting Service.
pub(super) fn reconcile(pass: &mut Pass<'_>) {
    let slices = by_kind("discovery.k8s.io", "EndpointSlice");
    let all_pods = pass.all(pods());
    let nodes = pass.all(by_kind("", "Node"));
    let existing = pass.all(slices);
    for svc in pass.all(by_kind("", "Service")) {
        if svc["spec"]["selector"]
            .as_object()
            .is_none_or(|s| s.is_empty())
        {
            continue;
        }
        let ns = objects::namespace(&svc);
        let selector = LabelSelector::from_object(&json!({"matchLabels": svc["spec"]["selector"]}));
        let publish_not_ready = svc["spec"]["publishNotReadyAddresses"] == true;
        let members: Vec<&Value> = all_pods
            .iter()
            .filter(|p| objects::namespace(p) == ns && selector.matches(&p["metadata"]["labels"]))
            .filter(|p| p["status"]["podIP"].is_string() && !objects::terminal(p))
            .collect();
        let endpoints: Vec<Value> = members
            .iter()
            .map(|p| {
                let node = p["spec"]["nodeName"].as_str().unwrap_or_default();
                let zone = nodes
                    .iter()
                    .find(|n| objects::name(n) == node)
                    .map(|n| n["metadata"]["labels"]["topology.kubernetes.io/zone"].clone())
                    .unwrap_or(Value::Null);
                let serving = is_ready(p) || publish_not_ready;
                json!({"addresses": [p["status"]["podIP"]], "nodeName": node, "zone": zone,
                    "conditions": {"ready": serving && !deleting(p), "serving": serving, "terminating": deleting(p)},
                    "targetRef": {"kind": "Pod", "namespace": ns, "name": p["metadata"]["name"], "uid": p["metadata"]["uid"]}})
            })
            .collect();
        let ports: Vec<Value> = svc["spec"]["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|sp| {
                let port = members
                    .first()
                    .map_or_else(|| sp["port"].as_i64().unwrap_or(0), |p| target_port(sp, p));
                json!({"name": sp["name"].as_str().unwrap_or_default(), "port": port,
                    "protocol": sp["protocol"].as_str().unwrap_or("TCP")})
            })
            .collect();
        let name = objects::name(&svc).to_string();
        match existing
            .iter()
            .find(|s| objects::namespace(s) == ns && objects::name(s) == name)
        {
            Some(slice) => pass.update(slices, slice, Part::Main, |s| {
                s["endpoints"] = json!(endpoints);
                s["ports"] = json!(ports);
            }),
            None => pass.create(
                slices,
                ns,
                json!({
                "metadata": {"name": name, "labels": {"kubernetes.io/service-name": name,
                    "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"},
                    "ownerReferences": objects::owner_ref(&svc)},
                "addressType": "IPv4", "endpoints": endpoints, "ports": ports}),
            ),
        }
    }
}
