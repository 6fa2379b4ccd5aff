//! `quiesce lab`: a node-group patch in the sandbox under live traffic.
//!
//! - [`pods`]: every pod of the demo Services is a real process — quiesce-init and the
//!   [`app`] — started, probed and stopped as a kubelet does;
//! - [`dataplane`]: the userspace balancer over EndpointSlices, as kube-proxy balances (late,
//!   and pinned);
//! - [`kernel`]: the same Services through the kernel — a private network namespace, virtual
//!   IPs, and iptables rules as kube-proxy writes them;
//! - [`traffic`]: the bounded request loop and what each failure was;
//! - [`timeline`]: what happened when, for the report;
//! - [`report`]: the self-contained HTML timeline;
//! - [`asg`]: the simulated Auto Scaling group whose lifecycle hooks the drainer completes;
//! - [`roll`]: the roll through `quiesce roll`'s code with an SLO gate (`--slo`);
//! - [`run`]: one whole run, quiesce or naive;
//! - [`chaos`]: the drainers a run starts, faults injected into a run, and the guarantees
//!   checked from the outside record.

pub mod app;
pub mod asg;
pub mod chaos;
pub mod dataplane;
pub mod kernel;
pub mod pods;
pub mod report;
pub mod roll;
pub mod run;
pub mod timeline;
pub mod traffic;
