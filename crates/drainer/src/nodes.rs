//! Finding the instance's node, and keeping the in-flight record on it.
//!
//! The node is found by `spec.providerID` (`aws:///<az>/<instance-id>`), which is exact; a node
//! name guessed from the instance's private DNS name breaks with custom hostnames. The
//! long-running drainer keeps a watched index (a kube-runtime reflector) and falls back to a
//! fresh list when the index has not seen the node yet; the Lambda lists. Nodes without a
//! providerID (a kubelet without a cloud provider) are found by the instance's PrivateDnsName.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use quiesce_aws::ec2::Ec2;
use quiesce_aws::instance::instance_id;
use quiesce_aws::record::{ANNOTATION, InFlight};

use crate::error::{Error, Result};

/// Where the drainer looks nodes up.
#[derive(Clone)]
pub struct NodeIndex {
    api: Api<Node>,
    store: Option<Store<Node>>,
    synced: Arc<AtomicBool>,
    ec2: Option<Ec2>,
}

impl NodeIndex {
    /// Lists nodes on every lookup (the Lambda: short-lived, few lookups).
    pub fn listed(client: Client) -> NodeIndex {
        NodeIndex {
            api: Api::all(client),
            store: None,
            synced: Arc::new(AtomicBool::new(true)),
            ec2: None,
        }
    }

    /// A watched index, and the future that keeps it current (spawn it).
    pub fn watched(client: Client) -> (NodeIndex, impl Future<Output = ()> + Send + 'static) {
        let api: Api<Node> = Api::all(client);
        let (store, writer) = reflector::store();
        let synced = Arc::new(AtomicBool::new(false));
        let flag = synced.clone();
        let keep = watcher(api.clone(), watcher::Config::default())
            .default_backoff()
            .reflect(writer)
            .for_each(move |event| {
                match event {
                    Ok(watcher::Event::InitDone) => flag.store(true, Ordering::Relaxed),
                    Ok(_) => {}
                    Err(err) => tracing::warn!(%err, "node watch interrupted; retrying"),
                }
                std::future::ready(())
            });
        (
            NodeIndex {
                api,
                store: Some(store),
                synced,
                ec2: None,
            },
            keep,
        )
    }

    /// Also finds nodes without an AWS providerID, by the instance's PrivateDnsName (EC2
    /// `DescribeInstances`) matched against node names and their InternalDNS/Hostname
    /// addresses.
    pub fn with_ec2_fallback(mut self, ec2: Ec2) -> NodeIndex {
        self.ec2 = Some(ec2);
        self
    }

    /// Whether lookups can be trusted yet (the watched index has listed once).
    pub fn ready(&self) -> bool {
        self.synced.load(Ordering::Relaxed)
    }

    /// The node whose providerID names `instance`: the watched index's copy when it has
    /// one (no request: with hundreds of actions at once, each node's first request is the
    /// write that claims and cordons it, and every write carries the copy's resourceVersion
    /// as precondition, so a stale copy costs a conflict and a re-read, never a wrong write),
    /// else read from the API server. A node without an AWS providerID may be it by
    /// PrivateDnsName; one whose providerID names another instance never is. An EC2 error
    /// fails the lookup: "no such node" would let `--unknown-instance continue` complete the
    /// hook of a live node.
    pub async fn find(&self, instance: &str) -> Result<Option<Node>> {
        let doing = || format!("looking up the node of {instance}");
        if let Some(node) = self.cached_node(instance) {
            return Ok(Some(node));
        }
        // Paged, as every list of the drainer: a large cluster's nodes are not one response.
        let nodes = quiesce_kube::reads::list(self.api.clone(), ListParams::default())
            .await
            .map_err(|source| Error::Read {
                what: doing(),
                source,
            })?;
        if let Some(node) = nodes
            .iter()
            .find(|n| provider_instance(n) == Some(instance))
        {
            return Ok(Some(node.clone()));
        }
        let Some(ec2) = &self.ec2 else {
            return Ok(None);
        };
        let Some(dns) = ec2.private_dns_name(instance).await? else {
            return Ok(None);
        };
        Ok(nodes.into_iter().find(|n| {
            !has_aws_provider(n)
                && (n.name_any() == dns
                    || n.status
                        .as_ref()
                        .and_then(|s| s.addresses.as_ref())
                        .into_iter()
                        .flatten()
                        .any(|a| {
                            matches!(a.type_.as_str(), "InternalDNS" | "Hostname")
                                && a.address == dns
                        }))
        }))
    }

    /// The name of the node whose providerID names `instance`, as the watched index knows it
    /// (`None` for a listed index, or when the index has not seen it).
    pub fn cached(&self, instance: &str) -> Option<String> {
        self.cached_node(instance).map(|n| n.name_any())
    }

    fn cached_node(&self, instance: &str) -> Option<Node> {
        self.store
            .as_ref()?
            .state()
            .iter()
            .find(|n| provider_instance(n) == Some(instance))
            .map(|n| Node::clone(n))
    }

    /// The watched index's copy of node `name` (`None` for a listed index, or when the index
    /// has not seen it).
    pub fn copy_of(&self, name: &str) -> Option<Node> {
        let store = self.store.as_ref()?;
        store
            .get(&reflector::ObjectRef::new(name))
            .map(|n| Node::clone(&n))
    }

    /// The node by name, fresh.
    pub async fn get(&self, name: &str) -> Result<Option<Node>, kube::Error> {
        self.api.get_opt(name).await
    }
}

/// Whether `node` may be `instance`'s: its providerID names it, or it has no AWS providerID
/// (then only the EC2 fallback, by PrivateDnsName, can tell).
pub fn may_be(node: &Node, instance: &str) -> bool {
    provider_instance(node) == Some(instance) || !has_aws_provider(node)
}

/// Whether the node's providerID is an AWS one (then it names its instance exactly).
fn has_aws_provider(node: &Node) -> bool {
    node.spec
        .as_ref()
        .and_then(|s| s.provider_id.as_deref())
        .is_some_and(|p| p.starts_with("aws://"))
}

fn provider_instance(node: &Node) -> Option<&str> {
    node.spec
        .as_ref()?
        .provider_id
        .as_deref()
        .and_then(instance_id)
}

/// The record on `node`, if any. A corrupt one is logged and treated as absent: the message
/// then starts the action afresh, which is safe (cordon and evictions are idempotent).
pub fn record_of(node: &Node) -> Option<InFlight> {
    let value = node.annotations().get(ANNOTATION)?;
    InFlight::from_annotation(value)
        .inspect_err(|err| tracing::warn!(node = %node.name_any(), %err, "ignoring the record"))
        .ok()
}

/// Whether the node reports Ready.
pub fn is_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True")
}
