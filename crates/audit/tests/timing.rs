//! The load-balancer, node-shutdown and Spot rules, and the app's own drain: a failing and a
//! passing case each.

mod common;

use std::time::Duration;

use common::{GOOD, deployment, detect_text, finding, fixture_text, opts, rules, run_files};
use quiesce_audit::{Options, audit, load};
use quiesce_core::budget::Stack;

const GAME: &str = "Deployment game-2048/deployment-2048";
const NGINX: &str = "Deployment ingress-nginx/ingress-nginx-controller";
const WEB: &str = "Deployment default/web";

#[test]
fn ip_targets_without_the_readiness_gate_label_are_flagged() {
    let findings = run_files(&["alb-2048-full.yaml"], &opts(&[]));
    let f = finding(&findings, "no-lb-readiness-gate", GAME);
    assert_eq!(f.path, "/spec/template/spec/readinessGates");
    assert!(
        f.fix.contains("kubectl label namespace game-2048"),
        "{}",
        f.fix
    );
    assert!(f.evidence[0].contains("ip targets"), "{:?}", f.evidence);

    let labelled = fixture_text("alb-2048-full.yaml").replace(
        "kind: Namespace\nmetadata:\n  name: game-2048\n",
        "kind: Namespace\nmetadata:\n  name: game-2048\n  labels:\n    elbv2.k8s.aws/pod-readiness-gate-inject: enabled\n",
    );
    assert!(!rules(&detect_text(&labelled)).contains(&"no-lb-readiness-gate"));

    let instance = fixture_text("alb-2048-full.yaml")
        .replace("    alb.ingress.kubernetes.io/target-type: ip\n", "");
    assert!(
        !rules(&detect_text(&instance)).contains(&"no-lb-readiness-gate"),
        "instance targets: the node is the target, the gate does not apply"
    );
}

#[test]
fn a_grace_period_past_the_node_shutdown_window_is_flagged() {
    let findings = run_files(&["ingress-nginx-aws-deploy.yaml"], &opts(&[]));
    let f = finding(&findings, "grace-exceeds-node-shutdown", NGINX);
    assert!(
        f.message
            .starts_with("terminationGracePeriodSeconds 300 > the 2m")
            && f.message.contains("--node-shutdown-grace 2m 30s"),
        "{}",
        f.message
    );

    let long_window = Options {
        node_shutdown_grace: Duration::from_secs(400),
        ..Options::default()
    };
    let objects = load::parse(
        std::path::Path::new("nginx.yaml"),
        &fixture_text("ingress-nginx-aws-deploy.yaml"),
    )
    .unwrap();
    let r = rules(&audit(&objects, &long_window).0);
    assert!(!r.contains(&"grace-exceeds-node-shutdown"), "{r:?}");

    // A 60 s grace fits ordinary pods' 120 s, not the critical pods' 30 s.
    assert!(detect_text(&deployment(2, "", GOOD)).is_empty());
    let critical = deployment(2, "", GOOD).replace(
        "      terminationGracePeriodSeconds: 60\n",
        "      terminationGracePeriodSeconds: 60\n      priorityClassName: system-node-critical\n",
    );
    let findings = detect_text(&critical);
    assert_eq!(rules(&findings), ["grace-exceeds-node-shutdown"]);
    assert!(
        findings[0]
            .message
            .contains("30s the kubelet gives critical pods"),
        "{}",
        findings[0].message
    );
}

#[test]
fn a_budget_longer_than_the_spot_notice_is_flagged_on_spot_capacity() {
    let nlb_budget = "          readinessProbe: {httpGet: {path: /, port: 80}}\n          lifecycle: {preStop: {sleep: {seconds: 130}}}\n";
    let spot = deployment(2, "", nlb_budget).replace(
        "      terminationGracePeriodSeconds: 60\n",
        "      terminationGracePeriodSeconds: 150\n      nodeSelector: {karpenter.sh/capacity-type: spot}\n",
    );
    let findings = common::run_text(&spot, &[Stack::Nlb]);
    let f = finding(&findings, "preemptible-budget", WEB);
    assert_eq!(f.path, "/spec/template/spec/nodeSelector");
    assert!(
        f.message.contains("2m 20s > the 2m interruption notice"),
        "{}",
        f.message
    );

    let on_demand = spot.replace("capacity-type: spot", "capacity-type: on-demand");
    assert!(!rules(&common::run_text(&on_demand, &[Stack::Nlb])).contains(&"preemptible-budget"));

    let affinity = deployment(2, "", GOOD).replace(
        "      terminationGracePeriodSeconds: 60\n",
        "      terminationGracePeriodSeconds: 150\n      affinity: {nodeAffinity: {requiredDuringSchedulingIgnoredDuringExecution: {nodeSelectorTerms: [{matchExpressions: [{key: eks.amazonaws.com/capacityType, operator: In, values: [SPOT]}]}]}}}\n",
    );
    let findings = common::run_text(&affinity, &[Stack::Nlb]);
    let f = finding(&findings, "preemptible-budget", WEB);
    assert_eq!(f.path, "/spec/template/spec/affinity/nodeAffinity");
    assert!(
        !rules(&common::run_text(&affinity, &[Stack::KubeProxy])).contains(&"preemptible-budget")
    );
}

#[test]
fn the_apps_own_drain_counts_toward_the_prestop_budget() {
    let no_prestop = "          readinessProbe: {httpGet: {path: /, port: 80}}\n";
    let with_drain = |value: &str| {
        deployment(2, "", no_prestop).replace(
            "    metadata: {labels: {app: web}}",
            &format!("    metadata: {{labels: {{app: web}}, annotations: {{quiesce.io/app-drain-delay: {value}}}}}"),
        )
    };
    assert_eq!(
        rules(&detect_text(&deployment(2, "", no_prestop))),
        ["no-prestop-delay"]
    );
    assert!(
        detect_text(&with_drain("7s")).is_empty(),
        "{:#?}",
        detect_text(&with_drain("7s"))
    );

    let short = detect_text(&with_drain("3s"));
    assert_eq!(rules(&short), ["prestop-too-short"]);
    assert!(
        short[0]
            .message
            .contains("preStop delay 0s + the app's own drain 3s (quiesce.io/app-drain-delay"),
        "{}",
        short[0].message
    );
    assert!(short[0].fix.contains("at least 4s"), "{}", short[0].fix);

    let bad = detect_text(&with_drain("soon"));
    let f = finding(&bad, "invalid-annotation", WEB);
    assert!(
        f.message.contains("\"soon\" is not a duration"),
        "{}",
        f.message
    );
    assert_eq!(f.path, "/spec/template/metadata/annotations");
}
