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
