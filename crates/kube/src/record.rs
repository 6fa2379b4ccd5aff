//! What a drain has done, recorded on the Node so that every later run — `quiesce drain` run
//! again, the drainer after a restart or a Lease handover, the next Lambda invocation — picks
//! up where the last one stopped instead of judging from what is left.
//!
//! The record is the annotation [`ANNOTATION`] (JSON with a schema [`VERSION`]), separate from
//! the drainer's lifecycle-action record. It holds each gated workload's Available count before
//! the first eviction (a resumed run that recounted would accept 2 of 3 after one pod went), the
//! Deployments already restarted by a surge (a second restart would roll every replica again),
//! and the evictions the API server accepted. Writes carry the Node's resourceVersion, so two
//! writers never overwrite each other blindly; a conflict re-reads and merges.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::Node;
use quiesce_core::WorkloadRef;
use serde::{Deserialize, Serialize};

use crate::cluster::GateTarget;
use crate::error::{Error, Result};

/// The Node annotation holding the record.
pub const ANNOTATION: &str = "quiesce.io/drain-state";
/// The schema version this build writes and reads.
pub const VERSION: u32 = 1;

/// One workload's part of the record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadRecord {
    /// Available pods before the first eviction: the gate's target on every run.
    pub available_before: i32,
    /// Whether a surge already restarted it.
    #[serde(default)]
    pub surged: bool,
}

/// The drain's record on one Node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DrainRecord {
    /// Schema version ([`VERSION`]).
    pub version: u32,
    /// Per workload (`Kind/namespace/name`).
    #[serde(default)]
    pub workloads: BTreeMap<String, WorkloadRecord>,
    /// UIDs of pods whose eviction the API server accepted.
    #[serde(default)]
    pub evicted: BTreeSet<String>,
}

impl DrainRecord {
    /// An empty record of the current version.
    pub fn new() -> Self {
        DrainRecord {
            version: VERSION,
            ..Default::default()
        }
    }

    /// Reads the record off a Node; `None` when there is none. A record this build cannot
    /// read (another schema version, bad JSON) is an error naming the annotation: guessing
    /// would put the gate's target at risk.
    pub fn of(node: &Node) -> Result<Option<DrainRecord>> {
        let name = node.metadata.name.clone().unwrap_or_default();
        let Some(text) = node
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(ANNOTATION))
        else {
            return Ok(None);
        };
        let record: DrainRecord = serde_json::from_str(text).map_err(|e| Error::Record {
            node: name.clone(),
            why: format!("annotation {ANNOTATION} is not a drain record ({e}): {text}"),
        })?;
        if record.version != VERSION {
            return Err(Error::Record {
                node: name,
                why: format!(
                    "annotation {ANNOTATION} has schema version {}, this build reads version {VERSION}",
                    record.version
                ),
            });
        }
        Ok(Some(record))
    }

    /// The recorded pre-drain count of `workload`.
    pub fn available_before(&self, workload: &WorkloadRef) -> Option<i32> {
        self.workloads
            .get(&workload.to_string())
            .map(|w| w.available_before)
    }

    /// Every workload with a recorded count, as gate targets.
    pub fn gates(&self) -> Vec<GateTarget> {
        self.workloads
            .iter()
            .filter_map(|(key, w)| {
                Some(GateTarget {
                    workload: parse_workload(key)?,
                    available_before: w.available_before,
                })
            })
            .collect()
    }

    /// The Deployments a surge already restarted.
    pub fn surged(&self) -> Vec<WorkloadRef> {
        self.workloads
            .iter()
            .filter(|(_, w)| w.surged)
            .filter_map(|(key, _)| parse_workload(key))
            .collect()
    }

    /// Records a pre-drain count unless one is recorded already (the first count wins).
    pub fn count(&mut self, workload: &WorkloadRef, available_before: i32) {
        self.workloads
            .entry(workload.to_string())
            .or_insert(WorkloadRecord {
                available_before,
                surged: false,
            });
    }

    /// Records that `workload` was restarted.
    pub fn mark_surged(&mut self, workload: &WorkloadRef) {
        self.workloads
            .entry(workload.to_string())
            .or_default()
            .surged = true;
    }

    /// Folds `mine` into this (freshly read) record: counts already there stay, surges and
    /// evictions add up. Used when a write met a concurrent change.
    pub fn merge(&mut self, mine: &DrainRecord) {
        for (key, w) in &mine.workloads {
            let entry = self.workloads.entry(key.clone()).or_insert(*w);
            entry.surged |= w.surged;
        }
        self.evicted.extend(mine.evicted.iter().cloned());
    }
}

fn parse_workload(key: &str) -> Option<WorkloadRef> {
    let mut parts = key.splitn(3, '/');
    Some(WorkloadRef {
        kind: parts.next()?.to_string(),
        namespace: parts.next()?.to_string(),
        name: parts.next()?.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn web() -> WorkloadRef {
        WorkloadRef {
            kind: "Deployment".into(),
            namespace: "default".into(),
            name: "web".into(),
        }
    }

    fn node_with(annotation: &str) -> Node {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "node-1", "annotations": {ANNOTATION: annotation}}
        }))
        .unwrap()
    }

    #[test]
    fn round_trips_and_the_first_count_wins() {
        let mut record = DrainRecord::new();
        record.count(&web(), 3);
        record.count(&web(), 2);
        record.mark_surged(&web());
        record.evicted.insert("uid-1".into());
        let text = serde_json::to_string(&record).unwrap();
        let back = DrainRecord::of(&node_with(&text)).unwrap().unwrap();
        assert_eq!(back, record);
        assert_eq!(back.available_before(&web()), Some(3));
        assert_eq!(back.surged(), [web()]);

        let mut theirs = DrainRecord::new();
        theirs.count(&web(), 1);
        theirs.merge(&record);
        assert_eq!(theirs.available_before(&web()), Some(1));
        assert_eq!(theirs.surged(), [web()]);
        assert!(theirs.evicted.contains("uid-1"));
    }

    #[test]
    fn another_version_or_bad_json_is_an_error_naming_the_annotation() {
        let err = DrainRecord::of(&node_with(r#"{"version": 2}"#)).unwrap_err();
        assert!(err.to_string().contains("schema version 2"), "{err}");
        let err = DrainRecord::of(&node_with("nope")).unwrap_err();
        assert!(err.to_string().contains(ANNOTATION), "{err}");
        let none: Node =
            serde_json::from_value(serde_json::json!({"metadata": {"name": "n"}})).unwrap();
        assert_eq!(DrainRecord::of(&none).unwrap(), None);
    }
}
