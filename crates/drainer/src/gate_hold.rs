//! Honouring `quiesce roll`'s gate ([`quiesce_aws::roll_gate`]): before a terminate hook's
//! node is drained, the drainer looks at the gate on that Node and, while it says hold, waits
//! (the hook keeps being heartbeated by the caller) instead of cordoning. That is how an
//! SLO breach holds an Instance Refresh: the refresh cannot terminate the next instance until
//! its hook is completed. A gate whose `until` has passed is open, so a roll that died while
//! red holds nothing past its bound; a corrupt gate is logged and treated as open (the gate
//! is an extra brake, never the reason a drain cannot happen).

use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use quiesce_aws::roll_gate::{ANNOTATION, RollGate};
use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::nodes::NodeIndex;

/// How often a held drain looks at the gate again: one Node GET per held hook per period.
pub const POLL: Duration = Duration::from_secs(1);

/// What the gate said before the drain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GateWait {
    /// Open from the start: nothing waited.
    Open,
    /// Held, then opened (or lapsed) at this time: the drain's deadline counts from here,
    /// since the hold was not the drain's time.
    Reopened(Timestamp),
    /// Still held when the time slice (the Lambda's) ran out: try again with the next slice.
    SliceEnded(String),
}

/// Whether `node`'s gate holds at `now`; the reason when it does.
pub fn holds(node: &Node, now: Timestamp) -> Option<String> {
    let value = node.annotations().get(ANNOTATION)?;
    let gate = RollGate::from_annotation(value)
        .inspect_err(|err| tracing::warn!(node = %node.name_any(), %err, "ignoring the roll gate"))
        .ok()?;
    if !gate.hold {
        return None;
    }
    match gate.until.parse::<Timestamp>() {
        Ok(until) if until > now => Some(format!(
            "roll {} holds terminations until {}: {}",
            gate.roll, gate.until, gate.reason
        )),
        Ok(_) => None,
        Err(err) => {
            tracing::warn!(node = %node.name_any(), until = %gate.until, %err, "roll gate with a bad until: ignored");
            None
        }
    }
}

/// Waits while `node`'s gate holds, up to `slice_end`.
pub async fn wait(nodes: &NodeIndex, node: &str, slice_end: Option<Instant>) -> Result<GateWait> {
    let mut held = false;
    loop {
        let found = nodes
            .get(node)
            .await
            .map_err(|e| Error::kube(format!("reading the roll gate on {node}"), e))?;
        let reason = found.as_ref().and_then(|n| holds(n, Timestamp::now()));
        let Some(reason) = reason else {
            return Ok(if held {
                tracing::info!(%node, "the roll gate opened; draining");
                GateWait::Reopened(Timestamp::now())
            } else {
                GateWait::Open
            });
        };
        if !held {
            tracing::info!(%node, %reason, "holding the terminate hook (heartbeating) while the roll gate is red");
            held = true;
        }
        if slice_end.is_some_and(|end| Instant::now() + POLL >= end) {
            return Ok(GateWait::SliceEnded(reason));
        }
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(gate: Option<&RollGate>) -> Node {
        let mut node = Node::default();
        if let Some(gate) = gate {
            node.metadata.annotations =
                Some([(ANNOTATION.to_string(), gate.to_annotation())].into());
        }
        node
    }

    #[test]
    fn holds_only_while_red_and_before_until() {
        let now: Timestamp = "2026-12-01T20:00:00Z".parse().unwrap();
        let red = RollGate {
            hold: true,
            reason: "5xx rate 0.9 >= 0.5".into(),
            until: "2026-12-01T20:30:00Z".into(),
            roll: "r-1".into(),
        };
        let reason = holds(&node(Some(&red)), now).expect("red gate holds");
        assert!(reason.contains("0.9") && reason.contains("r-1"), "{reason}");
        let lapsed = RollGate {
            until: "2026-12-01T19:59:59Z".into(),
            ..red.clone()
        };
        assert_eq!(
            holds(&node(Some(&lapsed)), now),
            None,
            "a lapsed gate is open"
        );
        let green = RollGate {
            hold: false,
            ..red.clone()
        };
        assert_eq!(holds(&node(Some(&green)), now), None);
        assert_eq!(holds(&node(None), now), None);
        let mut corrupt = node(None);
        corrupt.metadata.annotations = Some([(ANNOTATION.to_string(), "{".to_string())].into());
        assert_eq!(holds(&corrupt, now), None, "a corrupt gate is open");
    }
}
