//! The roll's gate, as the drainer reads it: an annotation on each Node of the group being
//! rolled. An Instance Refresh never waits for anyone between its checkpoints, so `quiesce
//! roll` holds it through the one step it cannot skip: every terminate hook waits for the
//! drainer. While the gate says hold, the drainer heartbeats a newly arrived terminate hook
//! without draining its node, so no further node goes until the SLO is good again; drains
//! already under way finish.
//!
//! Why an annotation on the Nodes and not a ConfigMap or the drainer's Lease: both drainers
//! (the Deployment and the Lambda) already read and patch Nodes, so no new permission is
//! needed and the Lambda, which has no Lease, reads it the same way; the drainer holds the
//! node it is about to drain in hand anyway; and the Lease is written by its holder with a
//! resourceVersion precondition that every write of ours would make fail.
//!
//! The gate carries the time it lapses by itself ([`RollGate::until`]): a roll that died while
//! the gate was red must not hold the group's hooks for longer than its `--hold-max`.

use serde::{Deserialize, Serialize};

/// The Node annotation holding a [`RollGate`] as JSON.
pub const ANNOTATION: &str = "quiesce.io/roll-gate";

/// What the roll tells the drainer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RollGate {
    /// `true`: do not start draining a node for a new terminate hook (heartbeat and wait).
    pub hold: bool,
    /// Why, for the drainer's log and the node's events: the SLO query and its value.
    #[serde(default)]
    pub reason: String,
    /// When the hold lapses even if nobody opens the gate (RFC 3339).
    pub until: String,
    /// The roll that wrote it (its group), for a person reading the Node.
    #[serde(default)]
    pub roll: String,
}

/// Why an annotation value is no gate.
#[derive(Debug, thiserror::Error)]
#[error("annotation {ANNOTATION} is not a roll gate: {0}")]
pub struct GateError(#[from] serde_json::Error);

impl RollGate {
    /// The annotation value.
    pub fn to_annotation(&self) -> String {
        serde_json::to_string(self).expect("the gate serialises")
    }

    /// Reads an annotation value; a corrupt one is an error naming the annotation.
    pub fn from_annotation(value: &str) -> Result<RollGate, GateError> {
        Ok(serde_json::from_str(value)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_names_the_annotation_when_corrupt() {
        let gate = RollGate {
            hold: true,
            reason: "error rate 0.9 >= 0.5".into(),
            until: "2026-12-01T20:00:00Z".into(),
            roll: "r-1".into(),
        };
        let text = gate.to_annotation();
        assert!(text.contains("\"hold\":true"), "{text}");
        assert_eq!(RollGate::from_annotation(&text).unwrap(), gate);
        let err = RollGate::from_annotation("{").unwrap_err().to_string();
        assert!(err.contains(ANNOTATION), "{err}");
    }
}
