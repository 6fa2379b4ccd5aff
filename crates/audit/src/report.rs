//! Report renderers: text grouped by workload, JSON and SARIF. Timing findings carry the
//! evidence of the discovery stacks they were computed for in every format.

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
        for e in &f.evidence {
            let _ = writeln!(out, "    stack: {e}");
        }
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

/// SARIF 2.1.0 log, for code scanning (GitHub and others): one run, every rule described,
/// each finding located at its file with the workload and field path as a logical location.
pub fn sarif(findings: &[Finding]) -> String {
    let rules: Vec<_> = crate::rules::RULES
        .iter()
        .map(|r| {
            serde_json::json!({
                "id": r.id,
                "shortDescription": { "text": r.why },
                "help": { "text": r.fix },
                "defaultConfiguration": { "level": r.level },
            })
        })
        .collect();
    let results: Vec<_> = findings
        .iter()
        .map(|f| {
            let detected = if f.evidence.is_empty() {
                String::new()
            } else {
                format!("; stacks: {}", f.evidence.join("; "))
            };
            serde_json::json!({
                "ruleId": f.rule,
                "level": f.level,
                "message": { "text": format!("{}: {} (fix: {}){detected}", f.workload, f.message, f.fix) },
                "properties": { "evidence": f.evidence },
                "locations": [{
                    "physicalLocation": {
                        "artifactLocation": { "uri": f.source.to_string_lossy().replace('\\', "/") }
                    },
                    "logicalLocations": [{ "fullyQualifiedName": format!("{}{}", f.workload, f.path) }]
                }]
            })
        })
        .collect();
    let log = serde_json::json!({
        "$schema": "https://raw.githubusercontent.com/oasis-tcs/sarif-spec/master/Schemata/sarif-schema-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": { "driver": { "name": "quiesce audit", "rules": rules } },
            "results": results
        }]
    });
    serde_json::to_string_pretty(&log).unwrap_or_default()
}
