//! Rules over fixture manifests: a failing and a passing case per rule, and bad input.

mod common;

use std::path::Path;

use common::{GOOD, deployment, fixture, opts, rules, run_text};
use quiesce_audit::{Error, audit, load};
use quiesce_core::budget::Stack;

#[test]
fn eureka_deployment_with_thirty_second_prestop_fails_and_the_fix_passes() {
    let short = load::load_paths(&[fixture("eureka-short.yaml")]).unwrap();
    let (findings, workloads) = audit(&short, &opts(&[Stack::Eureka]));
    assert_eq!(workloads, 1);
    assert_eq!(rules(&findings), ["prestop-too-short", "grace-too-short"]);
    assert!(
        findings[0].message.contains("needed 1m 35s"),
        "{}",
        findings[0].message
    );
    assert!(
        findings[1].fix.contains("at least 105"),
        "{}",
        findings[1].fix
    );

    let fixed = load::load_paths(&[fixture("eureka-fixed.yaml")]).unwrap();
    assert!(audit(&fixed, &opts(&[Stack::Eureka])).0.is_empty());
}

#[test]
fn a_clean_deployment_has_no_findings() {
    assert!(run_text(&deployment(2, "", GOOD), &[Stack::KubeProxy]).is_empty());
}

#[test]
fn missing_readiness_probe_is_reported() {
    let c = "          lifecycle: {preStop: {sleep: {seconds: 10}}}\n";
    assert_eq!(
        rules(&run_text(&deployment(2, "", c), &[Stack::KubeProxy])),
        ["no-readiness-probe"]
    );
}

#[test]
fn recreate_strategy_is_reported() {
    let s = "  strategy: {type: Recreate}\n";
    assert_eq!(
        rules(&run_text(&deployment(2, s, GOOD), &[Stack::KubeProxy])),
        ["recreate-strategy"]
    );
}

#[test]
fn single_replica_is_reported() {
    assert_eq!(
        rules(&run_text(&deployment(1, "", GOOD), &[Stack::KubeProxy])),
        ["single-replica"]
    );
}

#[test]
fn missing_pdb_is_reported() {
    let text = deployment(2, "", GOOD);
    let without_pdb = text.split("---\napiVersion: policy/v1").next().unwrap();
    assert_eq!(
        rules(&run_text(without_pdb, &[Stack::KubeProxy])),
        ["no-pdb"]
    );
}

#[test]
fn missing_prestop_behind_a_service_is_an_error() {
    let c = "          readinessProbe: {httpGet: {path: /, port: 80}}\n";
    let findings = run_text(&deployment(2, "", c), &[Stack::KubeProxy]);
    assert_eq!(rules(&findings), ["no-prestop-delay"]);
    assert!(findings[0].fix.contains("7s"), "{}", findings[0].fix);
}

#[test]
fn exec_sleep_counts_as_a_prestop_delay() {
    let c = "          readinessProbe: {httpGet: {path: /, port: 80}}\n          lifecycle: {preStop: {exec: {command: [sleep, \"20\"]}}}\n";
    assert!(run_text(&deployment(2, "", c), &[Stack::Istio]).is_empty());
    assert_eq!(
        rules(&run_text(&deployment(2, "", c), &[Stack::Alb])),
        ["prestop-too-short"]
    );
}

#[test]
fn grace_shorter_than_prestop_plus_shutdown_is_an_error() {
    let c = "          readinessProbe: {httpGet: {path: /, port: 80}}\n          lifecycle: {preStop: {sleep: {seconds: 55}}}\n";
    assert_eq!(
        rules(&run_text(&deployment(2, "", c), &[Stack::KubeProxy])),
        ["grace-too-short"]
    );
}

#[test]
fn quiesce_init_drain_delay_and_annotation_stack_are_recognised() {
    let objects = load::load_paths(&[fixture("quiesce-init.yaml")]).unwrap();
    let (findings, workloads) = audit(&objects, &opts(&[Stack::Eureka]));
    assert_eq!(workloads, 1);
    assert!(findings.is_empty(), "{findings:?}");
}

/// With drain-until-quiet the drain may end after the quiet period, or last until the maximum
/// (the drain delay): only the maximum can be relied on to cover the budget.
#[test]
fn drain_until_quiet_covers_the_budget_only_if_its_maximum_does() {
    let container = |env: &str| {
        format!(
            "          command: [/quiesce-init, --, /app]\n          env: [{env}]\n          readinessProbe: {{httpGet: {{path: /, port: 80}}}}\n"
        )
    };
    let long_max = container(
        "{name: QUIESCE_DRAIN_QUIET, value: 2s}, {name: QUIESCE_DRAIN_DELAY, value: 40s}",
    );
    assert!(
        rules(&run_text(&deployment(3, "", &long_max), &[Stack::Alb])).is_empty(),
        "a 40 s maximum covers the ALB budget"
    );
    let short_max = container(
        "{name: QUIESCE_DRAIN_QUIET, value: 30s}, {name: QUIESCE_DRAIN_DELAY, value: 5s}",
    );
    assert_eq!(
        rules(&run_text(&deployment(3, "", &short_max), &[Stack::Alb])),
        ["prestop-too-short"],
        "the quiet period is not the maximum"
    );
    let default_max = container("{name: QUIESCE_DRAIN_QUIET, value: 2s}");
    assert_eq!(
        rules(&run_text(&deployment(3, "", &default_max), &[Stack::Alb])),
        ["prestop-too-short"],
        "quiesce-init's default maximum (5 s) counts, not no preStop delay at all"
    );
}

#[test]
fn real_guestbook_manifest_lacks_probes_and_prestop() {
    let objects = load::load_paths(&[fixture("guestbook-all-in-one.yaml")]).unwrap();
    let (findings, workloads) = audit(&objects, &opts(&[Stack::KubeProxy]));
    assert_eq!(workloads, 3);
    let r = rules(&findings);
    assert!(
        r.contains(&"single-replica") && r.contains(&"no-prestop-delay"),
        "{r:?}"
    );
}

#[test]
fn malformed_yaml_names_file_and_line() {
    let err = load::load_paths(&[fixture("malformed.yaml")]).unwrap_err();
    let Error::Parse { path, line, .. } = &err else {
        panic!("{err}")
    };
    assert!(path.ends_with("malformed.yaml"));
    assert_eq!(*line, 2);
    assert!(err.to_string().contains("malformed.yaml:2"));
}

#[test]
fn alias_bomb_is_refused() {
    let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..12 {
        let prev = i - 1;
        text.push_str(&format!(
            "a{i}: &a{i} [*a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}]\n"
        ));
    }
    let err = load::parse(Path::new("bomb.yaml"), &text).unwrap_err();
    assert!(matches!(err, Error::Parse { .. }), "{err}");
    assert!(err.to_string().contains("bomb.yaml"));
}

#[test]
fn huge_file_is_refused_before_parsing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("huge.yaml");
    let file = std::fs::File::create(&path).unwrap();
    file.set_len(load::MAX_FILE_BYTES + 1).unwrap();
    let err = load::load_paths(&[path]).unwrap_err();
    assert!(matches!(err, Error::TooLarge { .. }), "{err}");
    assert!(err.to_string().contains("huge.yaml"));
}

#[test]
fn an_exec_prestop_through_a_shell_is_flagged() {
    let c = "          readinessProbe: {httpGet: {path: /, port: 80}}\n          lifecycle: {preStop: {exec: {command: [/bin/sh, -c, sleep 20]}}}\n";
    assert_eq!(
        rules(&run_text(&deployment(2, "", c), &[Stack::Istio])),
        ["exec-prestop-needs-shell"]
    );
}

#[test]
fn readiness_identical_to_liveness_is_flagged() {
    let same = "          readinessProbe: {httpGet: {path: /, port: 80}}\n          livenessProbe: {httpGet: {path: /, port: 80}}\n          lifecycle: {preStop: {sleep: {seconds: 10}}}\n";
    assert_eq!(
        rules(&run_text(&deployment(2, "", same), &[Stack::KubeProxy])),
        ["readiness-equals-liveness"]
    );
    let different = same.replace(
        "livenessProbe: {httpGet: {path: /, port: 80}}",
        "livenessProbe: {tcpSocket: {port: 80}}",
    );
    assert!(run_text(&deployment(2, "", &different), &[Stack::KubeProxy]).is_empty());
}

#[test]
fn a_rollout_that_lets_every_replica_go_is_an_error() {
    let all = "  strategy: {type: RollingUpdate, rollingUpdate: {maxUnavailable: 100%}}\n";
    assert_eq!(
        rules(&run_text(&deployment(2, all, GOOD), &[Stack::KubeProxy])),
        ["rolling-all-at-once"]
    );
    let one = "  strategy: {type: RollingUpdate, rollingUpdate: {maxUnavailable: 1}}\n";
    assert!(run_text(&deployment(2, one, GOOD), &[Stack::KubeProxy]).is_empty());
}

#[test]
fn budgets_that_block_drains_overlap_or_select_nothing() {
    let base = deployment(2, "", GOOD);
    let blocking = base.replace("maxUnavailable: 1, selector", "maxUnavailable: 0, selector");
    assert_eq!(
        rules(&run_text(&blocking, &[Stack::KubeProxy])),
        ["pdb-blocks-drain"]
    );
    let min_all = base.replace("maxUnavailable: 1, selector", "minAvailable: 2, selector");
    assert_eq!(
        rules(&run_text(&min_all, &[Stack::KubeProxy])),
        ["pdb-blocks-drain"]
    );
    let second = format!(
        "{base}---\napiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata: {{name: web-2}}\nspec: {{maxUnavailable: 1, selector: {{matchLabels: {{app: web}}}}}}\n"
    );
    assert_eq!(
        rules(&run_text(&second, &[Stack::KubeProxy])),
        ["multiple-pdbs"]
    );
    let stray = format!(
        "{base}---\napiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata: {{name: typo}}\nspec: {{maxUnavailable: 1, selector: {{matchLabels: {{app: wbe}}}}}}\n"
    );
    let findings = run_text(&stray, &[Stack::KubeProxy]);
    assert_eq!(rules(&findings), ["pdb-selects-nothing"]);
    assert_eq!(findings[0].workload, "PodDisruptionBudget default/typo");
}

#[test]
fn a_headless_service_in_front_of_a_deployment_is_flagged() {
    let headless = deployment(2, "", GOOD).replace(
        "spec: {selector: {app: web}}",
        "spec: {clusterIP: None, selector: {app: web}}",
    );
    assert_eq!(
        rules(&run_text(&headless, &[Stack::KubeProxy])),
        ["headless-service-stateless"]
    );
}

#[test]
fn spring_boot_without_graceful_shutdown_is_flagged() {
    let spring = format!("{GOOD}          env: [{{name: SPRING_PROFILES_ACTIVE, value: prod}}]\n");
    assert_eq!(
        rules(&run_text(&deployment(2, "", &spring), &[Stack::KubeProxy])),
        ["spring-no-graceful-shutdown"]
    );
    let graceful = format!(
        "{GOOD}          env: [{{name: SPRING_PROFILES_ACTIVE, value: prod}}, {{name: SERVER_SHUTDOWN, value: graceful}}]\n"
    );
    assert!(run_text(&deployment(2, "", &graceful), &[Stack::KubeProxy]).is_empty());
}

#[test]
fn replicas_without_spread_are_flagged() {
    let unspread =
        deployment(2, "", GOOD).replace("      topologySpreadConstraints", "      x-unused");
    assert_eq!(
        rules(&run_text(&unspread, &[Stack::KubeProxy])),
        ["no-spread"]
    );
    let anti = deployment(2, "", GOOD).replace(
        "      topologySpreadConstraints: [{maxSkew: 1, topologyKey: kubernetes.io/hostname, whenUnsatisfiable: ScheduleAnyway, labelSelector: {matchLabels: {app: web}}}]",
        "      affinity: {podAntiAffinity: {preferredDuringSchedulingIgnoredDuringExecution: [{weight: 100, podAffinityTerm: {topologyKey: kubernetes.io/hostname, labelSelector: {matchLabels: {app: web}}}}]}}",
    );
    assert!(run_text(&anti, &[Stack::KubeProxy]).is_empty());
}

#[test]
fn an_hpa_with_one_minimum_replica_is_a_single_replica() {
    let hpa = |min: u32| {
        format!(
            "{}---\napiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata: {{name: web}}\nspec: {{scaleTargetRef: {{apiVersion: apps/v1, kind: Deployment, name: web}}, minReplicas: {min}, maxReplicas: 5}}\n",
            deployment(2, "", GOOD)
        )
    };
    let findings = run_text(&hpa(1), &[Stack::KubeProxy]);
    assert_eq!(rules(&findings), ["single-replica"]);
    assert!(
        findings[0].message.contains("minReplicas is 1"),
        "{}",
        findings[0].message
    );
    assert!(run_text(&hpa(2), &[Stack::KubeProxy]).is_empty());
}
