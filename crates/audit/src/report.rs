//! Report renderers: text grouped by workload, and JSON.

use std::fmt::Write;

use crate::Finding;

/// Text report, one block per workload, for people reading CI logs.
pub fn text(findings: &[Finding], workloads: usize) -> String {
    let mut out = String::new();
    let mut last = None;
    for f in findings {
        if last != Some(&f.workload) {
            let _ = writeln!(out, "{} ({})", f.workload, f.source.display());
            last = Some(&f.workload);
        }
        let level = serde_json::to_value(f.level).unwrap_or_default();
        let _ = writeln!(
            out,
            "  {} [{}] {}: {}\n    fix: {}",
            level.as_str().unwrap_or_default(),
            f.rule,
            f.path,
            f.message,
            f.fix
        );
    }
    let _ = writeln!(
        out,
        "{} finding(s) in {workloads} workload(s)",
        findings.len()
    );
    out
}

/// JSON report: an array of findings, for scripts.
pub fn json(findings: &[Finding]) -> String {
    serde_json::to_string_pretty(findings).unwrap_or_default()
}
