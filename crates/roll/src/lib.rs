//! `quiesce roll`: the patching automation. An EC2 Auto Scaling Instance Refresh (checkpoints,
//! soak, alarms, rollback) with the drainer's guarantees on every node, gated on an SLO.
//!
//! - [`refresh`]: the Instance Refresh behind a trait; [`aws`]: the real one and the group's
//!   facts;
//! - [`preflight`] (with [`batch`]: what a whole batch out at once does): every reason not to
//!   roll, each with its fix, before anything changes; [`mapping`]: the Lambda mode's proof
//!   that a drainer answers;
//! - [`slo`]: the gate's objective (Prometheus); [`gate`]: how it holds the roll (the drainer
//!   holds the next terminate hook while it is red);
//! - [`run`]: following the refresh to its end; [`report`]: what it did; [`release`]: a
//!   retained instance let go once fixed.

pub mod aws;
pub mod batch;
pub mod gate;
pub mod mapping;
pub mod preflight;
pub mod refresh;
pub mod release;
pub mod report;
pub mod run;
pub mod slo;

/// The EC2 instance a Node runs on, from its `spec.providerID`: how the roll matches the
/// group's instances to the cluster's nodes (exact, unlike node names).
pub fn instance_of(node: &k8s_openapi::api::core::v1::Node) -> Option<&str> {
    node.spec
        .as_ref()?
        .provider_id
        .as_deref()
        .and_then(quiesce_aws::instance::instance_id)
}
