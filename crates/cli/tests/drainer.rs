//! `quiesce drainer` as it runs in a cluster: the real binary, configured by flags and
//! environment, against moto (Auto Scaling + SQS) and the sandbox: it takes the Lease, serves
//! its health and metrics endpoints, and completes a terminate hook after draining the node.

#[path = "../../drainer/tests/support/mod.rs"]
mod support;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Kills the drainer however the test ends.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_leads_serves_metrics_and_completes_a_terminate_hook() {
    let bed = support::bed(2, 0, 30, "").await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    bed.sandbox.write_kubeconfig(&kubeconfig).unwrap();
    let port = free_port();
    let mut child = Child(
        Command::new(env!("CARGO_BIN_EXE_quiesce"))
            .args(["drainer", "--kubeconfig"])
            .arg(&kubeconfig)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--endpoint-url", bed.moto.url(), "--region", "us-east-1"])
            .args(["--drain-margin", "10s", "--log-format", "json"])
            .env("QUIESCE_QUEUE_URL", &bed.queue_url)
            .env("POD_NAME", "drainer-0")
            .env("POD_NAMESPACE", "kube-system")
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    bed.wait_for("/readyz 200", Duration::from_secs(20), || async {
        tokio::task::spawn_blocking(move || support::http_get(port, "/readyz"))
            .await
            .unwrap()
            .is_some_and(|(s, _)| s == 200)
    })
    .await;
    assert_eq!(support::http_get(port, "/healthz").unwrap().0, 200);

    let victim = bed.instances[0].clone();
    bed.terminate(&victim).await;
    bed.wait_result(&victim, "CONTINUE", Duration::from_secs(60))
        .await;
    let (status, metrics) = support::http_get(port, "/metrics").unwrap();
    assert_eq!(status, 200);
    assert!(
        metrics.contains("quiesce_lifecycle_completions_total{result=\"continue\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("quiesce_heartbeats_total{result=\"ok\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("quiesce_drain_phase_seconds_bucket"),
        "{metrics}"
    );
    let lease: k8s_openapi::api::coordination::v1::Lease =
        kube::Api::namespaced(bed.sandbox.client(), "kube-system")
            .get("quiesce-drainer")
            .await
            .unwrap();
    assert_eq!(
        lease.spec.unwrap().holder_identity.as_deref(),
        Some("drainer-0")
    );

    // SIGTERM: it stops promptly and cleanly, logging JSON.
    nix_kill(child.0.id());
    let status = child.0.wait().unwrap();
    assert!(status.success(), "{status}");
    let mut logs = String::new();
    child
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut logs)
        .unwrap();
    assert!(
        logs.lines()
            .any(|l| l.starts_with('{') && l.contains("drainer starting")),
        "{logs}"
    );
}

fn nix_kill(pid: u32) {
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn settings_that_cannot_work_are_refused_naming_the_flag() {
    let run = |extra: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_quiesce"))
            .args(["drainer", "--queue-url", "http://127.0.0.1:9/q"])
            .args(extra)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(!out.status.success(), "{extra:?} was accepted");
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    let err = run(&["--max-concurrent", "0"]);
    assert!(
        err.contains("--max-concurrent") && err.contains("at least 1"),
        "{err}"
    );
    let err = run(&["--max-in-hand", "0"]);
    assert!(
        err.contains("--max-in-hand") && err.contains("at least 1"),
        "{err}"
    );
    let err = run(&["--lease-duration", "500ms"]);
    assert!(
        err.contains("--lease-duration") && err.contains("under 1s"),
        "{err}"
    );
}
