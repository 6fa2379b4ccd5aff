//! The AWS side of quiesce.
//!
//! - [`event`]: the lifecycle-hook messages a drainer receives (EventBridge events, direct
//!   Auto Scaling → SQS notifications, the test notification), parsed into one type, with a
//!   clear error for anything else so a bad message is handled by policy, never a crash loop;
//! - [`instance`]: which Kubernetes node an EC2 instance is, from the node's `spec.providerID`
//!   ([`ec2`]: from its PrivateDnsName when a node has none);
//! - [`hook`]: how often to heartbeat a hook and how long a drain may hold it;
//! - [`record`]: the action in flight, kept on the Node so a restarted drainer resumes it;
//! - [`hooks`] and [`queue`]: the Auto Scaling and SQS calls, behind traits so the lab's
//!   simulated group runs the same drainer; [`sdk`]: one SDK configuration for both;
//! - [`roll_gate`]: the hold `quiesce roll` puts on the drainer while its SLO gate is red.
//! - [`elbv2`]: the target groups an instance is in, and when it has left them.

pub mod ec2;
pub mod elbv2;
pub mod event;
pub mod hook;
pub mod hooks;
pub mod instance;
pub mod queue;
pub mod record;
pub mod roll_gate;
pub mod sdk;
