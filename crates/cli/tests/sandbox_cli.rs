//! `quiesce sandbox` as a user runs it: one ready line, a kubeconfig kubectl accepts (its typed
//! creates included), a clean exit on SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn prints_ready_serves_kubectl_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    let mut child = Command::new(env!("CARGO_BIN_EXE_quiesce"))
        .args([
            "sandbox",
            "--nodes",
            "3",
            "--time-scale",
            "10",
            "--kubeconfig",
        ])
        .arg(&kubeconfig)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let line = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("a ready line within 30s");
    let url = line
        .strip_prefix("sandbox ready: ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");

    let deadline = Instant::now() + Duration::from_secs(30);
    let ready_nodes = loop {
        let out = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(["get", "nodes", "--no-headers"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let ready = text
            .lines()
            .filter(|l| l.split_whitespace().nth(1) == Some("Ready"))
            .count();
        if ready == 3 || Instant::now() > deadline {
            break ready;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(ready_nodes, 3);

    // A user's first commands: typed creates, which kubectl sends as protobuf.
    let kubectl = |args: &[&str]| {
        let out = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .arg("--request-timeout=20s")
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    kubectl(&["create", "namespace", "play"]);
    kubectl(&[
        "-n",
        "play",
        "create",
        "deployment",
        "web",
        "--image=nginx",
        "--replicas=2",
    ]);
    kubectl(&[
        "-n",
        "play",
        "rollout",
        "status",
        "deployment/web",
        "--timeout=30s",
    ]);
    let ready = kubectl(&[
        "-n",
        "play",
        "get",
        "deployment",
        "web",
        "-o",
        "jsonpath={.status.readyReplicas}",
    ]);
    assert_eq!(ready, "2");

    let pid = i32::try_from(child.id()).unwrap();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the sandbox did not stop within 20s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "exit status {status}");
    assert!(rx.try_recv().is_err(), "exactly one line on stdout");
}
