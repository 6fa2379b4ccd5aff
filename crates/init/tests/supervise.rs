//! quiesce-init with real processes, real signals and real HTTP on loopback; the reaping,
//! drain and exit-status tests run with quiesce-init as a subreaper and as real PID 1.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{DEADLINE, Init, Mode, children, comm, free_addr, get, init, wait_exit, wait_until};
use nix::libc::{SIGKILL, SIGTERM};

fn exit_codes_pass_through(mode: Mode) {
    let Some(mut exit7) = common::command(mode, &["--", "sh", "-c", "exit 7"]) else {
        return;
    };
    assert_eq!(exit7.status().unwrap().code(), Some(7));
    let mut killed = common::command(mode, &["--", "sh", "-c", "kill -KILL $$"]).unwrap();
    assert_eq!(
        killed.status().unwrap().code(),
        Some(128 + SIGKILL),
        "128 + SIGKILL"
    );
}

/// Like a shell: 127 for a command that does not exist, 126 for one that cannot be executed,
/// with a message naming the path.
fn exec_failures_exit_127_and_126(mode: Mode) {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-app");
    let not_executable = dir.path().join("not-executable");
    std::fs::write(&not_executable, "#!/bin/sh\n").unwrap();
    for (path, code) in [
        (missing.to_str().unwrap(), 127),
        ("no-such-command-on-path", 127),
        (not_executable.to_str().unwrap(), 126),
    ] {
        let Some(mut cmd) = common::command(mode, &["--", path]) else {
            return;
        };
        let out = cmd.output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{path}: {err}");
        assert!(err.contains(path), "the message names {path}: {err}");
    }
}

#[test]
fn bad_flags_are_usage_errors() {
    let out = init(&["--drain-delay", "soon", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--drain-delay") && err.contains("soon"),
        "{err}"
    );
    let out = init(&["true"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

fn orphans_are_reaped(mode: Mode) {
    // The child forks a grandchild and exits at once; the grandchild is re-parented to
    // quiesce-init (PID 1, or a subreaper) and must not stay a zombie.
    let Some(mut child) = Init::quiet(
        mode,
        &[
            "--drain-delay",
            "0s",
            "--",
            "sh",
            "-c",
            "(sh -c 'exit 0' &) ; exec sleep 30",
        ],
    ) else {
        return;
    };
    wait_until("only the command to remain a child", || {
        let pids = children(child.pid);
        pids.len() == 1 && comm(pids[0]).as_deref() == Some("sleep")
    });
    child.signal(SIGTERM);
    assert_eq!(child.wait().code(), Some(143));
}

fn drain_keeps_serving_then_stops_the_server(mode: Mode) {
    let ready = free_addr();
    let app = free_addr();
    let Some((mut child, mut log)) = Init::logged(
        mode,
        &[
            "--drain-delay",
            "3s",
            "--stop-timeout",
            "5s",
            "--ready-addr",
            &ready.to_string(),
            "--",
            "python3",
            "-m",
            "http.server",
            &app.port().to_string(),
            "--bind",
            "127.0.0.1",
        ],
    ) else {
        return;
    };
    wait_until("the app to serve", || get(app) == Some(200));
    assert_eq!(get(ready), Some(200));
    child.signal(SIGTERM);
    let sent = Instant::now();
    log.until("drain started by SIGTERM");
    assert_eq!(
        get(ready),
        Some(503),
        "readiness is 503 from the drain's start"
    );
    let mut served = 0;
    while sent.elapsed() < Duration::from_millis(1500) && served < 200 {
        assert_eq!(
            get(app),
            Some(200),
            "the app keeps serving inside the drain delay"
        );
        served += 1;
    }
    assert!(served > 0);
    let status = child.wait();
    assert!(
        sent.elapsed() >= Duration::from_secs(3),
        "the app stopped only after the delay"
    );
    assert_eq!(
        status.code(),
        Some(128 + 15),
        "python's http.server dies of SIGTERM"
    );
    let order: Vec<usize> = [
        "drain delay over",
        "sent SIGTERM to the app",
        "the app exited with status 143",
    ]
    .iter()
    .map(|phase| log.position(phase))
    .collect();
    assert!(order.is_sorted(), "phases out of order:\n{}", log.text());
}

fn an_app_ignoring_sigterm_is_killed_after_the_stop_timeout(mode: Mode) {
    let Some(mut cmd) = common::command(
        mode,
        &[
            "--drain-delay",
            "0s",
            "--stop-timeout",
            "500ms",
            "--",
            "sh",
            "-c",
            "trap '' TERM; echo up; while :; do sleep 0.05; done",
        ],
    ) else {
        return;
    };
    cmd.stdout(Stdio::piped()).stderr(Stdio::null());
    let mut child = Init::start(mode, cmd);
    let mut line = String::new();
    BufReader::new(child.child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    child.signal(SIGTERM);
    assert_eq!(child.wait().code(), Some(137));
}

fn prestop_blocks_through_the_delay_with_readiness_already_false(mode: Mode) {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("control.sock");
    let ready_file = dir.path().join("ready");
    let ready = free_addr();
    let Some(mut child) = Init::quiet(
        mode,
        &[
            "--drain-delay",
            "3s",
            "--ready-addr",
            &ready.to_string(),
            "--ready-file",
            ready_file.to_str().unwrap(),
            "--control-socket",
            socket.to_str().unwrap(),
            "--",
            "sleep",
            "30",
        ],
    ) else {
        return;
    };
    wait_until("the control socket", || {
        socket.exists() && get(ready) == Some(200)
    });
    assert!(ready_file.exists());
    let started = Instant::now();
    let mut hook = common::prestop(&socket, Stdio::piped());
    wait_until("readiness to turn 503", || get(ready) == Some(503));
    assert!(!ready_file.exists(), "the ready file is gone");
    assert!(
        hook.try_wait().unwrap().is_none(),
        "the hook still blocks while the delay runs"
    );
    let hook_status = wait_exit(&mut hook);
    assert!(hook_status.success());
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "prestop waited for the drain delay"
    );
    assert_eq!(
        child.wait().code(),
        Some(143),
        "sleep got the stop signal when the delay ended"
    );
    assert!(!socket.exists(), "quiesce-init removed its control socket");
}

#[test]
fn prestop_sleep_needs_no_shell() {
    let started = Instant::now();
    let status = init(&["prestop", "--sleep", "200ms"]).status().unwrap();
    assert!(status.success());
    assert!(started.elapsed() >= Duration::from_millis(200));
}

/// A tiny HTTP app on loopback: answers every request with `status`, records request lines.
fn fake_app(
    status: std::sync::Arc<std::sync::atomic::AtomicU16>,
) -> (SocketAddr, std::sync::mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut line = String::new();
            let _ = BufReader::new(stream.try_clone().unwrap()).read_line(&mut line);
            let code = status.load(std::sync::atomic::Ordering::SeqCst);
            let _ = write!(stream, "HTTP/1.0 {code} X\r\nContent-Length: 0\r\n\r\n");
            if tx.send(line.trim().to_string()).is_err() {
                return;
            }
        }
    });
    (addr, rx)
}

#[test]
fn upstream_readiness_until_the_drain_then_the_on_drain_call() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU16, Ordering};
    let status = Arc::new(AtomicU16::new(200));
    let (app, requests) = fake_app(status.clone());
    let ready = free_addr();
    let mut child = Init::quiet(
        Mode::Subreaper,
        &[
            "--drain-delay",
            "0s",
            "--ready-addr",
            &ready.to_string(),
            "--ready-upstream",
            &format!("http://{app}/health/readiness"),
            "--on-drain",
            &format!("http://{app}/deregister"),
            "--",
            "sleep",
            "30",
        ],
    )
    .unwrap();
    wait_until("readiness to follow the app (200)", || {
        get(ready) == Some(200)
    });
    status.store(503, Ordering::SeqCst);
    wait_until("readiness to follow the app (503)", || {
        get(ready) == Some(503)
    });
    status.store(200, Ordering::SeqCst);
    wait_until("readiness back to 200", || get(ready) == Some(200));
    child.signal(SIGTERM);
    let deadline = Instant::now() + DEADLINE;
    loop {
        let line = requests
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("the on-drain call within the deadline");
        if line.starts_with("POST /deregister") {
            break;
        }
    }
    assert_eq!(child.wait().code(), Some(143));
}

both_modes!(
    exit_codes_pass_through,
    exec_failures_exit_127_and_126,
    orphans_are_reaped,
    drain_keeps_serving_then_stops_the_server,
    an_app_ignoring_sigterm_is_killed_after_the_stop_timeout,
    prestop_blocks_through_the_delay_with_readiness_already_false,
);
