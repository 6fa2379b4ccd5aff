//! The AWS side of quiesce.
//!
//! - [`event`]: the lifecycle-hook messages a drainer receives (EventBridge events, direct
//!   Auto Scaling → SQS notifications, the test notification), parsed into one type, with a
//!   clear error for anything else so a bad message is handled by policy, never a crash loop;
//! - [`instance`]: which Kubernetes node an EC2 instance is, from the node's `spec.providerID`;
//! - [`hook`]: how often to heartbeat a hook and how long a drain may hold it;
//! - [`record`]: the action in flight, kept on the Node so a restarted drainer resumes it.

pub mod event;
pub mod hook;
pub mod instance;
pub mod record;
