//! The garbage collector, background propagation only: an object whose controller owner no
//! longer exists is deleted, so deleting a Deployment takes its ReplicaSets and their pods.

use std::collections::HashSet;

use super::Pass;
use super::objects::{self, controller_uid, deleting};
use crate::api::resources::by_kind;

/// Deletes orphans of every owning kind.
pub(super) fn collect(pass: &mut Pass<'_>) {
    let owners = [
        by_kind("apps", "Deployment"),
        by_kind("apps", "ReplicaSet"),
        by_kind("apps", "StatefulSet"),
        by_kind("apps", "DaemonSet"),
        by_kind("", "Service"),
    ];
    let mut live: HashSet<String> = HashSet::new();
    for r in owners {
        pass.store.for_each(r, |o| {
            live.insert(objects::uid(o).to_string());
        });
    }
    for r in [
        by_kind("apps", "ReplicaSet"),
        by_kind("", "Pod"),
        by_kind("discovery.k8s.io", "EndpointSlice"),
    ] {
        for obj in pass.all(r) {
            if controller_uid(&obj).is_some_and(|owner| !live.contains(owner)) && !deleting(&obj) {
                pass.delete(r, &obj, None);
            }
        }
    }
}
