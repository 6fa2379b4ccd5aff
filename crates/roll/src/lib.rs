//! `quiesce roll`: the patching automation. An EC2 Auto Scaling Instance Refresh (checkpoints,
//! soak, alarms, rollback) with the drainer's guarantees on every node, gated on an SLO.
//!
//! - [`refresh`]: the Instance Refresh behind a trait; [`aws`]: the real one and the group's
//!   facts.

pub mod aws;
pub mod refresh;
