//! The object store: every object as JSON, one global resourceVersion (like etcd's revision),
//! and a bounded history of changes for watches. All writes — from HTTP clients and from the
//! simulated controllers — go through here, so watch streams see every change in order.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use k8s_openapi::jiff::Timestamp;
use rand::Rng;
use serde_json::{Value, json};
use tokio::sync::{broadcast, watch};

use super::custom::{self, Registry};
use super::resources::{RESOURCES, Resource};
use super::selector::{FieldSelector, LabelSelector};
use super::status::ApiError;
use super::validation;

/// What happened to an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// Created.
    Added,
    /// Changed.
    Modified,
    /// Removed.
    Deleted,
}

impl EventKind {
    /// The watch event `type`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Added => "ADDED",
            EventKind::Modified => "MODIFIED",
            EventKind::Deleted => "DELETED",
        }
    }
}

/// One change, as a watch stream reports it.
#[derive(Debug)]
pub struct Change {
    /// The resourceVersion this change produced.
    pub rv: u64,
    /// Index into [`RESOURCES`].
    pub resource: usize,
    /// What happened.
    pub kind: EventKind,
    /// The object after the change (before it, for a deletion), shared with the store.
    pub object: Arc<Value>,
}

/// The start of a watch: the changes to replay, then a receiver for live ones.
pub struct WatchStart {
    /// Changes to send first, oldest first.
    pub backlog: Vec<Arc<Change>>,
    /// Every change written after the backlog.
    pub receiver: broadcast::Receiver<Arc<Change>>,
    /// The resourceVersion the backlog brings a watcher up to (a safe bookmark).
    pub rv: u64,
}

/// Which part of an object a write may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The main resource: everything except status, where status is a subresource.
    Main,
    /// The `/status` subresource: only status.
    Status,
}

/// Options of a delete, from `DeleteOptions`.
#[derive(Debug, Clone, Default)]
pub struct DeleteOptions {
    /// Overrides the pod's own terminationGracePeriodSeconds.
    pub grace_period_seconds: Option<i64>,
    /// The object must still have this UID.
    pub uid: Option<String>,
    /// The object must still have this resourceVersion.
    pub resource_version: Option<String>,
    /// Validate only.
    pub dry_run: bool,
}

type Key = (String, String);

/// The objects of one resource, and the one index a large cluster needs: pods by
/// `spec.nodeName`, so a kubelet's or a drain's field-selected list does not scan every pod.
#[derive(Default)]
struct Objects {
    by_key: BTreeMap<Key, Arc<Value>>,
    by_node: HashMap<String, BTreeSet<Key>>,
}

fn node_of(obj: &Value) -> Option<&str> {
    obj["spec"]["nodeName"].as_str().filter(|n| !n.is_empty())
}

impl Objects {
    fn get(&self, key: &Key) -> Option<&Arc<Value>> {
        self.by_key.get(key)
    }

    fn contains(&self, key: &Key) -> bool {
        self.by_key.contains_key(key)
    }

    fn insert(&mut self, key: Key, obj: Arc<Value>) {
        self.remove(&key);
        if let Some(node) = node_of(&obj) {
            self.by_node
                .entry(node.to_string())
                .or_default()
                .insert(key.clone());
        }
        self.by_key.insert(key, obj);
    }

    fn remove(&mut self, key: &Key) {
        let Some(old) = self.by_key.remove(key) else {
            return;
        };
        if let Some(node) = node_of(&old)
            && let Some(keys) = self.by_node.get_mut(node)
        {
            keys.remove(key);
            if keys.is_empty() {
                self.by_node.remove(node);
            }
        }
    }

    /// The objects a list must look at: those on one node when the selector pins
    /// `spec.nodeName`, otherwise all.
    fn candidates<'a>(
        &'a self,
        node: Option<&str>,
    ) -> Box<dyn Iterator<Item = &'a Arc<Value>> + 'a> {
        match node {
            Some(node) => Box::new(
                self.by_node
                    .get(node)
                    .into_iter()
                    .flatten()
                    .filter_map(|k| self.by_key.get(k)),
            ),
            None => Box::new(self.by_key.values()),
        }
    }
}

struct Inner {
    rv: u64,
    objects: Vec<Objects>,
    history: VecDeque<Arc<Change>>,
    custom: Registry,
}

impl Inner {
    /// Where `r`'s objects are: built-in resources by their place in [`RESOURCES`], custom
    /// ones after them.
    fn index(&self, r: &Resource) -> usize {
        self.custom.index(r).unwrap_or_else(|| index_of(r))
    }
}

/// The shared store.
pub struct Store {
    inner: Mutex<Inner>,
    history_capacity: usize,
    changes: broadcast::Sender<Arc<Change>>,
    latest: watch::Sender<u64>,
}

/// A built-in resource's index in [`RESOURCES`].
fn index_of(resource: &Resource) -> usize {
    RESOURCES
        .iter()
        .position(|r| std::ptr::eq(r, resource))
        .expect("resources come from the static table")
}

/// Drops the fields `r`'s schema does not define from an in-process writer's object, saying
/// which: a scenario's typo, or a simulated component writing a field no cluster has.
fn drop_unknown(r: &Resource, obj: &mut Value) {
    let dropped = validation::drop_unknown(r, obj);
    if !dropped.is_empty() {
        tracing::warn!(
            kind = r.kind,
            name = obj["metadata"]["name"].as_str().unwrap_or_default(),
            ?dropped,
            "dropped fields the schema does not define"
        );
    }
}

/// The current time as Kubernetes writes it (RFC 3339, seconds).
pub fn now() -> String {
    Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn random_uid() -> String {
    let mut rng = rand::rng();
    let b: [u8; 16] = rng.random();
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
        u16::from_be_bytes([b[4], b[5]]),
        u16::from_be_bytes([b[6], b[7]]) & 0x0fff,
        (u16::from_be_bytes([b[8], b[9]]) & 0x3fff) | 0x8000,
        u64::from_be_bytes([0, 0, b[10], b[11], b[12], b[13], b[14], b[15]])
    )
}

/// The 5-character suffix of `generateName`, from upstream's alphabet without vowels.
fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    (0..5)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

fn key(ns: &str, name: &str) -> Key {
    (ns.to_string(), name.to_string())
}

impl Store {
    /// An empty store with the default namespaces.
    pub fn new(history_capacity: usize) -> Arc<Store> {
        let (changes, _) = broadcast::channel(16_384);
        let (latest, _) = watch::channel(0);
        let store = Arc::new(Store {
            inner: Mutex::new(Inner {
                rv: 0,
                objects: RESOURCES.iter().map(|_| Objects::default()).collect(),
                history: VecDeque::new(),
                custom: Registry::default(),
            }),
            history_capacity: history_capacity.max(1),
            changes,
            latest,
        });
        let namespaces = super::resources::lookup("", "v1", "namespaces").expect("served");
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            store
                .create(namespaces, "", json!({"metadata": {"name": ns}}), false)
                .expect("a fresh store accepts the default namespaces");
        }
        store
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The index watch events carry for `r` ([`Change::resource`]).
    pub fn index_of(&self, r: &Resource) -> usize {
        self.lock().index(r)
    }

    /// The served custom resource at `group/version/plural`.
    pub fn custom(&self, group: &str, version: &str, plural: &str) -> Option<&'static Resource> {
        self.lock().custom.lookup(group, version, plural)
    }

    /// Every served custom resource.
    pub fn custom_resources(&self) -> Vec<&'static Resource> {
        self.lock().custom.served()
    }

    /// Every served custom resource with its schema, for the OpenAPI documents.
    pub fn custom_schemas(&self) -> Vec<(&'static Resource, Value)> {
        self.lock().custom.schemas()
    }

    /// Serves what a written CustomResourceDefinition defines, or stops serving a deleted one
    /// (deleting its objects, which watchers see go).
    fn follow_definition(&self, inner: &mut Inner, definition: &Value, deleted: bool) {
        if deleted {
            let name = definition["metadata"]["name"].as_str().unwrap_or_default();
            let Some(idx) = inner.custom.forget(name) else {
                return;
            };
            let objects = std::mem::take(&mut inner.objects[idx]);
            for (_, obj) in objects.by_key {
                inner.rv += 1;
                let mut gone = Value::clone(&obj);
                gone["metadata"]["resourceVersion"] = json!(inner.rv.to_string());
                self.record(inner, idx, EventKind::Deleted, Arc::new(gone));
            }
            return;
        }
        let next = inner.objects.len();
        if inner.custom.define(definition, next) == next {
            inner.objects.push(Objects::default());
        }
    }

    /// A receiver that changes whenever anything is written; the simulation waits on it.
    pub fn subscribe_latest(&self) -> watch::Receiver<u64> {
        self.latest.subscribe()
    }

    /// The current resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.lock().rv
    }

    fn record(&self, inner: &mut Inner, resource: usize, kind: EventKind, object: Arc<Value>) {
        let change = Arc::new(Change {
            rv: inner.rv,
            resource,
            kind,
            object,
        });
        inner.history.push_back(change.clone());
        while inner.history.len() > self.history_capacity {
            inner.history.pop_front();
        }
        let _ = self.changes.send(change);
        self.latest.send_replace(inner.rv);
    }

    /// One object.
    pub fn get(&self, r: &'static Resource, ns: &str, name: &str) -> Result<Value, ApiError> {
        let inner = self.lock();
        inner.objects[inner.index(r)]
            .get(&key(ns, name))
            .map(|o| Value::clone(o))
            .ok_or_else(|| ApiError::not_found(r.group, r.plural, name))
    }

    /// Objects matching the selectors, in one namespace or all, with the list's resourceVersion;
    /// shared, not copied, so a big list costs the lock only a few pointer copies.
    pub fn list(
        &self,
        r: &'static Resource,
        ns: Option<&str>,
        labels: &LabelSelector,
        fields: &FieldSelector,
    ) -> (Vec<Arc<Value>>, u64) {
        let inner = self.lock();
        let items = inner.objects[inner.index(r)]
            .candidates(fields.node_name())
            .filter(|o| ns.is_none_or(|n| o["metadata"]["namespace"].as_str() == Some(n)))
            .filter(|o| labels.matches(&o["metadata"]["labels"]) && fields.matches(o))
            .cloned()
            .collect();
        (items, inner.rv)
    }

    /// Runs `f` over every object of a resource without cloning the collection.
    pub fn for_each(&self, r: &'static Resource, mut f: impl FnMut(&Value)) {
        let inner = self.lock();
        inner.objects[inner.index(r)]
            .by_key
            .values()
            .for_each(|o| f(o));
    }

    /// Creates an object, filling in the metadata the server owns. Fields `r`'s schema does
    /// not define are dropped first, as the HTTP path drops them (`fieldValidation`), so that
    /// an in-process writer (a scenario file, the simulated kubelets, a benchmark) cannot
    /// store one: every stored object is free of unknown fields, which the merge-patch check
    /// (`validation::check_merge_patch`) relies on.
    pub fn create(
        &self,
        r: &'static Resource,
        ns: &str,
        mut obj: Value,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        drop_unknown(r, &mut obj);
        self.create_checked(r, ns, obj, dry_run)
            .map(Arc::unwrap_or_clone)
    }

    /// [`Store::create`] of an object the caller has already checked with
    /// `validation::check` (the HTTP path, which reports what it drops). The answer is the
    /// stored object itself, shared, for the caller to serialise without copying it.
    pub(crate) fn create_checked(
        &self,
        r: &'static Resource,
        ns: &str,
        mut obj: Value,
        dry_run: bool,
    ) -> Result<Arc<Value>, ApiError> {
        if !obj.is_object() || !obj["metadata"].is_object() && !obj["metadata"].is_null() {
            return Err(ApiError::bad_request(format!(
                "the object provided is unrecognized (must be of type {})",
                r.kind
            )));
        }
        if let Some(body_ns) = obj["metadata"]["namespace"].as_str()
            && r.namespaced
            && body_ns != ns
        {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        let mut inner = self.lock();
        if r.namespaced {
            let ns_idx =
                index_of(super::resources::lookup("", "v1", "namespaces").expect("served"));
            let namespace = inner.objects[ns_idx]
                .get(&key("", ns))
                .ok_or_else(|| ApiError::not_found("", "namespaces", ns))?;
            if !namespace["metadata"]["deletionTimestamp"].is_null() {
                let name = obj["metadata"]["name"].as_str().unwrap_or_default();
                return Err(ApiError::namespace_terminating(r.group, r.plural, name, ns));
            }
        }
        let name = match (
            obj["metadata"]["name"].as_str(),
            obj["metadata"]["generateName"].as_str(),
        ) {
            (Some(n), _) if !n.is_empty() => n.to_string(),
            (_, Some(prefix)) if !prefix.is_empty() => format!("{prefix}{}", random_suffix()),
            _ => {
                return Err(ApiError::invalid(
                    r.kind,
                    "",
                    "metadata.name",
                    "Required value: name or generateName is required",
                ));
            }
        };
        let idx = inner.index(r);
        if inner.objects[idx].contains(&key(ns, &name)) {
            return Err(ApiError::already_exists(r.group, r.plural, &name));
        }
        let uid = random_uid();
        super::defaults::on_create(r, &mut obj, &uid)?;
        let rv = inner.rv + 1;
        obj["apiVersion"] = json!(r.api_version());
        obj["kind"] = json!(r.kind);
        let meta = &mut obj["metadata"];
        meta["name"] = json!(name);
        if r.namespaced {
            meta["namespace"] = json!(ns);
        } else if let Some(m) = meta.as_object_mut() {
            m.remove("namespace");
        }
        meta["uid"] = json!(uid);
        meta["creationTimestamp"] = json!(now());
        meta["resourceVersion"] = json!(rv.to_string());
        if r.tracks_generation {
            meta["generation"] = json!(1);
        }
        if let Some(m) = meta.as_object_mut() {
            m.remove("deletionTimestamp");
            m.remove("deletionGracePeriodSeconds");
        }
        debug_assert!(
            validation::is_clean(r, &obj),
            "a created {} holds fields its schema does not define",
            r.kind
        );
        if dry_run {
            return Ok(Arc::new(obj));
        }
        inner.rv = rv;
        let obj = Arc::new(obj);
        inner.objects[idx].insert(key(ns, &name), obj.clone());
        self.record(&mut inner, idx, EventKind::Added, obj.clone());
        if custom::is_definition(r) {
            self.follow_definition(&mut inner, &obj, false);
        }
        Ok(obj)
    }

    /// Replaces an object (PUT), or the part of it `part` names.
    pub fn update(
        &self,
        r: &'static Resource,
        ns: &str,
        name: &str,
        obj: Value,
        part: Part,
    ) -> Result<Value, ApiError> {
        self.modify(r, ns, name, part, |_| Ok(obj))
    }

    /// Reads the object, lets `change` produce the new one, and writes it back with the
    /// server's rules: resourceVersion precondition, status isolation, generation, no-op
    /// writes leave the resourceVersion alone, an emptied finalizer list completes a deletion.
    /// Fields the schema does not define are dropped from what `change` returns, as
    /// [`Store::create`] drops them.
    pub fn modify(
        &self,
        r: &'static Resource,
        ns: &str,
        name: &str,
        part: Part,
        change: impl FnOnce(&Value) -> Result<Value, ApiError>,
    ) -> Result<Value, ApiError> {
        self.modify_checked(r, ns, name, part, |current| {
            let mut new = change(current)?;
            drop_unknown(r, &mut new);
            Ok(new)
        })
        .map(Arc::unwrap_or_clone)
    }

    /// [`Store::modify`] where `change` returns an object free of unknown fields: one checked
    /// with `validation::check`, or the stored object changed by a merge patch checked with
    /// `validation::check_merge_patch` (the HTTP path). The answer is the stored object
    /// itself, shared: a deep copy of it for the response to serialise cost a pod patch more
    /// than its validation did.
    pub(crate) fn modify_checked(
        &self,
        r: &'static Resource,
        ns: &str,
        name: &str,
        part: Part,
        change: impl FnOnce(&Value) -> Result<Value, ApiError>,
    ) -> Result<Arc<Value>, ApiError> {
        let mut inner = self.lock();
        let idx = inner.index(r);
        // Shared, not copied: `change` reads it and makes its own copy to change.
        let existing: Arc<Value> = inner.objects[idx]
            .get(&key(ns, name))
            .cloned()
            .ok_or_else(|| ApiError::not_found(r.group, r.plural, name))?;
        let mut new = change(&existing)?;
        if !new.is_object() {
            return Err(ApiError::bad_request(format!(
                "the object provided is unrecognized (must be of type {})",
                r.kind
            )));
        }
        super::defaults::on_write(r, &mut new);
        if let Some(wanted) = new["metadata"]["resourceVersion"].as_str()
            && wanted
                != existing["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap_or_default()
        {
            return Err(ApiError::stale(r.group, r.plural, name));
        }
        if let Some(body_name) = new["metadata"]["name"].as_str()
            && body_name != name
        {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        match part {
            Part::Status => {
                let status = new["status"].take();
                let managed = new["metadata"]["managedFields"].take();
                new = Value::clone(&existing);
                new["status"] = status;
                if !managed.is_null() {
                    new["metadata"]["managedFields"] = managed;
                }
            }
            Part::Main if r.has_status => new["status"] = existing["status"].clone(),
            Part::Main => {}
        }
        for field in [
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "namespace",
            "name",
        ] {
            match existing["metadata"].get(field) {
                Some(v) => new["metadata"][field] = v.clone(),
                None => {
                    if let Some(m) = new["metadata"].as_object_mut() {
                        m.remove(field);
                    }
                }
            }
        }
        new["apiVersion"] = json!(r.api_version());
        new["kind"] = json!(r.kind);
        new["metadata"]["resourceVersion"] = existing["metadata"]["resourceVersion"].clone();
        new["metadata"]["generation"] = existing["metadata"]["generation"].clone();
        if r.tracks_generation && new["spec"] != existing["spec"] {
            let generation = existing["metadata"]["generation"].as_i64().unwrap_or(0) + 1;
            new["metadata"]["generation"] = json!(generation);
        }
        if new["metadata"]["generation"].is_null()
            && let Some(m) = new["metadata"].as_object_mut()
        {
            m.remove("generation");
        }
        if new == *existing {
            return Ok(existing);
        }
        debug_assert!(
            validation::is_clean(r, &new),
            "a written {} holds fields its schema does not define",
            r.kind
        );
        inner.rv += 1;
        new["metadata"]["resourceVersion"] = json!(inner.rv.to_string());
        // The last finalizer going completes a deletion; a pod still in its grace period
        // stays until its kubelet deletes it with grace 0.
        let finalized = !new["metadata"]["deletionTimestamp"].is_null()
            && new["metadata"]["deletionGracePeriodSeconds"]
                .as_i64()
                .unwrap_or(0)
                == 0
            && !finalizers_pending(r, &new);
        let shared = Arc::new(new);
        if finalized {
            inner.objects[idx].remove(&key(ns, name));
            self.record(&mut inner, idx, EventKind::Deleted, shared.clone());
        } else {
            inner.objects[idx].insert(key(ns, name), shared.clone());
            self.record(&mut inner, idx, EventKind::Modified, shared.clone());
        }
        if custom::is_definition(r) {
            self.follow_definition(&mut inner, &shared, finalized);
        }
        Ok(shared)
    }

    /// Deletes an object the way the registry does: pods bound to a node terminate gracefully
    /// (deletionTimestamp now + grace, removed later by their kubelet with grace 0; upstream
    /// `pkg/registry/core/pod/strategy.go` CheckGracefulDelete), objects with finalizers wait
    /// for them, everything else goes at once.
    pub fn delete(
        &self,
        r: &'static Resource,
        ns: &str,
        name: &str,
        opts: &DeleteOptions,
    ) -> Result<Value, ApiError> {
        let mut inner = self.lock();
        let idx = inner.index(r);
        let existing = inner.objects[idx]
            .get(&key(ns, name))
            .map(|o| Value::clone(o))
            .ok_or_else(|| ApiError::not_found(r.group, r.plural, name))?;
        let actual_uid = existing["metadata"]["uid"].as_str().unwrap_or_default();
        if let Some(uid) = &opts.uid
            && uid != actual_uid
        {
            return Err(ApiError::uid_precondition(r.kind, name, uid, actual_uid));
        }
        let actual_rv = existing["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or_default();
        if let Some(rv) = &opts.resource_version
            && rv != actual_rv
        {
            return Err(ApiError::rv_precondition(r.kind, name, rv, actual_rv));
        }
        let grace = self::graceful_period(r, &existing, opts.grace_period_seconds);
        let has_finalizers = finalizers_pending(r, &existing);
        let mut obj = existing.clone();
        if r.kind == "Namespace" && r.group.is_empty() {
            obj["status"]["phase"] = json!("Terminating");
        }
        if grace.is_none() && !has_finalizers {
            if opts.dry_run {
                return Ok(obj);
            }
            // Upstream shortens a pending graceful deletion before removing the object
            // (`updateForGracefulDeletionAndFinalizers`): watchers see the grace period drop
            // to 0 in a MODIFIED, then the DELETED (pinned by the testbed's watch-order probe).
            if existing["metadata"]["deletionGracePeriodSeconds"]
                .as_i64()
                .is_some_and(|g| g > 0)
            {
                inner.rv += 1;
                obj["metadata"]["deletionGracePeriodSeconds"] = json!(0);
                obj["metadata"]["deletionTimestamp"] = json!(now());
                obj["metadata"]["resourceVersion"] = json!(inner.rv.to_string());
                self.record(&mut inner, idx, EventKind::Modified, Arc::new(obj.clone()));
            }
            inner.rv += 1;
            obj["metadata"]["resourceVersion"] = json!(inner.rv.to_string());
            inner.objects[idx].remove(&key(ns, name));
            self.record(&mut inner, idx, EventKind::Deleted, Arc::new(obj.clone()));
            if custom::is_definition(r) {
                self.follow_definition(&mut inner, &obj, true);
            }
            return Ok(obj);
        }
        let grace = grace.unwrap_or(0);
        let current_grace = existing["metadata"]["deletionGracePeriodSeconds"].as_i64();
        if current_grace.is_some_and(|g| g <= grace) {
            return Ok(existing);
        }
        let deadline = Timestamp::now()
            .checked_add(k8s_openapi::jiff::SignedDuration::from_secs(grace))
            .unwrap_or_else(|_| Timestamp::now());
        obj["metadata"]["deletionTimestamp"] =
            json!(deadline.strftime("%Y-%m-%dT%H:%M:%SZ").to_string());
        obj["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
        if opts.dry_run {
            return Ok(obj);
        }
        inner.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(inner.rv.to_string());
        let shared = Arc::new(obj);
        inner.objects[idx].insert(key(ns, name), shared.clone());
        self.record(&mut inner, idx, EventKind::Modified, shared.clone());
        Ok(Value::clone(&shared))
    }

    /// A watch: the changes after `since` still in history (or the current objects as ADDED
    /// when `since` is None), and a receiver for what follows. Too old → 410 Expired.
    pub fn watch(&self, r: &'static Resource, since: Option<u64>) -> Result<WatchStart, ApiError> {
        let inner = self.lock();
        let idx = inner.index(r);
        let receiver = self.changes.subscribe();
        let backlog = match since {
            None => inner.objects[idx]
                .by_key
                .values()
                .map(|o| {
                    Arc::new(Change {
                        rv: inner.rv,
                        resource: idx,
                        kind: EventKind::Added,
                        object: o.clone(),
                    })
                })
                .collect(),
            Some(rv) => {
                let oldest = inner.history.front().map_or(inner.rv + 1, |c| c.rv);
                if rv + 1 < oldest && rv < inner.rv {
                    return Err(ApiError::expired(rv, oldest - 1));
                }
                inner
                    .history
                    .iter()
                    .filter(|c| c.rv > rv && c.resource == idx)
                    .cloned()
                    .collect()
            }
        };
        Ok(WatchStart {
            backlog,
            receiver,
            rv: inner.rv,
        })
    }
}

/// Whether a deletion must wait: for `metadata.finalizers`, and for a Namespace also for
/// `spec.finalizers`, which the namespace controller empties once the namespace's content is
/// gone (upstream `pkg/registry/core/namespace/storage`).
fn finalizers_pending(r: &Resource, obj: &Value) -> bool {
    let pending = |v: &Value| v.as_array().is_some_and(|f| !f.is_empty());
    pending(&obj["metadata"]["finalizers"])
        || (r.group.is_empty() && r.kind == "Namespace" && pending(&obj["spec"]["finalizers"]))
}

/// The grace period a delete gets, or None when the object goes at once.
fn graceful_period(r: &Resource, pod: &Value, requested: Option<i64>) -> Option<i64> {
    if r.plural != "pods" || !r.group.is_empty() {
        return None;
    }
    let bound = pod["spec"]["nodeName"]
        .as_str()
        .is_some_and(|n| !n.is_empty());
    let terminal = matches!(
        pod["status"]["phase"].as_str(),
        Some("Succeeded" | "Failed")
    );
    let grace = requested
        .or_else(|| pod["spec"]["terminationGracePeriodSeconds"].as_i64())
        .unwrap_or(30)
        .max(0);
    (bound && !terminal && grace > 0).then_some(grace)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::resources::lookup;

    fn pods() -> &'static Resource {
        lookup("", "v1", "pods").unwrap()
    }

    #[test]
    fn resource_versions_increase_and_noop_updates_keep_them() {
        let store = Store::new(100);
        let created = store
            .create(pods(), "default", json!({"metadata": {"name": "a"}}), false)
            .unwrap();
        let rv: u64 = created["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        let same = store
            .update(pods(), "default", "a", created.clone(), Part::Main)
            .unwrap();
        assert_eq!(
            same["metadata"]["resourceVersion"],
            created["metadata"]["resourceVersion"]
        );
        let mut changed = created.clone();
        changed["metadata"]["labels"] = json!({"x": "y"});
        let after = store
            .update(pods(), "default", "a", changed, Part::Main)
            .unwrap();
        let rv2: u64 = after["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(rv2 > rv);
        let stale = store
            .update(pods(), "default", "a", created, Part::Main)
            .unwrap_err();
        assert_eq!(stale.code, 409);
    }

    #[test]
    fn bound_pods_terminate_gracefully() {
        let store = Store::new(100);
        store
            .create(
                pods(),
                "default",
                json!({"metadata": {"name": "a"}, "spec": {"nodeName": "n1"}}),
                false,
            )
            .unwrap();
        let deleted = store
            .delete(pods(), "default", "a", &DeleteOptions::default())
            .unwrap();
        assert_eq!(deleted["metadata"]["deletionGracePeriodSeconds"], json!(30));
        assert!(store.get(pods(), "default", "a").is_ok());
        let opts = DeleteOptions {
            grace_period_seconds: Some(0),
            ..Default::default()
        };
        store.delete(pods(), "default", "a", &opts).unwrap();
        assert_eq!(store.get(pods(), "default", "a").unwrap_err().code, 404);
    }

    #[test]
    fn node_index_follows_binding_and_deletion() {
        let store = Store::new(100);
        let on = |node: &str| {
            let fields = FieldSelector::parse(&format!("spec.nodeName={node}"), "pods").unwrap();
            let (items, _) = store.list(pods(), None, &LabelSelector::default(), &fields);
            items
                .iter()
                .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        };
        for (name, node) in [("a", json!("n1")), ("b", json!("n1")), ("c", json!(null))] {
            let pod = json!({"metadata": {"name": name}, "spec": {"nodeName": node}});
            store.create(pods(), "default", pod, false).unwrap();
        }
        assert_eq!(
            (on("n1"), on("")),
            (vec!["a".into(), "b".into()], vec!["c".into()])
        );
        store
            .modify(pods(), "default", "c", Part::Main, |p| {
                let mut p = p.clone();
                p["spec"]["nodeName"] = json!("n2");
                Ok(p)
            })
            .unwrap();
        let now = DeleteOptions {
            grace_period_seconds: Some(0),
            ..Default::default()
        };
        store.delete(pods(), "default", "a", &now).unwrap();
        assert_eq!(
            (on("n1"), on("n2"), on("")),
            (vec!["b".into()], vec!["c".into()], vec![])
        );
    }

    #[test]
    fn old_watches_expire() {
        let store = Store::new(2);
        for name in ["a", "b", "c", "d"] {
            store
                .create(
                    pods(),
                    "default",
                    json!({"metadata": {"name": name}}),
                    false,
                )
                .unwrap();
        }
        let expired = store.watch(pods(), Some(1)).err().map(|e| e.code);
        assert_eq!(expired, Some(410));
        let Ok(start) = store.watch(pods(), Some(store.resource_version() - 1)) else {
            panic!("a recent resourceVersion is still in history");
        };
        assert_eq!(start.backlog.len(), 1);
        assert_eq!(start.rv, store.resource_version());
    }
}
