//! Owner references and label selectors, the links between controllers and what they own.

use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use std::sync::Arc;

use kube::core::Selector;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};

/// The controller reference a child of `owner` carries (controller and blockOwnerDeletion
/// set, as upstream's `metav1.NewControllerRef`).
pub(crate) fn controller_ref<K: Resource<DynamicType = ()>>(owner: &K) -> OwnerReference {
    OwnerReference {
        api_version: K::api_version(&()).into_owned(),
        kind: K::kind(&()).into_owned(),
        name: owner.name_any(),
        uid: owner.uid().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// The owner reference marked `controller: true`, if any.
pub(crate) fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .as_ref()?
        .iter()
        .find(|r| r.controller == Some(true))
}

/// Whether `meta`'s controller is the object with `uid`.
pub(crate) fn controlled_by(meta: &ObjectMeta, uid: Option<&str>) -> bool {
    uid.is_some_and(|uid| controller_of(meta).is_some_and(|r| r.uid == uid))
}

/// A label selector as a matcher; a malformed one matches nothing (upstream refuses to act
/// on it too) and is logged with the object it belongs to.
pub(crate) fn matcher(selector: Option<&LabelSelector>, owner: &str) -> Option<Selector> {
    match Selector::try_from(selector.cloned()?) {
        Ok(selector) => Some(selector),
        Err(error) => {
            tracing::warn!(owner, %error, "invalid label selector; ignoring the object");
            None
        }
    }
}

/// `namespace/name`, the key for per-object bookkeeping.
pub(crate) fn key<K: Resource>(obj: &K) -> String {
    format!(
        "{}/{}",
        obj.meta().namespace.as_deref().unwrap_or_default(),
        obj.meta().name.as_deref().unwrap_or_default()
    )
}

/// The object `reference` points at in `namespace`, if the cache holds it with the same uid
/// (a recreated namesake is a different owner).
pub(crate) fn referent<K>(
    store: &Store<K>,
    reference: &OwnerReference,
    namespace: &str,
) -> Option<Arc<K>>
where
    K: Resource<DynamicType = ()> + Clone,
{
    store
        .get(&ObjectRef::new(&reference.name).within(namespace))
        .filter(|o| o.uid().as_deref() == Some(&reference.uid))
}

/// A new pod from `owner`'s pod template: generateName `<owner>-`, the template's labels and
/// annotations, and `owner` as its controller (upstream's `GetPodFromTemplate`).
pub(crate) fn pod_from_template<K: Resource<DynamicType = ()>>(
    owner: &K,
    template: Option<PodTemplateSpec>,
) -> Pod {
    let template = template.unwrap_or_default();
    let meta = template.metadata.unwrap_or_default();
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-", owner.name_any())),
            namespace: owner.meta().namespace.clone(),
            labels: meta.labels,
            annotations: meta.annotations,
            owner_references: Some(vec![controller_ref(owner)]),
            ..ObjectMeta::default()
        },
        spec: template.spec,
        status: None,
    }
}
