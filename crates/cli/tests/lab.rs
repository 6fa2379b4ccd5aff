//! `quiesce lab` as a user runs it: the whole node group replaced under live traffic. quiesce
//! drops nothing; the naive baseline (kubectl-drain semantics, apps that stop at SIGTERM)
//! drops requests, and says why.

use std::process::Command;

use quiesce_testbed::chromium::{attr, dump_dom, svg_tag};
use serde_json::Value;

/// Runs the lab; the report it writes must render in headless Chromium with marks drawn.
fn lab(args: &[&str]) -> (Value, String, std::process::ExitStatus) {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("lab.html");
    let out = Command::new(env!("CARGO_BIN_EXE_quiesce"))
        .arg("lab")
        .args(args)
        .args(["--output", "json", "--report"])
        .arg(&report)
        .output()
        .expect("quiesce runs");
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let json: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("JSON on stdout ({e}); stderr:\n{stderr}"));
    assert!(report.exists(), "the report is written");
    let dom = dump_dom(&report, &dir.path().join("chromium-profile"));
    let tag = svg_tag(&dom);
    assert_eq!(attr(tag, "data-rendered"), Some("true"), "{tag}");
    let marks: u64 = attr(tag, "data-marks").unwrap().parse().unwrap();
    assert!(
        marks > 100,
        "a lab run draws nodes, pods and request bars: {marks}"
    );
    (json, stderr, out.status)
}

#[test]
fn quiesce_replaces_every_node_without_dropping_a_request() {
    let (json, stderr, status) = lab(&[]);
    assert!(status.success(), "{json:#}\n{stderr}");
    assert_eq!(json["nodes_replaced"], 3, "{json:#}");
    assert!(
        json["requests"]["sent"].as_u64().unwrap() >= 5000,
        "{json:#}"
    );
    assert_eq!(json["requests"]["failed"], 0, "{json:#}\n{stderr}");
    let phases: Vec<&str> = json["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        phases,
        [
            "cluster-ready",
            "traffic-warmup",
            "refresh",
            "traffic-cooldown",
            "total"
        ]
    );
    assert!(
        stderr.contains("requests so far"),
        "progress is shown while it works: {stderr}"
    );
}

#[test]
fn the_naive_baseline_drops_requests_and_names_their_causes() {
    let (json, stderr, status) = lab(&["--mode", "naive"]);
    assert!(status.success(), "{json:#}\n{stderr}");
    assert_eq!(json["nodes_replaced"], 3, "{json:#}");
    let failed = json["requests"]["failed"].as_u64().unwrap();
    assert!(failed > 0, "{json:#}");
    let causes = json["requests"]["by_cause"].as_object().unwrap();
    assert_eq!(
        causes.values().map(|n| n.as_u64().unwrap()).sum::<u64>(),
        failed,
        "every failure has a cause: {json:#}"
    );
    assert!(
        causes
            .keys()
            .all(|c| ["refused", "reset", "5xx", "timeout"].contains(&c.as_str())),
        "{json:#}"
    );
}
