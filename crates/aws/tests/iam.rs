//! Least privilege for the load-balancer wait (issue 17): deploy/iam-policy.json and the SAM
//! template's role grant the reads the ELBv2 lookup makes (crates/aws/src/elbv2.rs), and
//! DeregisterTargets only where the opt-in asks for it.

use std::path::Path;

fn read(path: &str) -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../..")
            .join(path),
    )
    .unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

/// Every call `Elbv2` makes, as IAM spells its action.
const READS: [&str; 5] = [
    "elasticloadbalancing:DescribeTargetGroups",
    "elasticloadbalancing:DescribeTargetHealth",
    "elasticloadbalancing:DescribeTargetGroupAttributes",
    // The controller's ownership tag.
    "elasticloadbalancing:DescribeTags",
    // The Auto Scaling group's attached target groups.
    "autoscaling:DescribeAutoScalingGroups",
];
const DEREGISTER: &str = "elasticloadbalancing:DeregisterTargets";

#[test]
fn the_policy_grants_the_lookups_reads_and_no_deregistration() {
    let policy: serde_json::Value = serde_json::from_str(&read("deploy/iam-policy.json")).unwrap();
    let actions: Vec<&str> = policy["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["Action"].as_array().unwrap())
        .filter_map(|a| a.as_str())
        .collect();
    for read in READS {
        assert!(actions.contains(&read), "{read} missing from {actions:?}");
    }
    let elb: Vec<&&str> = actions
        .iter()
        .filter(|a| a.starts_with("elasticloadbalancing:"))
        .collect();
    assert_eq!(elb.len(), 4, "only the four ELBv2 reads: {elb:?}");
    assert!(!actions.contains(&DEREGISTER), "{actions:?}");
}

#[test]
fn the_sam_role_grants_the_same_reads_and_deregistration_only_with_the_opt_in() {
    let template = read("deploy/sam/template.yaml");
    for read in READS {
        assert!(template.contains(&format!("- {read}")), "{read} missing");
    }
    let at = template
        .find(&format!("Action: {DEREGISTER}"))
        .expect("the opt-in statement");
    let before = &template[..at];
    let condition = before.rfind("- !If").expect("a condition");
    assert!(
        before[condition..].contains("WithForeignDeregistration"),
        "DeregisterTargets is granted only under WithForeignDeregistration"
    );
}
