//! The lifecycle action in flight, recorded on the Node as an annotation so that a restarted
//! drainer resumes it and a duplicate message is recognised instead of run twice.
//!
//! The record is also the lock on the node's action: it names the actor holding it
//! ([`InFlight::holder`]) until when ([`InFlight::held_until`]), and every write of it is
//! conditional on the Node's resourceVersion, so two drainers (an old and a new leader, two
//! Lambda invocations, the Lambda and the Deployment) cannot both act on one node. The record
//! carries its schema version ([`InFlight::version`]): a drainer leaves alone a record written
//! by a newer schema it does not understand, instead of overwriting what it cannot read.

use serde::{Deserialize, Serialize};

use crate::event::{LifecycleAction, Transition};

/// The Node annotation that holds an [`InFlight`] record as JSON.
pub const ANNOTATION: &str = "quiesce.io/lifecycle-action";

/// The schema this code writes. 1: the first record (no version field, no holder: written by
/// unconditional patches); 2: holder and hold time, written with resourceVersion
/// preconditions.
pub const SCHEMA: u32 = 2;

fn legacy_schema() -> u32 {
    1
}

/// Where the action stands; a restarted drainer picks up from here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Received, nothing changed yet.
    Received,
    /// The drain engine is running.
    Draining,
    /// Drained; CONTINUE is being sent.
    Completing,
    /// The drain failed or ran out of time; ABANDON is being sent, then the node is uncordoned
    /// if its instance stays.
    Abandoning,
    /// CONTINUE was accepted: a message for this token again is a duplicate.
    Continued,
    /// ABANDON was accepted: a message for this token again is a duplicate.
    Abandoned,
}

impl Phase {
    /// Whether the hook has been completed, so nothing is left to do for this token.
    pub fn is_final(self) -> bool {
        matches!(self, Phase::Continued | Phase::Abandoned)
    }
}

/// One action in flight.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InFlight {
    /// The schema version that wrote the record (absent in version 1).
    #[serde(rename = "v", default = "legacy_schema")]
    pub version: u32,
    /// The instance.
    pub instance_id: String,
    /// Its Auto Scaling group.
    pub group: String,
    /// The hook.
    pub hook: String,
    /// The token that completes exactly this action.
    pub token: String,
    /// `terminating` or `launching`.
    pub transition: String,
    /// Where it stands.
    pub phase: Phase,
    /// When the drain gives up (RFC 3339).
    pub deadline: String,
    /// Why it is abandoning or abandoned, for the person who finds the node still there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The actor (drainer replica, Lambda invocation) that holds the action; `None` once
    /// released or final. Another actor takes over only after [`InFlight::held_until`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder: Option<String>,
    /// Until when the holder's claim stands unless it renews it (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_until: Option<String>,
    /// Whether the node was already unschedulable before the drainer cordoned it (an
    /// operator's cordon), so that an uncordon restores what the drainer found.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub found_cordoned: bool,
}

/// Why an annotation value is no lifecycle record.
#[derive(Debug, thiserror::Error)]
#[error("annotation {ANNOTATION} is not a lifecycle record: {0}")]
pub struct RecordError(#[from] serde_json::Error);

impl InFlight {
    /// A fresh record for `action`, due at `deadline`.
    pub fn new(action: &LifecycleAction, deadline: String) -> InFlight {
        InFlight {
            version: SCHEMA,
            instance_id: action.instance_id.clone(),
            group: action.group.clone(),
            hook: action.hook.clone(),
            token: action.token.clone(),
            transition: match action.transition {
                Transition::Terminating => "terminating",
                Transition::Launching => "launching",
            }
            .into(),
            phase: Phase::Received,
            deadline,
            reason: None,
            holder: None,
            held_until: None,
            found_cordoned: false,
        }
    }

    /// Whether `action` is this one again (a redelivered or duplicated message).
    pub fn is_same(&self, action: &LifecycleAction) -> bool {
        self.token == action.token && self.instance_id == action.instance_id
    }

    /// The annotation value.
    pub fn to_annotation(&self) -> String {
        serde_json::to_string(self).expect("the record serialises")
    }

    /// Reads an annotation value; a corrupt one is an error naming the annotation.
    pub fn from_annotation(value: &str) -> Result<InFlight, RecordError> {
        Ok(serde_json::from_str(value)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn action(token: &str) -> LifecycleAction {
        LifecycleAction {
            transition: Transition::Terminating,
            group: "eks-workers".into(),
            hook: "quiesce-drain".into(),
            instance_id: "i-0abc".into(),
            token: token.into(),
            metadata: None,
            time: None,
        }
    }

    #[test]
    fn round_trips_and_recognises_duplicates() {
        let mut record = InFlight::new(&action("t-1"), "2026-11-23T08:30:00Z".into());
        record.phase = Phase::Draining;
        let text = record.to_annotation();
        assert!(text.contains("\"phase\":\"draining\""), "{text}");
        let back = InFlight::from_annotation(&text).unwrap();
        assert_eq!(back, record);
        assert!(back.is_same(&action("t-1")));
        assert!(!back.is_same(&action("t-2")), "a new token is a new action");
        let err = InFlight::from_annotation("{oops").unwrap_err().to_string();
        assert!(err.contains(ANNOTATION), "{err}");
    }

    #[test]
    fn a_record_without_a_version_is_schema_1() {
        let legacy = r#"{"instanceId":"i-0abc","group":"g","hook":"h","token":"t-1","transition":"terminating","phase":"draining","deadline":"2026-11-23T08:30:00Z"}"#;
        let record = InFlight::from_annotation(legacy).unwrap();
        assert_eq!(record.version, 1);
        assert_eq!(record.holder, None);
        let fresh = InFlight::new(&action("t-1"), String::new()).to_annotation();
        assert!(fresh.contains(&format!("\"v\":{SCHEMA}")), "{fresh}");
    }
}
