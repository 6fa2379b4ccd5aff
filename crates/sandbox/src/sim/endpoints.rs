//! Core `Endpoints`, mirrored from the EndpointSlices the EndpointSlice controller writes, for
//! the clients that still read them (older ingress controllers, `kubectl describe` of old
//! versions). The result is what upstream's endpoints controller (`pkg/controller/endpoint`)
//! computes from the same pods: ready endpoints in `addresses`, not-ready ones in
//! `notReadyAddresses`, terminating ones left out (a ready terminating endpoint exists only
//! with `publishNotReadyAddresses`, and then stays), one subset with the slice's ports, and the
//! `endpointslice.kubernetes.io/skip-mirror` label upstream sets so the mirroring controller
//! leaves them alone.

use std::time::Duration;

use k8s_openapi::api::core::v1::{EndpointAddress, EndpointPort, EndpointSubset, Endpoints};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client, ResourceExt};

use super::watches::Watches;
use super::writes;
use crate::time::TimeScale;

const SERVICE_LABEL: &str = "kubernetes.io/service-name";
const SKIP_MIRROR: &str = "endpointslice.kubernetes.io/skip-mirror";

/// Runs the controller until the task is dropped (nothing here waits on simulated time).
pub async fn run(client: Client, _scale: TimeScale) {
    let mut watches = Watches::new(client.clone());
    let slices: Store<EndpointSlice> = watches.store();
    let endpoints: Store<Endpoints> = watches.store();
    watches.ready().await;
    loop {
        pass(&client, &slices, &endpoints).await;
        watches.changed(None::<Duration>).await;
    }
}

async fn pass(client: &Client, slices: &Store<EndpointSlice>, endpoints: &Store<Endpoints>) {
    let mut mirrored = std::collections::HashSet::new();
    for slice in slices.state() {
        let Some(service) = slice.labels().get(SERVICE_LABEL).cloned() else {
            continue;
        };
        let namespace = slice.namespace().unwrap_or_default();
        mirrored.insert((namespace.clone(), service.clone()));
        let mut want = mirror(&slice, &service);
        let api: Api<Endpoints> = Api::namespaced(client.clone(), &namespace);
        match endpoints.get(&ObjectRef::new(&service).within(&namespace)) {
            None => {
                writes::create(&api, &want).await;
            }
            Some(existing) if existing.subsets != want.subsets => {
                want.metadata.resource_version = existing.metadata.resource_version.clone();
                writes::replace(&api, &want).await;
            }
            Some(_) => {}
        }
    }
    for stale in endpoints.state() {
        let key = (stale.namespace().unwrap_or_default(), stale.name_any());
        if stale.labels().contains_key(SKIP_MIRROR) && !mirrored.contains(&key) {
            let api: Api<Endpoints> = Api::namespaced(client.clone(), &key.0);
            writes::delete(&api, stale.as_ref()).await;
        }
    }
}

fn mirror(slice: &EndpointSlice, service: &str) -> Endpoints {
    let mut ready = Vec::new();
    let mut not_ready = Vec::new();
    for endpoint in &slice.endpoints {
        let conditions = endpoint.conditions.clone().unwrap_or_default();
        for ip in &endpoint.addresses {
            let address = EndpointAddress {
                ip: ip.clone(),
                hostname: endpoint.hostname.clone(),
                node_name: endpoint.node_name.clone(),
                target_ref: endpoint.target_ref.clone(),
            };
            if conditions.ready == Some(true) {
                ready.push(address);
            } else if conditions.terminating != Some(true) {
                not_ready.push(address);
            }
        }
    }
    let ports: Vec<EndpointPort> = slice
        .ports
        .iter()
        .flatten()
        .map(|p| EndpointPort {
            name: p.name.clone().filter(|n| !n.is_empty()),
            port: p.port.unwrap_or(0),
            protocol: p.protocol.clone(),
            app_protocol: p.app_protocol.clone(),
        })
        .collect();
    let subsets = (!ready.is_empty() || !not_ready.is_empty()).then(|| {
        vec![EndpointSubset {
            addresses: Some(ready).filter(|a| !a.is_empty()),
            not_ready_addresses: Some(not_ready).filter(|a| !a.is_empty()),
            ports: Some(ports).filter(|p| !p.is_empty()),
        }]
    });
    Endpoints {
        metadata: ObjectMeta {
            name: Some(service.to_string()),
            namespace: slice.namespace(),
            labels: Some([(SKIP_MIRROR.to_string(), "true".to_string())].into()),
            ..ObjectMeta::default()
        },
        subsets,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::mirror;

    #[test]
    fn ready_not_ready_and_terminating_endpoints_land_where_the_endpoints_controller_puts_them() {
        let endpoint = |ip: &str, ready: bool, terminating: bool| {
            json!({"addresses": [ip], "conditions": {"ready": ready, "serving": ready,
                "terminating": terminating}, "nodeName": "node-1"})
        };
        let slice = serde_json::from_value(json!({
            "metadata": {"name": "web-abcde", "namespace": "play"},
            "addressType": "IPv4",
            "endpoints": [endpoint("10.0.0.1", true, false), endpoint("10.0.0.2", false, false),
                          endpoint("10.0.0.3", false, true)],
            "ports": [{"name": "", "port": 8080, "protocol": "TCP"}],
        }))
        .unwrap();
        let endpoints = serde_json::to_value(mirror(&slice, "web")).unwrap();
        assert_eq!(
            endpoints["subsets"],
            json!([{"addresses": [{"ip": "10.0.0.1", "nodeName": "node-1"}],
                    "notReadyAddresses": [{"ip": "10.0.0.2", "nodeName": "node-1"}],
                    "ports": [{"port": 8080, "protocol": "TCP"}]}])
        );
        assert_eq!(endpoints["metadata"]["name"], "web");
    }
}
