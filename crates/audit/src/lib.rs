//! `quiesce audit`: checks whether the timing of a workload's manifests adds up — kube-score,
//! kube-linter and Polaris check that a readiness probe exists; this computes whether the
//! preStop delay and grace period cover the discovery stack in front of the pod.

pub mod cluster;
mod error;
pub mod load;
pub mod report;
pub mod rules;
pub mod workload;

pub use error::Error;
pub use rules::{Finding, Level, Options};

/// Audits loaded objects; returns the findings and how many workloads were checked.
pub fn audit(objects: &[load::Object], opts: &Options) -> (Vec<Finding>, usize) {
    let workloads = workload::group(objects);
    let mut findings: Vec<Finding> = workloads
        .iter()
        .flat_map(|w| rules::check(w, opts))
        .collect();
    findings.extend(rules::orphan_pdbs(objects, &workloads));
    (findings, workloads.len())
}
