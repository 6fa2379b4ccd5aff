//! Helpers shared by the audit's test binaries: fixtures, inline manifests, rule ids.
// Each test binary uses its own subset of these.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use quiesce_audit::{Finding, Options, audit, load};
use quiesce_core::budget::Stack;

/// Options with `stacks` as `--stack` (empty: detect), the CLI's other defaults.
pub fn opts(stacks: &[Stack]) -> Options {
    Options {
        stacks: stacks.to_vec(),
        ..Options::default()
    }
}

/// A file under tests/fixtures.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// Audits an inline manifest.
pub fn run_text(text: &str, stacks: &[Stack]) -> Vec<Finding> {
    let objects = load::parse(Path::new("inline.yaml"), text).expect("fixture parses");
    audit(&objects, &opts(stacks)).0
}

/// The rule ids of `findings`, in order.
pub fn rules(findings: &[Finding]) -> Vec<&'static str> {
    findings.iter().map(|f| f.rule).collect()
}

/// A Deployment with a Service and a PDB, clean but for what `extra_spec` and `container` add.
pub fn deployment(replicas: u32, extra_spec: &str, container: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web}}\nspec:\n  replicas: {replicas}\n{extra_spec}  selector: {{matchLabels: {{app: web}}}}\n  template:\n    metadata: {{labels: {{app: web}}}}\n    spec:\n      terminationGracePeriodSeconds: 60\n      topologySpreadConstraints: [{{maxSkew: 1, topologyKey: kubernetes.io/hostname, whenUnsatisfiable: ScheduleAnyway, labelSelector: {{matchLabels: {{app: web}}}}}}]\n      containers:\n        - name: app\n          image: example/web:1\n{container}---\napiVersion: v1\nkind: Service\nmetadata: {{name: web}}\nspec: {{selector: {{app: web}}}}\n---\napiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata: {{name: web}}\nspec: {{maxUnavailable: 1, selector: {{matchLabels: {{app: web}}}}}}\n"
    )
}

/// Container lines with a readiness probe and a 10 s preStop sleep.
pub const GOOD: &str = "          readinessProbe: {httpGet: {path: /, port: 80}}\n          lifecycle: {preStop: {sleep: {seconds: 10}}}\n";

/// Audits fixture files together with `opts`.
pub fn run_files(names: &[&str], opts: &Options) -> Vec<Finding> {
    let paths: Vec<PathBuf> = names.iter().map(|n| fixture(n)).collect();
    let objects = load::load_paths(&paths).expect("fixtures load");
    audit(&objects, opts).0
}

/// Audits an inline manifest with stack detection.
pub fn detect_text(text: &str) -> Vec<Finding> {
    run_text(text, &[])
}

/// A fixture file's text, for variants made by replacing a line.
pub fn fixture_text(name: &str) -> String {
    std::fs::read_to_string(fixture(name)).expect("fixture reads")
}

/// The finding of `rule` for `workload`; fails the test when there is none.
pub fn finding<'a>(findings: &'a [Finding], rule: &str, workload: &str) -> &'a Finding {
    findings
        .iter()
        .find(|f| f.rule == rule && f.workload == workload)
        .unwrap_or_else(|| panic!("no {rule} for {workload} in {findings:#?}"))
}
