//! `--format sarif` validates against the official SARIF 2.1.0 schema (vendored in
//! tests/fixtures, see SOURCES.md), checked by Python's `jsonschema` (tests/requirements.txt).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use quiesce_audit::{Options, audit, load, report};
use quiesce_core::budget::Stack;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// Runs the Draft 7 validator the schema declares; Ok or the validator's complaint.
fn validate(document: &str) -> Result<(), String> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.sarif");
    std::fs::write(&path, document).unwrap();
    let script = "import json,sys,jsonschema\nschema=json.load(open(sys.argv[1]))\njsonschema.Draft7Validator(schema).validate(json.load(open(sys.argv[2])))";
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(fixture("sarif-schema-2.1.0.json"))
        .arg(&path)
        .output()
        .expect("python3 runs (see tests/requirements.txt)");
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[test]
fn sarif_report_validates_against_the_schema() {
    let objects = load::load_paths(&[
        fixture("eureka-short.yaml"),
        fixture("guestbook-all-in-one.yaml"),
    ])
    .unwrap();
    let opts = Options {
        stacks: vec![Stack::Eureka],
        max_request: Duration::from_secs(5),
        shutdown: Duration::from_secs(10),
    };
    let (findings, _) = audit(&objects, &opts);
    assert!(findings.len() > 5);
    let sarif = report::sarif(&findings);
    validate(&sarif).expect("SARIF validates");

    let log: serde_json::Value = serde_json::from_str(&sarif).unwrap();
    let results = log["runs"][0]["results"].as_array().unwrap();
    assert_eq!(results.len(), findings.len());
    assert_eq!(results[0]["ruleId"], "prestop-too-short");
    assert_eq!(results[0]["level"], "error");
}

#[test]
fn the_validator_rejects_a_broken_log() {
    let broken = report::sarif(&[]).replace("\"2.1.0\"", "\"9.9\"");
    assert!(validate(&broken).is_err());
}
