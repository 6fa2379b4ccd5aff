//! deploy/iam-policy-roll.json grants exactly the calls `quiesce roll` makes: every Auto
//! Scaling call in the client's source (each `.client` chain), plus the `ec2:RunInstances`
//! Auto Scaling checks when a refresh moves the group to a launch template version, plus the
//! Lambda call of the Lambda mode's drainer check (src/mapping.rs).

use std::collections::BTreeSet;
use std::path::Path;

fn camel(snake: &str) -> String {
    snake
        .split('_')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}

/// The operations called in `source`: the method after each `.client` (Auto Scaling's SDK
/// client) and each `ec2.` (quiesce-aws's EC2 Query client).
fn calls(source: &str) -> BTreeSet<String> {
    let lines: Vec<&str> = source.lines().map(str::trim).collect();
    let mut out: BTreeSet<String> = lines
        .windows(2)
        .filter(|w| w[0] == ".client" || w[0].ends_with(".client"))
        .filter_map(|w| w[1].strip_prefix('.')?.strip_suffix("()"))
        .map(|op| format!("autoscaling:{}", camel(op)))
        .collect();
    for line in &lines {
        if let Some(rest) = line.split("ec2.").nth(1)
            && let Some((op, _)) = rest.split_once('(')
            && op.chars().all(|c| c.is_ascii_lowercase() || c == '_')
        {
            out.insert(format!("ec2:{}", camel(op)));
        }
    }
    out
}

#[test]
fn the_roll_policy_grants_exactly_the_calls_made() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let source = std::fs::read_to_string(root.join("src/aws.rs")).unwrap();
    let mut made = calls(&source);
    assert!(made.len() >= 8, "found the client's calls: {made:?}");
    made.insert("ec2:RunInstances".into());
    // The Lambda mode's check: each call on the `client` it is given.
    let mapping = std::fs::read_to_string(root.join("src/mapping.rs")).unwrap();
    let lines: Vec<&str> = mapping.lines().map(str::trim).collect();
    let lambda: Vec<String> = lines
        .windows(2)
        .filter(|w| w[0].ends_with("client"))
        .filter_map(|w| w[1].strip_prefix('.')?.strip_suffix("()"))
        .map(|op| format!("lambda:{}", camel(op)))
        .collect();
    assert_eq!(lambda, ["lambda:ListEventSourceMappings"]);
    made.extend(lambda);
    let policy: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("../../deploy/iam-policy-roll.json")).unwrap(),
    )
    .unwrap();
    let granted: BTreeSet<String> = policy["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["Action"].as_array().unwrap().iter())
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        granted, made,
        "policy actions vs calls in src/aws.rs and src/mapping.rs"
    );
    for statement in policy["Statement"].as_array().unwrap() {
        if statement["Resource"] == "*" {
            let actions: Vec<&str> = statement["Action"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap())
                .collect();
            assert!(
                actions.iter().all(|a| a.starts_with("autoscaling:Describe")
                    || *a == "lambda:ListEventSourceMappings")
                    || statement["Condition"].is_object(),
                "only reads without resource-level permissions go unconditioned on *: {statement}"
            );
        }
    }
}
