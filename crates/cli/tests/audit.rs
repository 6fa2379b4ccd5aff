//! `quiesce audit` as a process: exit codes, formats, stdin, `--explain`.

use std::io::Write;
use std::process::{Command, Output, Stdio};

fn fixture(name: &str) -> String {
    format!(
        "{}/../audit/tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    )
}

fn quiesce(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_quiesce"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("quiesce starts");
    let mut pipe = child.stdin.take().expect("stdin is piped");
    pipe.write_all(stdin.unwrap_or_default().as_bytes())
        .expect("stdin written");
    drop(pipe);
    child.wait_with_output().expect("quiesce exits")
}

#[test]
fn error_findings_exit_1_and_the_fixed_manifest_exits_0() {
    let short = fixture("eureka-short.yaml");
    let out = quiesce(&["audit", &short, "--stack", "eureka"], None);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("prestop-too-short") && text.contains("needed 1m 35s"),
        "{text}"
    );

    let fixed = fixture("eureka-fixed.yaml");
    let out = quiesce(&["audit", &fixed, "--stack", "eureka"], None);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn json_format_lists_findings_from_stdin() {
    let text = std::fs::read_to_string(fixture("eureka-short.yaml")).unwrap();
    let out = quiesce(
        &["audit", "-", "--format", "json", "--stack", "eureka"],
        Some(&text),
    );
    assert_eq!(out.status.code(), Some(1));
    let findings: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stdout is JSON");
    let rules: Vec<&str> = findings
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["rule"].as_str().unwrap())
        .collect();
    assert_eq!(rules, ["prestop-too-short", "grace-too-short"]);
}

#[test]
fn malformed_input_exits_2_naming_file_and_line() {
    let out = quiesce(&["audit", &fixture("malformed.yaml")], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("malformed.yaml:2"));
}

#[test]
fn explain_prints_why_and_fix_and_rejects_unknown_rules() {
    let out = quiesce(&["audit", "--explain", "grace-too-short"], None);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("why:") && text.contains("SIGKILL"), "{text}");

    let out = quiesce(&["audit", "--explain", "nope"], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no-prestop-delay"));
}

#[test]
fn unknown_stack_is_a_usage_error() {
    let out = quiesce(
        &["audit", "--stack", "consul", &fixture("eureka-short.yaml")],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("consul"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_mode_reads_the_live_objects() {
    let sandbox = quiesce_sandbox::Sandbox::start(quiesce_sandbox::SandboxOptions {
        scenario: quiesce_sandbox::scenario::Scenario::default_for(3),
        ..Default::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    sandbox.write_kubeconfig(&kubeconfig).unwrap();
    let path = kubeconfig.to_str().unwrap().to_string();
    let out = tokio::task::spawn_blocking(move || {
        quiesce(
            &[
                "audit",
                "--cluster",
                "--kubeconfig",
                &path,
                "--format",
                "json",
            ],
            None,
        )
    })
    .await
    .unwrap();
    sandbox.shutdown().await;
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        report.contains("cluster/default/Deployment/web"),
        "{report}"
    );
    assert!(report.contains("no-prestop-delay"), "{report}");
}

#[test]
fn without_stack_the_stacks_are_detected_and_named() {
    let out = quiesce(&["audit", &fixture("jhipster-store-deployment.yml")], None);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("needed 1m 35s")
            && text.contains("stack: eureka: env EUREKA_CLIENT_SERVICE_URL_DEFAULTZONE"),
        "{text}"
    );

    let out = quiesce(
        &[
            "audit",
            &fixture("ingress-nginx-aws-deploy.yaml"),
            "--format",
            "sarif",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    let log: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stdout is SARIF");
    let evidence: Vec<&str> = log["runs"][0]["results"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r["properties"]["evidence"].as_array().unwrap())
        .filter_map(|e| e.as_str())
        .collect();
    assert!(
        evidence.iter().any(|e| e.starts_with(
            "nlb: Service ingress-nginx/ingress-nginx-controller, annotation service.beta.kubernetes.io/aws-load-balancer-type=nlb"
        )),
        "{evidence:?}"
    );
}

#[test]
fn explain_covers_detection_and_the_new_rules() {
    let out = quiesce(&["audit", "--explain", "detection"], None);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "istio.io/rev",
        "TargetGroupBinding",
        "EUREKA_CLIENT_SERVICEURL_DEFAULTZONE",
        "externalTrafficPolicy Local",
    ] {
        assert!(text.contains(needle), "{needle} missing from {text}");
    }
    for (rule, needle) in [
        ("no-lb-readiness-gate", "pod-readiness-gate-inject"),
        ("grace-exceeds-node-shutdown", "shutdownGracePeriod"),
        ("preemptible-budget", "two minutes"),
    ] {
        let out = quiesce(&["audit", "--explain", rule], None);
        assert_eq!(out.status.code(), Some(0), "{rule}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains(needle), "{rule}: {text}");
    }
}

#[test]
fn node_shutdown_window_flags_are_checked() {
    let nginx = fixture("ingress-nginx-aws-deploy.yaml");
    let run = |extra: &[&str]| {
        let mut args = vec!["audit", nginx.as_str(), "--format", "json"];
        args.extend_from_slice(extra);
        quiesce(&args, None)
    };
    let rules = |out: &Output| -> Vec<String> {
        let findings: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        findings
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["rule"].as_str().unwrap().to_string())
            .collect()
    };
    assert!(rules(&run(&[])).contains(&"grace-exceeds-node-shutdown".to_string()));
    assert!(
        !rules(&run(&["--node-shutdown-grace", "6m"]))
            .contains(&"grace-exceeds-node-shutdown".to_string())
    );
    let out = run(&[
        "--node-shutdown-grace",
        "30s",
        "--node-shutdown-critical-grace",
        "1m",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--node-shutdown-critical-grace 1m"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
