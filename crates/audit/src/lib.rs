//! `quiesce audit`: checks whether the timing of a workload's manifests adds up — kube-score,
//! kube-linter and Polaris check that a readiness probe exists; this finds the discovery stacks
//! in front of each pod (kube-proxy, AWS load balancers, Eureka, a mesh) and computes whether
//! the preStop delay and grace period cover them.

pub mod cluster;
pub mod detect;
mod error;
pub mod index;
pub mod load;
pub mod report;
pub mod rules;
pub mod workload;

pub use error::Error;
pub use rules::{Finding, Level, Options};

/// Audits loaded objects; returns the findings and how many workloads were checked.
pub fn audit(objects: &[load::Object], opts: &Options) -> (Vec<Finding>, usize) {
    let index = index::Index::new(objects);
    let workloads = workload::group(objects, &index);
    let mut findings: Vec<Finding> = workloads
        .iter()
        .flat_map(|w| rules::check(w, &index, opts))
        .collect();
    findings.extend(rules::orphan_pdbs(objects, &workloads));
    (findings, workloads.len())
}
