//! The attach/detach controller's detach half (upstream `pkg/controller/volume/attachdetach`):
//! a VolumeAttachment goes once no pod on its node uses its PersistentVolume any more, so a
//! drain that waits for the node's volumes to detach (as quiesce's does) sees them go after
//! the node's pods are gone. Nothing is attached here: tests create the VolumeAttachments of
//! the volumes they mean to be attached. Upstream's reconciler detaches through the CSI
//! external-attacher, which removes the object once the cloud has detached the volume; the
//! sandbox deletes it directly, after [`DETACH_DELAY`] when the attachment asks for one.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::VolumeAttachment;
use kube::runtime::reflector::Store;
use kube::{Api, Client, ResourceExt};

use super::watches::Watches;
use super::writes;
use crate::time::TimeScale;

/// Annotation on a VolumeAttachment: how long the cloud takes to detach the volume once no pod
/// uses it (`3s`, simulated time; default: at once). An EBS detach takes seconds, so a drain
/// finds the attachment still there and has to wait for it.
pub const DETACH_DELAY: &str = "sandbox.quiesce.io/detach-delay";

/// Runs the controller until the task is dropped.
pub async fn run(client: Client, scale: TimeScale) {
    let mut watches = Watches::new(client.clone());
    let attachments = watches.store::<VolumeAttachment>();
    let pods = watches.store::<Pod>();
    let claims = watches.store::<PersistentVolumeClaim>();
    watches.ready().await;
    let api: Api<VolumeAttachment> = Api::all(client);
    // When each unused attachment (by uid) was first seen unused.
    let mut unused_since: HashMap<String, Instant> = HashMap::new();
    loop {
        let used = in_use(&pods, &claims);
        let mut wake: Option<Duration> = None;
        let mut unused = HashMap::new();
        for va in attachments.state() {
            // An inline volume (no PersistentVolume) is not one a pod claims here: kept.
            let Some(pv) = va.spec.source.persistent_volume_name.clone() else {
                continue;
            };
            let key = (va.spec.node_name.clone(), pv);
            if va.metadata.deletion_timestamp.is_some() || used.contains(&key) {
                continue;
            }
            let uid = va.uid().unwrap_or_default();
            let since = *unused_since.get(&uid).unwrap_or(&Instant::now());
            unused.insert(uid, since);
            let delay = va
                .annotations()
                .get(DETACH_DELAY)
                .and_then(|d| humantime::parse_duration(d).ok())
                .map_or(Duration::ZERO, |d| scale.real(d));
            let left = delay.saturating_sub(since.elapsed());
            if !left.is_zero() {
                wake = Some(wake.map_or(left, |w| w.min(left)));
            } else if writes::delete(&api, va.as_ref()).await {
                tracing::info!(name = %va.name_any(), node = %key.0, "volume detached: no pod on the node uses it");
            }
        }
        unused_since = unused;
        watches.changed(wake).await;
    }
}

/// (node, PersistentVolume) for every volume a pod that has not finished mounts through a
/// bound claim. A finished pod (Succeeded, Failed) no longer needs its volumes, as upstream's
/// desired state of world drops terminated pods.
fn in_use(pods: &Store<Pod>, claims: &Store<PersistentVolumeClaim>) -> BTreeSet<(String, String)> {
    let bound = |ns: &str, claim: &str| {
        claims
            .state()
            .into_iter()
            .find(|c| c.name_any() == claim && c.namespace().as_deref() == Some(ns))
            .and_then(|c| c.spec.as_ref()?.volume_name.clone())
    };
    let mut out = BTreeSet::new();
    for pod in pods.state() {
        let finished = pod
            .status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .is_some_and(|p| p == "Succeeded" || p == "Failed");
        let Some(spec) = pod.spec.as_ref() else {
            continue;
        };
        let (Some(node), false) = (spec.node_name.as_ref(), finished) else {
            continue;
        };
        let ns = pod.namespace().unwrap_or_default();
        for volume in spec.volumes.iter().flatten() {
            let Some(pvc) = volume.persistent_volume_claim.as_ref() else {
                continue;
            };
            if let Some(pv) = bound(&ns, &pvc.claim_name) {
                out.insert((node.clone(), pv));
            }
        }
    }
    out
}
