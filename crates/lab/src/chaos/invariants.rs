//! The guarantees of a roll, checked from the outside record ([`super::record`]) alone:
//!
//! - I1 each lifecycle action was completed exactly once, by a drainer (none expired to its
//!   default result); a terminate action got CONTINUE only when no pod but DaemonSet, mirror
//!   and finished pods was left on its node and every workload that had pods there had, at
//!   that moment, at least its pre-drain Ready count Ready on other nodes. An ABANDON whose
//!   instance was terminated all the same (its Node deleted afterwards: a group without the
//!   `TerminateHookAbandon: retain` trigger) took the node's pods with it just as a CONTINUE
//!   does, so it is held to the same rule;
//! - I2 no message was deleted before its action was over; nothing went to the dead-letter
//!   queue;
//! - I3 never two drainers acting on one node at once: every eviction a drainer got through
//!   came while the node's lifecycle record (the lock, as the API server held it then) named
//!   that drainer as its holder; drainers may take turns on a node, never overlap;
//! - I4 no node is left cordoned without a recorded reason, and every ABANDON has an Event;
//! - I5 no request of the live traffic failed.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Serialize;
use serde_json::Value;

use quiesce_sandbox::api::store::EventKind;

use super::record::{Evidence, World, evicted_pod, lifecycle_record, plural_of, succeeded};
use crate::asg::GroupEvent;

/// One invariant's outcome.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Verdict {
    /// No violation.
    pub held: bool,
    /// How many things were checked (actions, messages, writes, nodes, requests).
    pub checked: usize,
    /// Every violation, in the order found.
    pub violations: Vec<String>,
}

impl Verdict {
    fn new(checked: usize, violations: Vec<String>) -> Verdict {
        Verdict {
            held: violations.is_empty(),
            checked,
            violations,
        }
    }
}

/// All five.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Invariants {
    /// Exactly once, by a drainer; CONTINUE only when the node is empty and every workload
    /// whole elsewhere.
    #[serde(rename = "I1")]
    pub i1: Verdict,
    /// No message deleted early; nothing dead-lettered.
    #[serde(rename = "I2")]
    pub i2: Verdict,
    /// One drainer per node at a time.
    #[serde(rename = "I3")]
    pub i3: Verdict,
    /// Every cordon and ABANDON explained.
    #[serde(rename = "I4")]
    pub i4: Verdict,
    /// No failed request.
    #[serde(rename = "I5")]
    pub i5: Verdict,
}

impl Invariants {
    /// Checks `evidence`; `drainers` are the audit callers (by prefix) that are drainers.
    pub fn check(evidence: &Evidence, drainers: &[String]) -> Invariants {
        Invariants {
            i1: exactly_once_and_whole(evidence, drainers),
            i2: messages(evidence),
            i3: one_actor(evidence, drainers),
            i4: explained(evidence, drainers),
            i5: Verdict::new(
                1,
                if evidence.failed_requests == 0 {
                    Vec::new()
                } else {
                    vec![format!(
                        "{} requests of the live traffic failed",
                        evidence.failed_requests
                    )]
                },
            ),
        }
    }

    /// Whether all five held.
    pub fn all_held(&self) -> bool {
        self.each().iter().all(|(_, v)| v.held)
    }

    /// `(name, verdict)` in order.
    pub fn each(&self) -> [(&'static str, &Verdict); 5] {
        [
            ("I1", &self.i1),
            ("I2", &self.i2),
            ("I3", &self.i3),
            ("I4", &self.i4),
            ("I5", &self.i5),
        ]
    }
}

fn is_drainer(caller: &str, drainers: &[String]) -> bool {
    drainers.iter().any(|d| caller.starts_with(d.as_str()))
}

/// What a pod belongs to, by its controller chain: `Deployment/ns/name`, `StatefulSet/ns/name`
/// …; `None` for DaemonSet pods, mirror pods and unowned pods' absence of a workload.
fn workload(world: &World, pod: &Value) -> Option<String> {
    let ns = pod["metadata"]["namespace"].as_str().unwrap_or_default();
    let owner = controller(pod)?;
    let (kind, name) = owner;
    if kind == "ReplicaSet" {
        let rs = world.get("replicasets", ns, name);
        if let Some((k, n)) = rs.and_then(controller) {
            return Some(format!("{k}/{ns}/{n}"));
        }
    }
    Some(format!("{kind}/{ns}/{name}"))
}

fn controller(object: &Value) -> Option<(&str, &str)> {
    object["metadata"]["ownerReferences"]
        .as_array()?
        .iter()
        .find(|o| o["controller"] == true)
        .map(|o| {
            (
                o["kind"].as_str().unwrap_or_default(),
                o["name"].as_str().unwrap_or_default(),
            )
        })
}

/// A pod the drain leaves on a node: a DaemonSet's, a mirror pod, a finished one.
fn may_stay(pod: &Value) -> bool {
    controller(pod).is_some_and(|(k, _)| k == "DaemonSet")
        || pod["metadata"]["annotations"]["kubernetes.io/config.mirror"].is_string()
        || matches!(
            pod["status"]["phase"].as_str(),
            Some("Succeeded" | "Failed")
        )
}

fn node_of(pod: &Value) -> &str {
    pod["spec"]["nodeName"].as_str().unwrap_or_default()
}

fn pod_name(pod: &Value) -> String {
    format!(
        "{}/{}",
        pod["metadata"]["namespace"].as_str().unwrap_or_default(),
        pod["metadata"]["name"].as_str().unwrap_or_default()
    )
}

/// Ready, and not on its way out.
fn serving(pod: &Value) -> bool {
    pod["metadata"]["deletionTimestamp"].is_null()
        && pod["status"]["conditions"].as_array().is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

/// Ready pods per workload, leaving out those on `except`.
fn ready_by_workload(world: &World, except: Option<&str>) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for pod in world.all("pods") {
        if !serving(pod) || except.is_some_and(|n| node_of(pod) == n) {
            continue;
        }
        if let Some(w) = workload(world, pod) {
            *out.entry(w).or_default() += 1;
        }
    }
    out
}

fn exactly_once_and_whole(evidence: &Evidence, drainers: &[String]) -> Verdict {
    let mut violations = Vec::new();
    // Per action: where it started, and each completion.
    struct Started {
        node: String,
        instance: String,
        launching: bool,
        revision: u64,
    }
    let mut started: BTreeMap<String, Started> = BTreeMap::new();
    let mut completions: HashMap<String, Vec<(String, String, u64)>> = HashMap::new();
    for r in &evidence.group {
        match &r.event {
            GroupEvent::ActionStarted {
                token,
                instance,
                node,
                launching,
            } => {
                started.insert(
                    token.clone(),
                    Started {
                        node: node.clone(),
                        instance: instance.clone(),
                        launching: *launching,
                        revision: r.revision,
                    },
                );
            }
            GroupEvent::Completed {
                token,
                result,
                caller,
                completed: true,
            } => completions.entry(token.clone()).or_default().push((
                result.clone(),
                caller.clone(),
                r.revision,
            )),
            GroupEvent::Expired { token } => {
                let what = started
                    .get(token)
                    .map(|s| format!("{} ({})", s.node, s.instance))
                    .unwrap_or_default();
                violations.push(format!(
                    "the lifecycle action {token} of {what} expired to its default result"
                ));
            }
            _ => {}
        }
    }
    // Nodes deleted during the roll: their instances terminated.
    let deleted: BTreeSet<&str> = evidence
        .changes
        .iter()
        .filter(|c| c.kind == EventKind::Deleted && plural_of(c) == "nodes")
        .filter_map(|c| c.object["metadata"]["name"].as_str())
        .collect();
    // The CONTINUE checks, in the order of the history (the world only moves forwards).
    let mut probes: Vec<(u64, u64, &str, &Started, &str)> = Vec::new();
    for (token, s) in &started {
        let done = completions.get(token).map(Vec::as_slice).unwrap_or(&[]);
        match done {
            [] => violations.push(format!(
                "the lifecycle action {token} of {} ({}) was never completed",
                s.node, s.instance
            )),
            [(result, caller, revision)] => {
                if !is_drainer(caller, drainers) {
                    violations.push(format!(
                        "the lifecycle action {token} of {} was completed by {caller}, not a drainer",
                        s.node
                    ));
                }
                let terminated = result == "CONTINUE" || deleted.contains(s.node.as_str());
                if terminated && !s.launching {
                    let what = if result == "CONTINUE" {
                        "CONTINUE"
                    } else {
                        "ABANDON (the instance terminated all the same)"
                    };
                    probes.push((s.revision, *revision, token, s, what));
                }
            }
            many => violations.push(format!(
                "the lifecycle action {token} of {} was completed {} times ({})",
                s.node,
                many.len(),
                many.iter()
                    .map(|(r, c, _)| format!("{r} by {c}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        }
    }
    // Two passes over the history: the pre-drain counts at each start, then the state at
    // each CONTINUE.
    probes.sort_by_key(|p| p.0);
    let mut world = World::new(evidence);
    let mut before: HashMap<&str, (BTreeSet<String>, BTreeMap<String, usize>)> = HashMap::new();
    for (start, _, token, s, _) in &probes {
        world.advance(*start);
        let there: BTreeSet<String> = world
            .all("pods")
            .filter(|p| node_of(p) == s.node && !may_stay(p))
            .filter_map(|p| workload(&world, p))
            .collect();
        before.insert(token, (there, ready_by_workload(&world, None)));
    }
    probes.sort_by_key(|p| p.1);
    let mut world = World::new(evidence);
    for (_, at, token, s, what) in &probes {
        world.advance(*at);
        let left: Vec<String> = world
            .all("pods")
            .filter(|p| node_of(p) == s.node && !may_stay(p))
            .map(pod_name)
            .collect();
        if !left.is_empty() {
            violations.push(format!(
                "{what} for {} while {} were still on it",
                s.node,
                left.join(", ")
            ));
        }
        let (there, counts) = &before[token];
        let now = ready_by_workload(&world, Some(&s.node));
        for w in there {
            let (had, has) = (
                counts.get(w).copied().unwrap_or(0),
                now.get(w).copied().unwrap_or(0),
            );
            if has < had {
                violations.push(format!(
                    "{what} for {} with {w} at {has} Ready elsewhere, below its {had} before the drain",
                    s.node
                ));
            }
        }
    }
    Verdict::new(started.len(), violations)
}

fn messages(evidence: &Evidence) -> Verdict {
    let mut violations = Vec::new();
    let mut over = BTreeSet::new();
    let mut deletes = 0;
    for r in &evidence.group {
        match &r.event {
            GroupEvent::Completed {
                token,
                completed: true,
                ..
            }
            | GroupEvent::Expired { token } => {
                over.insert(token.clone());
            }
            GroupEvent::Deleted {
                message,
                token,
                caller,
            } => {
                deletes += 1;
                if !over.contains(token) {
                    violations.push(format!(
                        "{caller} deleted message {message} before its action {token} was completed"
                    ));
                }
            }
            GroupEvent::DeadLettered { message, token } => violations.push(format!(
                "message {message} (action {token}) went to the dead-letter queue"
            )),
            _ => {}
        }
    }
    if evidence.dead_letters > 0 && violations.iter().all(|v| !v.contains("dead-letter")) {
        violations.push(format!(
            "{} messages in the dead-letter queue",
            evidence.dead_letters
        ));
    }
    Verdict::new(deletes, violations)
}

/// The drainer identity an audit caller acts as: the header is `identity` or
/// `identity#incarnation`.
fn identity(caller: &str) -> &str {
    caller.split('#').next().unwrap_or(caller)
}

fn holder(node: &Value) -> Option<String> {
    lifecycle_record(node)?["holder"]
        .as_str()
        .map(str::to_string)
}

fn one_actor(evidence: &Evidence, drainers: &[String]) -> Verdict {
    let mut violations = Vec::new();
    let mut world = World::new(evidence);
    let mut checked = 0;
    let mut evictions: Vec<_> = evidence
        .audit
        .iter()
        .filter(|a| is_drainer(&a.caller, drainers) && succeeded(a) && evicted_pod(a).is_some())
        .collect();
    evictions.sort_by_key(|a| a.revision);
    for a in evictions {
        world.advance(a.revision);
        let Some((ns, pod)) = evicted_pod(a) else {
            continue;
        };
        let Some(p) = world.get("pods", ns, pod) else {
            continue;
        };
        let node = node_of(p).to_string();
        checked += 1;
        let held = world.get("nodes", "", &node).and_then(holder);
        if held.as_deref() != Some(identity(&a.caller)) {
            violations.push(format!(
                "{} evicted {ns}/{pod} from {node} while the node's record was held by {}",
                a.caller,
                held.as_deref().unwrap_or("nobody")
            ));
        }
    }
    Verdict::new(checked, violations)
}

fn explained(evidence: &Evidence, drainers: &[String]) -> Verdict {
    let mut violations = Vec::new();
    let mut world = World::new(evidence);
    world.advance(u64::MAX);
    let events: Vec<&Value> = world.all("events").collect();
    let has_event = |node: &str| {
        events.iter().any(|e| {
            e["involvedObject"]["kind"] == "Node"
                && e["involvedObject"]["name"] == node
                && e["source"]["component"] == "quiesce"
                && matches!(
                    e["reason"].as_str(),
                    Some(
                        "LifecycleAbandoned" | "LifecycleExpired" | "DrainBlocked" | "DrainFailed"
                    )
                )
        })
    };
    let mut checked = 0;
    for node in world.all("nodes") {
        checked += 1;
        let name = node["metadata"]["name"].as_str().unwrap_or_default();
        if node["spec"]["unschedulable"] == true && !has_event(name) {
            let reason =
                lifecycle_record(node).and_then(|r| r["reason"].as_str().map(str::to_string));
            if reason.is_none() {
                violations.push(format!("{name} is left cordoned with no recorded reason"));
            }
        }
    }
    // Terminate actions only: an abandoned launch replaces the instance, nothing to explain.
    let nodes: HashMap<&str, &str> = evidence
        .group
        .iter()
        .filter_map(|r| match &r.event {
            GroupEvent::ActionStarted {
                token,
                node,
                launching: false,
                ..
            } => Some((token.as_str(), node.as_str())),
            _ => None,
        })
        .collect();
    for r in &evidence.group {
        if let GroupEvent::Completed {
            token,
            result,
            caller,
            completed: true,
        } = &r.event
            && result == "ABANDON"
            && is_drainer(caller, drainers)
            && let Some(node) = nodes.get(token.as_str()).copied()
        {
            checked += 1;
            if !has_event(node) {
                violations.push(format!(
                    "{caller} abandoned the hook of {node} with no Event saying why"
                ));
            }
        }
    }
    Verdict::new(checked, violations)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use quiesce_sandbox::api::Audited;
    use quiesce_sandbox::api::resources::RESOURCES;
    use quiesce_sandbox::api::store::{Change, EventKind};
    use serde_json::json;

    use super::*;
    use crate::asg::Record;

    fn at(revision: u64, event: GroupEvent) -> Record {
        Record {
            t: revision as f64,
            revision,
            event,
        }
    }

    fn started(token: &str, node: &str) -> GroupEvent {
        GroupEvent::ActionStarted {
            token: token.into(),
            instance: format!("i-{node}"),
            node: node.into(),
            launching: false,
        }
    }

    fn completed(token: &str, result: &str, caller: &str) -> GroupEvent {
        GroupEvent::Completed {
            token: token.into(),
            result: result.into(),
            caller: caller.into(),
            completed: true,
        }
    }

    fn change(rv: u64, plural: &str, object: serde_json::Value) -> Arc<Change> {
        Arc::new(Change {
            rv,
            resource: RESOURCES.iter().position(|r| r.plural == plural).unwrap(),
            kind: EventKind::Added,
            object: Arc::new(object),
        })
    }

    fn pod(name: &str, node: &str, ready: bool) -> serde_json::Value {
        json!({"metadata": {"name": name, "namespace": "default",
                "ownerReferences": [{"kind": "StatefulSet", "name": "db", "controller": true}]},
            "spec": {"nodeName": node},
            "status": {"conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]}})
    }

    fn evidence(group: Vec<Record>, changes: Vec<Arc<Change>>, audit: Vec<Audited>) -> Evidence {
        Evidence {
            baseline: Vec::new(),
            changes,
            group,
            dead_letters: 0,
            audit,
            failed_requests: 0,
        }
    }

    const DRAINERS: &[&str] = &["drainer"];

    fn check(e: &Evidence) -> Invariants {
        let d: Vec<String> = DRAINERS.iter().map(|s| s.to_string()).collect();
        Invariants::check(e, &d)
    }

    #[test]
    fn a_clean_roll_holds_every_invariant() {
        let e = evidence(
            vec![
                at(2, started("t1", "node-1")),
                at(4, completed("t1", "CONTINUE", "drainer#1")),
                at(
                    5,
                    GroupEvent::Deleted {
                        message: "m1".into(),
                        token: "t1".into(),
                        caller: "drainer#1".into(),
                    },
                ),
            ],
            vec![
                change(1, "pods", pod("db-0", "node-1", true)),
                change(1, "pods", pod("db-1", "node-2", true)),
                change(3, "pods", pod("db-0", "node-3", true)),
            ],
            Vec::new(),
        );
        let inv = check(&e);
        assert!(inv.all_held(), "{inv:#?}");
    }

    #[test]
    fn a_continue_before_the_replacement_is_ready_violates_i1() {
        let e = evidence(
            vec![
                at(2, started("t1", "node-1")),
                at(4, completed("t1", "CONTINUE", "drainer#1")),
            ],
            vec![
                change(1, "pods", pod("db-0", "node-1", true)),
                change(1, "pods", pod("db-1", "node-2", true)),
                change(3, "pods", pod("db-0", "node-3", false)),
            ],
            Vec::new(),
        );
        let inv = check(&e);
        assert!(!inv.i1.held);
        assert!(
            inv.i1.violations[0]
                .contains("StatefulSet/default/db at 1 Ready elsewhere, below its 2"),
            "{inv:#?}"
        );
    }

    /// Without the retention trigger an ABANDON terminates the instance too: the pods left on
    /// the node go with it, so it is judged as a CONTINUE; a kept instance is not.
    #[test]
    fn an_abandon_that_terminated_the_instance_is_held_to_the_continue_rule() {
        let node = json!({"metadata": {"name": "node-1"}});
        let why = json!({"metadata": {"name": "e1", "namespace": "default"},
            "involvedObject": {"kind": "Node", "name": "node-1"},
            "source": {"component": "quiesce"}, "reason": "LifecycleAbandoned"});
        let gone = Arc::new(Change {
            rv: 5,
            resource: RESOURCES.iter().position(|r| r.plural == "nodes").unwrap(),
            kind: EventKind::Deleted,
            object: Arc::new(node.clone()),
        });
        let mut e = evidence(
            vec![
                at(2, started("t1", "node-1")),
                at(4, completed("t1", "ABANDON", "drainer#1")),
            ],
            vec![
                change(1, "nodes", node),
                change(1, "pods", pod("db-0", "node-1", true)),
                change(1, "pods", pod("db-1", "node-2", true)),
                change(3, "events", why),
                gone,
            ],
            Vec::new(),
        );
        let inv = check(&e);
        assert!(inv.i4.held, "the ABANDON has its Event: {inv:#?}");
        assert!(
            inv.i1.violations[0].starts_with(
                "ABANDON (the instance terminated all the same) for node-1 while default/db-0"
            ),
            "{inv:#?}"
        );
        e.changes.pop();
        let kept = check(&e);
        assert!(
            kept.i1.held,
            "a retained instance keeps its pods: {kept:#?}"
        );
    }

    #[test]
    fn twice_completed_expired_and_early_deletes_are_violations() {
        let e = evidence(
            vec![
                at(1, started("t1", "node-1")),
                at(1, started("t2", "node-2")),
                at(
                    2,
                    GroupEvent::Deleted {
                        message: "m2".into(),
                        token: "t2".into(),
                        caller: "drainer#1".into(),
                    },
                ),
                at(3, completed("t1", "ABANDON", "drainer#1")),
                at(3, completed("t1", "ABANDON", "drainer#2")),
                at(4, GroupEvent::Expired { token: "t2".into() }),
            ],
            Vec::new(),
            Vec::new(),
        );
        let inv = check(&e);
        assert!(
            inv.i1
                .violations
                .iter()
                .any(|v| v.contains("completed 2 times")),
            "{inv:#?}"
        );
        assert!(
            inv.i1.violations.iter().any(|v| v.contains("expired")),
            "{inv:#?}"
        );
        assert!(
            inv.i2.violations[0].contains("before its action t2"),
            "{inv:#?}"
        );
        assert!(inv.i4.violations[0].contains("no Event"), "{inv:#?}");
    }

    #[test]
    fn an_eviction_by_a_drainer_not_holding_the_record_violates_i3() {
        let node = |holder: &str| {
            let record = json!({"holder": holder}).to_string();
            json!({"metadata": {"name": "node-1", "annotations": {(quiesce_aws::record::ANNOTATION): record}}})
        };
        let evict = |caller: &str, revision: u64| Audited {
            caller: caller.into(),
            method: "POST".into(),
            path: "/api/v1/namespaces/default/pods/db-0/eviction".into(),
            query: String::new(),
            revision,
            status: Some(201),
            fault: None,
            at: std::time::Instant::now(),
        };
        let e = evidence(
            Vec::new(),
            vec![
                change(1, "pods", pod("db-0", "node-1", true)),
                change(2, "nodes", node("drainer-a")),
            ],
            vec![evict("drainer-a#1", 2), evict("drainer-b#1", 2)],
        );
        let inv = check(&e);
        assert_eq!(inv.i3.checked, 2);
        assert_eq!(inv.i3.violations.len(), 1, "{inv:#?}");
        assert!(
            inv.i3.violations[0].starts_with("drainer-b#1 evicted default/db-0 from node-1 while the node's record was held by drainer-a"),
            "{inv:#?}"
        );
    }
}
