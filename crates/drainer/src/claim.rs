//! The record on the Node as the lock on the node's lifecycle action.
//!
//! Every write of the record is a merge patch carrying the resourceVersion the writer read, so
//! the API server refuses it with 409 Conflict when anything changed the Node in between
//! (optimistic concurrency, as for any Kubernetes write with a resourceVersion precondition).
//! A claim names its holder and how long it stands; the holder renews it with every write and
//! while it drains, and gives it up when it stops. So exactly one actor — one leader, one
//! Lambda invocation — acts on a node's action at a time, across processes: another one takes
//! over only once the holder released the claim or let it lapse.
//!
//! A fresh claim also cordons and fences the node, in the same write: with hundreds of
//! actions received at once (a spot reclaim), each node is cordoned by the first request made
//! for it, sent with the resourceVersion of the Node as the watched index has it (no read
//! first; a stale copy costs a conflict and a re-read, never a wrong write). The roll gate is
//! judged on that same copy, so the write also proves the gate was open.
//!
//! The hold time is judged by each actor's wall clock (a Lambda has nothing else to remember
//! an observation by); it is long against clock skew between nodes kept by NTP.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use quiesce_aws::event::LifecycleAction;
use quiesce_aws::record::{ANNOTATION, InFlight, Phase, SCHEMA};
use quiesce_kube::cluster::Cordon;
use quiesce_kube::fence;
use serde_json::json;

use crate::error::{Error, Result};
use crate::handler::lock;
use crate::nodes::{self, NodeIndex};

/// How often a conditional write is tried again after losing a race with another writer of
/// the Node (the drain engine's cordon, a kubelet's status): each try re-reads the Node.
const CONFLICT_RETRIES: usize = 8;

/// What taking a node's action found.
#[derive(Debug)]
pub enum Taken {
    /// A new action (no record for this token): claimed with a fresh record.
    Fresh(InFlight),
    /// An unfinished action for this token, now ours to resume.
    Resumed(InFlight),
    /// This token's hook was completed before: nothing to do.
    Final(InFlight),
}

/// Whether a claim should cordon the node in the same write.
#[derive(Debug, Clone, Copy)]
pub enum CordonWith<'a> {
    /// Only the record (the action is being finished, not started).
    No,
    /// Cordon and fence with these settings, unless the roll gate on the node holds.
    Fence(&'a Cordon),
}

/// One actor's claims.
#[derive(Clone)]
pub struct Claims {
    api: Api<Node>,
    nodes: NodeIndex,
    identity: String,
    hold: Duration,
    /// The Node as each of our own writes left it: the precondition of the next write until
    /// the watched index has caught up with it. Dropped when the claim is released or lost.
    written: Arc<Mutex<HashMap<String, Node>>>,
}

impl Claims {
    /// Claims made as `identity`, standing `hold` past each write unless renewed; `nodes` is
    /// where the Node's current copy is looked up before a write.
    pub fn new(client: kube::Client, nodes: NodeIndex, identity: String, hold: Duration) -> Claims {
        Claims {
            api: Api::all(client),
            nodes,
            identity,
            hold,
            written: Arc::default(),
        }
    }

    /// Who this actor is in the records it writes.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// How often a holder renews while it works: a third of the hold, so two renewals can
    /// fail before the claim lapses.
    pub fn renew_every(&self) -> Duration {
        self.hold / 3
    }

    /// How long a claim stands past its last successful write.
    pub fn hold(&self) -> Duration {
        self.hold
    }

    /// Claims `action` on `node` (as read or watched): refused while another actor holds it
    /// or when a newer drainer wrote the record. With [`CordonWith::Fence`], an action not
    /// yet draining is also cordoned by the same write, unless the roll gate on `node` holds;
    /// the second value says whether it was.
    pub async fn take(
        &self,
        node: &Node,
        action: &LifecycleAction,
        cordon: CordonWith<'_>,
    ) -> Result<(Taken, bool)> {
        let name = node.name_any();
        let mut node = node.clone();
        for _ in 0..CONFLICT_RETRIES {
            let now = Timestamp::now();
            let found = nodes::record_of(&node);
            let (mut record, resumed) = match found {
                Some(r) if r.version > SCHEMA => {
                    return Err(Error::NewerSchema {
                        node: name,
                        version: r.version,
                    });
                }
                Some(r) if r.is_same(action) && r.phase.is_final() => {
                    return Ok((Taken::Final(r), false));
                }
                Some(r) if self.held_by_other(&r, now) => {
                    return Err(Error::Held {
                        node: name,
                        holder: r.holder.unwrap_or_default(),
                        until: r.held_until.unwrap_or_default(),
                    });
                }
                Some(r) if r.is_same(action) => (r, true),
                _ => {
                    let mut fresh = InFlight::new(action, String::new());
                    fresh.found_cordoned = node
                        .spec
                        .as_ref()
                        .and_then(|s| s.unschedulable)
                        .unwrap_or(false);
                    (fresh, false)
                }
            };
            self.stamp(&mut record, now);
            // Cordoned by this write (or already): a fresh or not yet draining action, gate open.
            let cordoned = record.phase == Phase::Received
                && crate::gate_hold::holds(&node, now).is_none()
                && matches!(cordon, CordonWith::Fence(_));
            let with = match cordon {
                CordonWith::Fence(cordon) if cordoned => fence::cordon_patch(&node, cordon),
                _ => None,
            };
            match self.put(&node, &record, with).await {
                Ok(()) if resumed => return Ok((Taken::Resumed(record), cordoned)),
                Ok(()) => return Ok((Taken::Fresh(record), cordoned)),
                Err(e) if is_conflict(&e) => node = self.get(&name).await?,
                Err(e) => return Err(Error::kube(format!("claiming the action on {name}"), e)),
            }
        }
        Err(conflicts(&name))
    }

    /// Writes `record` (ours) and renews the claim, if the record on the node is still ours;
    /// otherwise [`Error::LostClaim`]: the caller must stop acting.
    pub async fn write(&self, node: &str, record: &mut InFlight) -> Result<()> {
        self.conditional(node, record, true).await
    }

    /// Writes `record` and gives the claim up (the action is final, or paused for whoever
    /// handles its message next). A node that is gone is fine: the instance may be going.
    pub async fn release(&self, node: &str, record: &mut InFlight) -> Result<()> {
        match self.conditional(node, record, false).await {
            Err(Error::Kube { source, .. }) if is_not_found(&source) => Ok(()),
            other => other,
        }
    }

    async fn conditional(&self, name: &str, record: &mut InFlight, keep: bool) -> Result<()> {
        // First from what is known without a read: the watched copy once it shows our
        // record, else the Node as our last write left it. A conflict means either was
        // stale: re-read.
        let mut known = self.known(name, record);
        for _ in 0..CONFLICT_RETRIES {
            let node = match known.take() {
                Some(node) => node,
                None => self.get(name).await?,
            };
            let current = nodes::record_of(&node);
            let ours = current.as_ref().is_some_and(|c| {
                c.token == record.token
                    && c.instance_id == record.instance_id
                    && c.holder.as_deref() == Some(self.identity.as_str())
            });
            if !ours {
                lock(&self.written).remove(name);
                return Err(Error::LostClaim {
                    node: name.to_string(),
                    why: match current {
                        Some(c) if c.token != record.token => {
                            format!("the record is for another action now (token {})", c.token)
                        }
                        Some(c) => format!(
                            "held by {} until {}",
                            c.holder.as_deref().unwrap_or("nobody"),
                            c.held_until.as_deref().unwrap_or("-")
                        ),
                        None => "the record is gone".into(),
                    },
                });
            }
            if keep {
                self.stamp(record, Timestamp::now());
            } else {
                record.holder = None;
                record.held_until = None;
            }
            match self.put(&node, record, None).await {
                Ok(()) => {
                    if !keep {
                        lock(&self.written).remove(name);
                    }
                    return Ok(());
                }
                Err(e) if is_conflict(&e) => continue,
                Err(e) => return Err(Error::kube(format!("recording the action on {name}"), e)),
            }
        }
        Err(conflicts(name))
    }

    fn held_by_other(&self, record: &InFlight, now: Timestamp) -> bool {
        let Some(holder) = record.holder.as_deref() else {
            return false;
        };
        if holder == self.identity {
            return false;
        }
        // An unreadable time cannot prove the claim lapsed: treat it as standing.
        record
            .held_until
            .as_deref()
            .and_then(|t| t.parse::<Timestamp>().ok())
            .is_none_or(|until| until > now)
    }

    fn stamp(&self, record: &mut InFlight, now: Timestamp) {
        let hold = SignedDuration::try_from(self.hold).unwrap_or(SignedDuration::MAX);
        record.version = SCHEMA;
        record.holder = Some(self.identity.clone());
        record.held_until = Some(now.checked_add(hold).unwrap_or(now).to_string());
    }

    /// The Node to try a write of `record` against without reading it first, if any.
    fn known(&self, name: &str, record: &InFlight) -> Option<Node> {
        let watched = self.nodes.copy_of(name).filter(|n| {
            nodes::record_of(n).is_some_and(|r| {
                r.token == record.token && r.holder.as_deref() == Some(self.identity.as_str())
            })
        });
        watched.or_else(|| lock(&self.written).get(name).cloned())
    }

    async fn get(&self, name: &str) -> Result<Node> {
        self.api
            .get(name)
            .await
            .map_err(|e| Error::kube(format!("reading node {name}"), e))
    }

    /// Writes `record` on `node`, conditional on `node`'s resourceVersion, merged with
    /// `with` (the cordon of a fresh claim).
    async fn put(
        &self,
        node: &Node,
        record: &InFlight,
        with: Option<serde_json::Value>,
    ) -> Result<(), kube::Error> {
        let mut patch = with.unwrap_or_else(|| json!({}));
        patch["metadata"]["resourceVersion"] = json!(node.resource_version());
        patch["metadata"]["annotations"] = json!({ANNOTATION: record.to_annotation()});
        let name = node.name_any();
        let written = self
            .api
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        lock(&self.written).insert(name, written);
        Ok(())
    }
}

fn is_conflict(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(s) if s.code == 409)
}

fn is_not_found(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(s) if s.code == 404)
}

fn conflicts(node: &str) -> Error {
    Error::LostClaim {
        node: node.to_string(),
        why: format!("{CONFLICT_RETRIES} conditional writes in a row lost a race"),
    }
}
