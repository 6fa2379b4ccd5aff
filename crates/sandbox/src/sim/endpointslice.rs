//! The EndpointSlice controller for Services with a selector, as upstream's
//! `pkg/controller/endpointslice` (reconciler and `utils.go` podToEndpoint), simplified to one
//! slice per Service: label `kubernetes.io/service-name`, addressType IPv4, ports from each
//! Service port's targetPort resolved against the first selected pod's container ports.
//!
//! Endpoint conditions follow upstream exactly:
//! `serving = publishNotReadyAddresses || podReady`, `terminating = deletionTimestamp set`,
//! `ready = publishNotReadyAddresses || (serving && !terminating)`. Pods without an IP and
//! finished pods (Succeeded/Failed) are left out; terminating pods stay in, so clients can
//! drain them (`ShouldPodBeInEndpoints` with includeTerminating).

use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, ObjectReference, Pod, Service, ServicePort};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::core::{Selector, SelectorExt};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client, ResourceExt};

use super::ownership::controller_ref;
use super::pod_state::{is_ready, is_terminating, phase};
use super::watches::Watches;
use super::writes;
use crate::time::TimeScale;

/// The label tying a slice to its Service.
const SERVICE_LABEL: &str = "kubernetes.io/service-name";
/// The label marking slices this controller manages (upstream's value, so tools agree).
const MANAGED_BY: (&str, &str) = (
    "endpointslice.kubernetes.io/managed-by",
    "endpointslice-controller.k8s.io",
);
/// The node label giving an endpoint its zone.
const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

/// Runs the controller until the task is dropped (the time scale is unused: nothing here
/// waits on simulated time).
pub async fn run(client: Client, _scale: TimeScale) {
    let mut watches = Watches::new(client.clone());
    let controller = Controller {
        services: watches.store(),
        pods: watches.store(),
        nodes: watches.store(),
        slices: watches.store(),
        client,
    };
    watches.ready().await;
    loop {
        controller.pass().await;
        watches.changed(None::<Duration>).await;
    }
}

struct Controller {
    client: Client,
    services: Store<Service>,
    pods: Store<Pod>,
    nodes: Store<Node>,
    slices: Store<EndpointSlice>,
}

impl Controller {
    async fn pass(&self) {
        for service in self.services.state() {
            if service.metadata.deletion_timestamp.is_none() {
                self.sync(&service).await;
            }
        }
    }

    async fn sync(&self, service: &Service) {
        let namespace = service.namespace().unwrap_or_default();
        let api: Api<EndpointSlice> = Api::namespaced(self.client.clone(), &namespace);
        let name = slice_name(service);
        let existing = self.slices.get(&ObjectRef::new(&name).within(&namespace));
        let spec = service.spec.clone().unwrap_or_default();
        let selector = spec
            .selector
            .clone()
            .filter(|s| !s.is_empty() && spec.type_.as_deref() != Some("ExternalName"));
        let Some(selector) = selector else {
            if let Some(existing) = existing
                .filter(|s| s.labels().get(MANAGED_BY.0).map(String::as_str) == Some(MANAGED_BY.1))
            {
                writes::delete(&api, existing.as_ref()).await;
            }
            return;
        };
        let selector = Selector::from_iter(selector);
        let mut pods: Vec<_> = self
            .pods
            .state()
            .into_iter()
            .filter(|p| {
                p.namespace().as_deref() == Some(namespace.as_str()) && selector.matches(p.labels())
            })
            .filter(|p| pod_ip(p).is_some() && !matches!(phase(p), "Succeeded" | "Failed"))
            .collect();
        pods.sort_by_key(|p| p.name_any());
        let publish_not_ready = spec.publish_not_ready_addresses.unwrap_or(false);
        let endpoints = pods
            .iter()
            .map(|p| self.endpoint(service, p, publish_not_ready))
            .collect();
        let ports = spec
            .ports
            .unwrap_or_default()
            .iter()
            .filter_map(|port| endpoint_port(port, pods.first().map(|p| p.as_ref())))
            .collect();
        let mut slice = EndpointSlice {
            metadata: ObjectMeta {
                name: Some(name),
                namespace: Some(namespace),
                labels: Some(
                    [
                        (SERVICE_LABEL.to_owned(), service.name_any()),
                        (MANAGED_BY.0.to_owned(), MANAGED_BY.1.to_owned()),
                    ]
                    .into(),
                ),
                owner_references: Some(vec![controller_ref(service)]),
                ..ObjectMeta::default()
            },
            address_type: "IPv4".into(),
            endpoints,
            ports: Some(ports),
        };
        match existing {
            None => {
                writes::create(&api, &slice).await;
            }
            Some(existing) => {
                let same = existing.endpoints == slice.endpoints
                    && existing.ports == slice.ports
                    && existing.metadata.labels == slice.metadata.labels;
                if !same {
                    slice.metadata.resource_version = existing.metadata.resource_version.clone();
                    writes::replace(&api, &slice).await;
                }
            }
        }
    }

    /// The endpoint for one pod, conditions as upstream's podToEndpoint.
    fn endpoint(&self, service: &Service, pod: &Pod, publish_not_ready: bool) -> Endpoint {
        let serving = publish_not_ready || is_ready(pod);
        let terminating = is_terminating(pod);
        let spec = pod.spec.as_ref();
        let node_name = spec.and_then(|s| s.node_name.clone());
        let zone = node_name
            .as_ref()
            .and_then(|n| self.nodes.get(&ObjectRef::new(n)))
            .and_then(|n| n.labels().get(ZONE_LABEL).cloned());
        // Upstream sets a hostname only for pods that named this Service as their subdomain.
        let hostname = spec
            .filter(|s| s.subdomain.as_deref() == Some(service.name_any().as_str()))
            .and_then(|s| s.hostname.clone());
        Endpoint {
            addresses: pod_ip(pod).into_iter().collect(),
            conditions: Some(EndpointConditions {
                ready: Some(publish_not_ready || (serving && !terminating)),
                serving: Some(serving),
                terminating: Some(terminating),
            }),
            hostname,
            node_name,
            zone,
            target_ref: Some(ObjectReference {
                kind: Some("Pod".into()),
                namespace: pod.namespace(),
                name: Some(pod.name_any()),
                uid: pod.uid(),
                ..ObjectReference::default()
            }),
            ..Endpoint::default()
        }
    }
}

/// `<service>-<5 characters of its uid>`: stable, so a pass finds its own slice by name,
/// and shaped like upstream's generated names.
fn slice_name(service: &Service) -> String {
    let suffix: String = service
        .uid()
        .unwrap_or_default()
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(5)
        .collect();
    format!("{}-{suffix}", service.name_any())
}

fn pod_ip(pod: &Pod) -> Option<String> {
    pod.status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .filter(|ip| !ip.is_empty())
}

/// A Service port as a slice port: targetPort (default: port) resolved by number, or by name
/// against the pod's container ports; a name no container declares drops the port.
fn endpoint_port(port: &ServicePort, pod: Option<&Pod>) -> Option<EndpointPort> {
    let number = match port.target_port.as_ref() {
        None => port.port,
        Some(IntOrString::Int(n)) => *n,
        Some(IntOrString::String(name)) => {
            pod?.spec
                .as_ref()?
                .containers
                .iter()
                .flat_map(|c| c.ports.iter().flatten())
                .find(|p| p.name.as_deref() == Some(name.as_str()))?
                .container_port
        }
    };
    Some(EndpointPort {
        name: Some(port.name.clone().unwrap_or_default()),
        port: Some(number),
        protocol: Some(port.protocol.clone().unwrap_or_else(|| "TCP".into())),
        app_protocol: port.app_protocol.clone(),
    })
}
