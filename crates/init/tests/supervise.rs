//! quiesce-init with real processes, real signals and real HTTP on loopback.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_secs(20);

fn init(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_quiesce-init"));
    cmd.args(args).stdin(Stdio::null());
    cmd
}

/// quiesce-init with its output discarded, as most tests only watch its effects.
fn spawn_quiet(args: &[&str]) -> Child {
    init(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{sig}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

/// Waits for `cond` with a deadline (conditions, never fixed sleeps).
fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn wait_exit(child: &mut Child) -> ExitStatus {
    let mut status = None;
    wait_until("quiesce-init to exit", || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    status.unwrap()
}

/// Status code of `GET /` on `addr`, or None when nothing answers.
fn get(addr: SocketAddr) -> Option<u16> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut head = String::new();
    s.read_to_string(&mut head).ok()?;
    head.split_whitespace().nth(1)?.parse().ok()
}

#[test]
fn exit_codes_pass_through() {
    let status = init(&["--", "sh", "-c", "exit 7"]).status().unwrap();
    assert_eq!(status.code(), Some(7));
    let status = init(&["--", "sh", "-c", "kill -KILL $$"]).status().unwrap();
    assert_eq!(status.code(), Some(137), "128 + SIGKILL");
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

#[test]
fn signals_are_forwarded() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("signals");
    let script = format!(
        "for s in USR1 USR2 HUP QUIT WINCH; do trap \"echo $s >> {0}\" $s; done; echo up >> {0}; while :; do sleep 0.05; done",
        log.display()
    );
    let mut child = spawn_quiet(&["--drain-delay", "0s", "--", "sh", "-c", &script]);
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    wait_until("the child to start", || read(&log).contains("up"));
    for sig in ["USR1", "USR2", "HUP", "QUIT", "WINCH"] {
        signal(&child, sig);
        wait_until(&format!("{sig} to reach the child"), || {
            read(&log).contains(sig)
        });
    }
    signal(&child, "TERM");
    assert_eq!(wait_exit(&mut child).code(), Some(143));
}

#[test]
fn orphans_are_reaped() {
    // The child forks a grandchild and exits at once; the grandchild is re-parented to
    // quiesce-init (a subreaper) and must not stay a zombie.
    let mut child = spawn_quiet(&[
        "--drain-delay",
        "0s",
        "--",
        "sh",
        "-c",
        "(sh -c 'exit 0' &) ; exec sleep 30",
    ]);
    let children = format!("/proc/{0}/task/{0}/children", child.id());
    wait_until("only the command to remain a child", || {
        let list = std::fs::read_to_string(&children).unwrap_or_default();
        let pids: Vec<&str> = list.split_whitespace().collect();
        pids.len() == 1
            && std::fs::read_to_string(format!("/proc/{}/comm", pids[0]))
                .is_ok_and(|c| c.trim() == "sleep")
    });
    signal(&child, "TERM");
    assert_eq!(wait_exit(&mut child).code(), Some(143));
}

#[test]
fn drain_keeps_serving_then_stops_the_server() {
    let ready = free_addr();
    let app = free_addr();
    let mut child = init(&[
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
    ])
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let (tx, lines) = std::sync::mpsc::channel::<String>();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut log = Vec::new();
    let next_line = |log: &mut Vec<String>| {
        let line = lines
            .recv_timeout(DEADLINE)
            .expect("quiesce-init logged within the deadline");
        log.push(line.clone());
        line
    };
    wait_until("the app to serve", || get(app) == Some(200));
    assert_eq!(get(ready), Some(200));
    signal(&child, "TERM");
    let sent = Instant::now();
    while !next_line(&mut log).contains("drain started by SIGTERM") {}
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
    let status = wait_exit(&mut child);
    assert!(
        sent.elapsed() >= Duration::from_secs(3),
        "the app stopped only after the delay"
    );
    assert_eq!(
        status.code(),
        Some(128 + 15),
        "python's http.server dies of SIGTERM"
    );
    while !log.last().is_some_and(|l| l.contains("the app exited")) {
        next_line(&mut log);
    }
    let log = log.join("\n");
    for phase in [
        "drain delay over",
        "sent SIGTERM to the app",
        "the app exited with status 143",
    ] {
        assert!(log.contains(phase), "missing {phase:?} in:\n{log}");
    }
}

#[test]
fn an_app_ignoring_sigterm_is_killed_after_the_stop_timeout() {
    let mut child = init(&[
        "--drain-delay",
        "0s",
        "--stop-timeout",
        "500ms",
        "--",
        "sh",
        "-c",
        "trap '' TERM; echo up; while :; do sleep 0.05; done",
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    signal(&child, "TERM");
    let status = wait_exit(&mut child);
    assert_eq!(status.code(), Some(137));
}

#[test]
fn prestop_blocks_through_the_delay_with_readiness_already_false() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("control.sock");
    let ready_file = dir.path().join("ready");
    let ready = free_addr();
    let mut child = spawn_quiet(&[
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
    ]);
    wait_until("the control socket", || {
        socket.exists() && get(ready) == Some(200)
    });
    assert!(ready_file.exists());
    let started = Instant::now();
    let mut hook = init(&[
        "prestop",
        "--socket",
        socket.to_str().unwrap(),
        "--timeout",
        "20s",
    ])
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
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
    let status = wait_exit(&mut child);
    assert_eq!(
        status.code(),
        Some(143),
        "sleep got the stop signal when the delay ended"
    );
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
    let mut child = spawn_quiet(&[
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
    ]);
    wait_until("readiness to follow the app (200)", || {
        get(ready) == Some(200)
    });
    status.store(503, Ordering::SeqCst);
    wait_until("readiness to follow the app (503)", || {
        get(ready) == Some(503)
    });
    status.store(200, Ordering::SeqCst);
    wait_until("readiness back to 200", || get(ready) == Some(200));
    signal(&child, "TERM");
    let deadline = Instant::now() + DEADLINE;
    loop {
        let line = requests
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("the on-drain call within the deadline");
        if line.starts_with("POST /deregister") {
            break;
        }
    }
    assert_eq!(wait_exit(&mut child).code(), Some(143));
}
