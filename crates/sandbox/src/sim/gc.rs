//! The garbage collector: deletes objects whose owners are all gone, with background
//! propagation, so deleting a Deployment takes its ReplicaSets and then their pods (as
//! upstream's `pkg/controller/garbagecollector`, without foreground deletion or orphaning
//! finalizers, which the sandbox API does not implement).
//!
//! Owners are checked in the caches first and then, before anything is deleted, with a live
//! GET — upstream's attemptToDeleteItem does the same, because a dependent's watch event can
//! arrive before its brand-new owner's.

use std::fmt::Debug;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::runtime::reflector::Store;
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::ownership::referent;
use super::watches::Watches;
use super::writes;
use crate::time::TimeScale;

/// Runs the collector until the task is dropped (the time scale is unused: collection waits
/// on nothing simulated).
pub async fn run(client: Client, _scale: TimeScale) {
    let mut watches = Watches::new(client.clone());
    let collector = Collector {
        pods: watches.store(),
        sets: watches.store(),
        slices: watches.store(),
        deployments: watches.store(),
        statefulsets: watches.store(),
        daemonsets: watches.store(),
        services: watches.store(),
        jobs: watches.store(),
        cronjobs: watches.store(),
        client,
    };
    watches.ready().await;
    loop {
        collector.sweep(&collector.sets).await;
        collector.sweep(&collector.pods).await;
        collector.sweep(&collector.slices).await;
        collector.sweep(&collector.jobs).await;
        watches.changed(None).await;
    }
}

struct Collector {
    client: Client,
    pods: Store<Pod>,
    sets: Store<ReplicaSet>,
    slices: Store<EndpointSlice>,
    deployments: Store<Deployment>,
    statefulsets: Store<StatefulSet>,
    daemonsets: Store<DaemonSet>,
    services: Store<Service>,
    jobs: Store<Job>,
    cronjobs: Store<CronJob>,
}

/// What the caches say about one owner reference.
enum Owner {
    Present,
    Absent,
    /// A kind we do not track: never collect on its account.
    Unknown,
}

impl Collector {
    /// Deletes every cached `K` whose owners are all confirmed gone.
    async fn sweep<K>(&self, dependents: &Store<K>)
    where
        K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
            + Clone
            + Serialize
            + DeserializeOwned
            + Debug,
    {
        for dependent in dependents.state() {
            let namespace = dependent.namespace().unwrap_or_default();
            let refs = dependent.owner_references();
            if refs.is_empty() || dependent.meta().deletion_timestamp.is_some() {
                continue;
            }
            if !refs
                .iter()
                .all(|r| matches!(self.cached(r, &namespace), Owner::Absent))
            {
                continue;
            }
            let mut confirmed = true;
            for reference in refs {
                confirmed &= !self.exists(reference, &namespace).await;
            }
            if confirmed {
                let api: Api<K> = Api::namespaced(self.client.clone(), &namespace);
                if writes::delete(&api, dependent.as_ref()).await {
                    tracing::info!(kind = %K::kind(&()), name = %dependent.name_any(), namespace, "collected: owner gone");
                }
            }
        }
    }

    fn cached(&self, reference: &OwnerReference, namespace: &str) -> Owner {
        let found = match reference.kind.as_str() {
            "Deployment" => referent(&self.deployments, reference, namespace).is_some(),
            "ReplicaSet" => referent(&self.sets, reference, namespace).is_some(),
            "StatefulSet" => referent(&self.statefulsets, reference, namespace).is_some(),
            "DaemonSet" => referent(&self.daemonsets, reference, namespace).is_some(),
            "Service" => referent(&self.services, reference, namespace).is_some(),
            "Job" => referent(&self.jobs, reference, namespace).is_some(),
            "CronJob" => referent(&self.cronjobs, reference, namespace).is_some(),
            _ => return Owner::Unknown,
        };
        if found { Owner::Present } else { Owner::Absent }
    }

    /// A live check that the owner (same uid) exists; errors count as "exists", so a flaky
    /// read never deletes anything.
    async fn exists(&self, reference: &OwnerReference, namespace: &str) -> bool {
        match reference.kind.as_str() {
            "Deployment" => self.live::<Deployment>(reference, namespace).await,
            "ReplicaSet" => self.live::<ReplicaSet>(reference, namespace).await,
            "StatefulSet" => self.live::<StatefulSet>(reference, namespace).await,
            "DaemonSet" => self.live::<DaemonSet>(reference, namespace).await,
            "Service" => self.live::<Service>(reference, namespace).await,
            "Job" => self.live::<Job>(reference, namespace).await,
            "CronJob" => self.live::<CronJob>(reference, namespace).await,
            _ => true,
        }
    }

    async fn live<K>(&self, reference: &OwnerReference, namespace: &str) -> bool
    where
        K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + Debug,
    {
        match Api::<K>::namespaced(self.client.clone(), namespace)
            .get_opt(&reference.name)
            .await
        {
            Ok(found) => found.is_some_and(|o| o.uid().as_deref() == Some(&reference.uid)),
            Err(error) => {
                tracing::warn!(owner = %reference.name, %error, "cannot confirm the owner is gone; keeping its dependents");
                true
            }
        }
    }
}
