//! The drainer's error: what failed, and whether trying again can help (Karpenter's
//! `NodeDrainError` makes the same split). A transient error is retried in place while the
//! message stays hidden; a permanent one ends the attempt and is recorded.

use quiesce_aws::hooks::HookError;
use quiesce_aws::record::RecordError;

/// Why handling a lifecycle action stopped short.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call failed.
    #[error("{doing}: {source}")]
    Kube {
        /// What the drainer was doing, e.g. `recording the action on node-1`.
        doing: String,
        /// The client's error.
        source: kube::Error,
    },
    /// A paged read (through the drain engine's reader) failed.
    #[error("{what}: {source}")]
    Read {
        /// What the drainer was reading.
        what: String,
        /// The reader's error.
        source: quiesce_kube::Error,
    },
    /// The drain engine failed (not a blocked or unfinished drain: those are outcomes).
    #[error("draining {node}: {source}")]
    Drain {
        /// The node.
        node: String,
        /// The engine's error.
        source: quiesce_kube::Error,
    },
    /// The EC2 lookup of a node without providerID failed.
    #[error(transparent)]
    Ec2(#[from] quiesce_aws::ec2::Ec2Error),
    /// The drain stopped short of its deadline on an error it reported (an API call that kept
    /// failing, a watch that would not come back): worth another slice.
    #[error("drain of {node} not finished yet: {why}")]
    Unfinished {
        /// The node.
        node: String,
        /// The engine's report.
        why: String,
    },
    /// Auto Scaling no longer holds the action (completed elsewhere, or its hook timed out):
    /// the work stops.
    #[error("the lifecycle action for {instance} is no longer active")]
    HookGone {
        /// The instance.
        instance: String,
    },
    /// An ELBv2 call of the load-balancer wait failed.
    #[error(transparent)]
    LoadBalancers(#[from] quiesce_aws::elbv2::Elbv2Error),
    /// An Auto Scaling call failed.
    #[error(transparent)]
    Hook(#[from] HookError),
    /// The record on the node cannot be read.
    #[error(transparent)]
    Record(#[from] RecordError),
    /// The record's deadline is no RFC 3339 time.
    #[error("record deadline {deadline:?} is not an RFC 3339 time: {reason}")]
    Deadline {
        /// The stored value.
        deadline: String,
        /// The parser's complaint.
        reason: String,
    },
    /// Another actor holds the node's action (see [`crate::claim`]).
    #[error("the action on {node} is held by {holder} until {until}")]
    Held {
        /// The node.
        node: String,
        /// Who holds it.
        holder: String,
        /// Until when.
        until: String,
    },
    /// The record was written by a newer drainer whose schema this one does not know.
    #[error(
        "the record on {node} has schema version {version}, newer than this drainer's {}: leaving it to the newer drainer",
        quiesce_aws::record::SCHEMA
    )]
    NewerSchema {
        /// The node.
        node: String,
        /// The record's version.
        version: u32,
    },
    /// Our claim on the node's action was taken over (it lapsed, or another actor won a
    /// conditional write): stop acting at once.
    #[error("lost the claim on {node}'s action: {why}")]
    LostClaim {
        /// The node.
        node: String,
        /// What the record says now.
        why: String,
    },
}

impl Error {
    /// A Kubernetes error with what the drainer was doing.
    pub fn kube(doing: impl Into<String>, source: kube::Error) -> Error {
        Error::Kube {
            doing: doing.into(),
            source,
        }
    }

    /// Whether trying the same step again soon can succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Kube { source, .. } => kube_transient(source),
            Error::Read { source, .. } => source.is_transient(),
            Error::Drain { source, .. } => {
                source.is_transient() || matches!(source, quiesce_kube::Error::Watch(_))
            }
            // Auto Scaling answers throttling and service errors that pass; a validation error
            // (no such hook) does not, but it is rare enough that a retry costs nothing.
            Error::Hook(_) | Error::Ec2(_) | Error::Unfinished { .. } => true,
            // ELBv2 throttles Describe calls per account (the controller's too): wait and
            // retry; a missing permission stays missing.
            Error::LoadBalancers(err) => err.transient,
            // Another actor holds the action: wait in place (every try is a conditional take)
            // until it finishes or its claim lapses. Given back instead, the message would
            // come back every retry and reach the dead-letter queue's maxReceiveCount (5 at
            // 10 s) before a crashed holder's claim (60 s) lapses.
            Error::Held { .. } => true,
            Error::Record(_) | Error::Deadline { .. } | Error::NewerSchema { .. } => false,
            // We lost it, or the hook is over: stop.
            Error::LostClaim { .. } | Error::HookGone { .. } => false,
        }
    }
}

/// Which of the drainer's own Kubernetes requests pass: what the drain engine counts as
/// transient (no answer, 429, 5xx), and 409 Conflict, which for the drainer's writes means a
/// write raced another and is worth reading again.
pub fn kube_transient(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(status) if status.code == 409) || quiesce_kube::transient(err)
}

/// Shorthand for the drainer's results.
pub type Result<T, E = Error> = std::result::Result<T, E>;
