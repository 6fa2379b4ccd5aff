//! `--format sarif` validates against the official SARIF 2.1.0 schema (vendored in
//! tests/fixtures, see SOURCES.md), checked by Python's `jsonschema` (tests/requirements.txt).

mod common;

use std::process::Command;

use common::{fixture, opts, run_files};
use quiesce_audit::{Options, audit, load, report};
use quiesce_core::budget::Stack;

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
        ..Options::default()
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

#[test]
fn detected_stacks_are_named_in_json_text_and_a_valid_sarif_log() {
    let findings = run_files(
        &[
            "ingress-nginx-aws-deploy.yaml",
            "jhipster-store-deployment.yml",
            "alb-2048-full.yaml",
        ],
        &opts(&[]),
    );
    let nlb = "nlb: Service ingress-nginx/ingress-nginx-controller, annotation service.beta.kubernetes.io/aws-load-balancer-type=nlb";
    let eureka = "eureka: env EUREKA_CLIENT_SERVICE_URL_DEFAULTZONE of jhipster/store";

    let sarif = report::sarif(&findings);
    validate(&sarif).expect("SARIF validates");
    let log: serde_json::Value = serde_json::from_str(&sarif).unwrap();
    let results = log["runs"][0]["results"].as_array().unwrap();
    let nginx = results
        .iter()
        .find(|r| {
            r["ruleId"] == "no-prestop-delay"
                && r["message"]["text"]
                    .as_str()
                    .unwrap()
                    .starts_with("Deployment ingress-nginx/")
        })
        .expect("ingress-nginx's budget finding");
    assert!(
        nginx["message"]["text"].as_str().unwrap().contains(nlb),
        "{nginx}"
    );
    assert!(
        nginx["properties"]["evidence"][0]
            .as_str()
            .unwrap()
            .starts_with(nlb),
        "{nginx}"
    );

    let json: serde_json::Value = serde_json::from_str(&report::json(&findings)).unwrap();
    let store = json
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["rule"] == "no-prestop-delay" && f["workload"] == "Deployment jhipster/store")
        .expect("the store's budget finding");
    assert!(
        store["evidence"][0].as_str().unwrap().starts_with(eureka),
        "{store}"
    );

    let text = report::text(&findings, 3);
    assert!(text.contains(&format!("    stack: {nlb}")), "{text}");
    assert!(text.contains(&format!("    stack: {eureka}")), "{text}");
}
