//! The outside record a chaos run is judged by: the sandbox's watch history (every change to
//! pods, ReplicaSets, nodes and Events since the roll began), its audit log of the drainers'
//! requests, and the simulated group's own history. Nothing here asks a drainer anything.

use std::collections::HashMap;
use std::sync::Arc;

use quiesce_sandbox::api::resources::{RESOURCES, lookup};
use quiesce_sandbox::api::status::ApiError;
use quiesce_sandbox::api::store::{Change, EventKind, Store};
use quiesce_sandbox::api::{Audited, FaultKind};
use serde_json::Value;

use crate::asg::Record;

/// The resources whose past the checks read.
const WATCHED: [&str; 4] = ["pods", "replicasets", "nodes", "events"];

/// Why the record could not be read whole.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The watch history no longer reaches back to the start of the roll: the checks would
    /// judge a partial past, so they refuse.
    #[error("the sandbox's watch history lost the start of the roll: {0}")]
    HistoryLost(String),
}

/// The cluster as it stood when the record starts.
pub struct Baseline {
    revision: u64,
    objects: Vec<Arc<Change>>,
}

impl Baseline {
    /// Every object of the watched resources now.
    pub fn take(store: &Store) -> Result<Baseline, RecordError> {
        let mut objects = Vec::new();
        let mut revision = 0;
        for plural in WATCHED {
            let start = watch(store, plural, None)?;
            revision = revision.max(start.rv);
            objects.extend(start.backlog);
        }
        Ok(Baseline { revision, objects })
    }
}

fn watch(
    store: &Store,
    plural: &str,
    since: Option<u64>,
) -> Result<quiesce_sandbox::api::store::WatchStart, RecordError> {
    let resource = lookup("", "v1", plural)
        .or_else(|| lookup("apps", "v1", plural))
        .expect("the watched resources are served");
    store
        .watch(resource, since)
        .map_err(|e: ApiError| RecordError::HistoryLost(e.message))
}

/// Everything the checks read, gathered once the run is over.
pub struct Evidence {
    /// The cluster at the start.
    pub baseline: Vec<Arc<Change>>,
    /// Every change since, oldest first.
    pub changes: Vec<Arc<Change>>,
    /// The group's history.
    pub group: Vec<Record>,
    /// Messages in the dead-letter queue at the end.
    pub dead_letters: usize,
    /// The requests that carried the audit header (the drainers' and the lab's own).
    pub audit: Vec<Audited>,
    /// Requests of the live traffic that failed.
    pub failed_requests: u64,
}

impl Evidence {
    /// Reads the watch history since `baseline` out of `store`.
    pub fn gather(
        store: &Store,
        baseline: Baseline,
        group: Vec<Record>,
        dead_letters: usize,
        audit: Vec<Audited>,
        failed_requests: u64,
    ) -> Result<Evidence, RecordError> {
        let mut changes = Vec::new();
        for plural in WATCHED {
            changes.extend(watch(store, plural, Some(baseline.revision))?.backlog);
        }
        changes.sort_by_key(|c| c.rv);
        Ok(Evidence {
            baseline: baseline.objects,
            changes,
            group,
            dead_letters,
            audit,
            failed_requests,
        })
    }
}

/// Which of the watched resources a change is about.
pub fn plural_of(change: &Change) -> &'static str {
    RESOURCES.get(change.resource).map_or("", |r| r.plural)
}

/// The cluster at one revision, replayed from the record. Advanced only forwards.
pub struct World<'a> {
    changes: &'a [Arc<Change>],
    next: usize,
    objects: HashMap<(&'static str, String, String), Arc<Value>>,
}

fn key_of(plural: &'static str, object: &Value) -> (&'static str, String, String) {
    let meta = &object["metadata"];
    (
        plural,
        meta["namespace"].as_str().unwrap_or_default().to_string(),
        meta["name"].as_str().unwrap_or_default().to_string(),
    )
}

impl<'a> World<'a> {
    /// The cluster at the start of `evidence`.
    pub fn new(evidence: &'a Evidence) -> World<'a> {
        let mut objects = HashMap::new();
        for c in &evidence.baseline {
            let plural = plural_of(c);
            objects.insert(key_of(plural, &c.object), c.object.clone());
        }
        World {
            changes: &evidence.changes,
            next: 0,
            objects,
        }
    }

    /// Applies every change up to and including `revision`.
    pub fn advance(&mut self, revision: u64) {
        while let Some(c) = self.changes.get(self.next)
            && c.rv <= revision
        {
            let key = key_of(plural_of(c), &c.object);
            match c.kind {
                EventKind::Deleted => {
                    self.objects.remove(&key);
                }
                EventKind::Added | EventKind::Modified => {
                    self.objects.insert(key, c.object.clone());
                }
            }
            self.next += 1;
        }
    }

    /// The objects of `plural` now.
    pub fn all(&self, plural: &'static str) -> impl Iterator<Item = &Value> {
        self.objects
            .iter()
            .filter(move |(k, _)| k.0 == plural)
            .map(|(_, v)| v.as_ref())
    }

    /// One object now.
    pub fn get(&self, plural: &'static str, namespace: &str, name: &str) -> Option<&Value> {
        self.objects
            .get(&(plural, namespace.to_string(), name.to_string()))
            .map(|v| v.as_ref())
    }
}

/// The pod an eviction request names: `(namespace, name)`.
pub fn evicted_pod(request: &Audited) -> Option<(&str, &str)> {
    let rest = request.path.strip_prefix("/api/v1/namespaces/")?;
    let mut parts = rest.split('/');
    let (ns, pods, name, eviction) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    (request.method == "POST" && pods == "pods" && eviction == "eviction").then_some((ns, name))
}

/// The node a Node write names.
pub fn written_node(request: &Audited) -> Option<&str> {
    let name = request.path.strip_prefix("/api/v1/nodes/")?;
    (matches!(request.method.as_str(), "PATCH" | "PUT") && !name.contains('/')).then_some(name)
}

/// The drainer's lifecycle record on a Node (its annotation, parsed), as the API server holds it.
pub fn lifecycle_record(node: &Value) -> Option<Value> {
    let record = node["metadata"]["annotations"][quiesce_aws::record::ANNOTATION].as_str()?;
    serde_json::from_str(record).ok()
}

/// The phase the lifecycle record on node `name` names now, read from `store`.
pub fn record_phase(store: &Store, name: &str) -> Option<String> {
    let nodes = lookup("", "v1", "nodes")?;
    let node = store.get(nodes, "", name).ok()?;
    lifecycle_record(&node)?["phase"]
        .as_str()
        .map(str::to_string)
}

/// Whether the request was answered with success.
pub fn succeeded(request: &Audited) -> bool {
    request.status.is_some_and(|s| (200..300).contains(&s))
}

/// The name a fault kind is counted under.
pub fn fault_name(fault: FaultKind) -> &'static str {
    match fault {
        FaultKind::InternalError => "api-500",
        FaultKind::Timeout(_) => "api-504",
        FaultKind::Delay(_) => "api-slow",
        FaultKind::Hang => "api-hang",
        FaultKind::TooManyRequests { .. } => "api-429",
        FaultKind::ServiceUnavailable { .. } => "api-503",
        FaultKind::CutWatch(_) => "api-watch-cut",
        FaultKind::Gone => "api-410",
    }
}
