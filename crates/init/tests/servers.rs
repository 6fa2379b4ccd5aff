//! The servers inside PID 1 (readiness endpoint, control socket, on-drain call) flooded or
//! black-holed: none may take PID 1 down or hold up its signal forwarding and reaping.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{Init, Mode, children, free_addr, get, lines, trap_app, wait_exit, wait_until};
use nix::libc::{SIGTERM, SIGUSR1};

/// Opens `n` connections that never send a byte (kept open until the vector is dropped).
fn idle_tcp(addr: std::net::SocketAddr, n: usize) -> Vec<TcpStream> {
    (0..n)
        .filter_map(|_| TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok())
        .collect()
}

/// 1,000 idle connections against a PID 1 limited to 256 MiB of address space (a thread per
/// connection runs out of it): probes are still answered within 2 s and PID 1 stays up.
#[test]
fn a_thousand_idle_connections_do_not_stop_probes_nor_kill_pid_1() {
    let ready = free_addr();
    let mut cmd = std::process::Command::new("prlimit");
    cmd.args(["--as=268435456", "--", common::BIN])
        .args([
            "--ready-addr",
            &ready.to_string(),
            "--drain-delay",
            "0s",
            "--",
            "sleep",
            "60",
        ])
        .env("MALLOC_ARENA_MAX", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut init = Init::start(Mode::Subreaper, cmd);
    wait_until("readiness", || get(ready) == Some(200));
    let flood = idle_tcp(ready, 1000);
    assert_eq!(
        flood.len(),
        1000,
        "every flood connection was accepted by the kernel"
    );
    for _ in 0..3 {
        let asked = Instant::now();
        assert_eq!(
            get(ready),
            Some(200),
            "a probe is answered during the flood"
        );
        assert!(asked.elapsed() < Duration::from_secs(2));
    }
    assert!(
        init.child.try_wait().unwrap().is_none(),
        "PID 1 survived the flood"
    );
    drop(flood);
    init.signal(SIGTERM);
    assert_eq!(init.wait().code(), Some(143));
}

/// Idle connections and an endless line on the control socket do not keep a real preStop
/// hook from starting the drain.
#[test]
fn a_flooded_control_socket_still_serves_prestop() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("control.sock");
    let ready = free_addr();
    let mut init = Init::quiet(
        Mode::Subreaper,
        &[
            "--drain-delay",
            "0s",
            "--ready-addr",
            &ready.to_string(),
            "--control-socket",
            socket.to_str().unwrap(),
            "--",
            "sleep",
            "60",
        ],
    )
    .unwrap();
    wait_until("the control socket", || {
        socket.exists() && get(ready) == Some(200)
    });
    let idle: Vec<UnixStream> = (0..1000)
        .filter_map(|_| UnixStream::connect(&socket).ok())
        .collect();
    assert!(idle.len() >= 100, "only {} connections", idle.len());
    let mut endless = UnixStream::connect(&socket).unwrap();
    endless
        .set_write_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let chunk = [b'a'; 64 * 1024];
    // Bounded: 16 MiB at most, until the server stops reading.
    for _ in 0..256 {
        if endless.write_all(&chunk).is_err() {
            break;
        }
    }
    let mut hook = common::prestop(&socket, Stdio::null());
    let status = wait_exit(&mut hook);
    assert!(status.success(), "prestop was served");
    assert_eq!(init.wait().code(), Some(143));
    drop(idle);
}

/// A listener that accepts the on-drain call and never answers; it notes when the caller
/// hangs up.
struct BlackHole {
    addr: std::net::SocketAddr,
    accepted: Arc<AtomicUsize>,
    hung_up: Arc<AtomicBool>,
}

fn black_hole() -> BlackHole {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let hung_up = Arc::new(AtomicBool::new(false));
    let (a, h) = (accepted.clone(), hung_up.clone());
    std::thread::spawn(move || {
        let Ok((mut stream, _)) = listener.accept() else {
            return;
        };
        a.fetch_add(1, Ordering::SeqCst);
        let _ = stream.set_read_timeout(Some(Duration::from_secs(60)));
        let mut buf = [0u8; 4096];
        // Read the request and wait, answering nothing, until the caller closes.
        while matches!(stream.read(&mut buf), Ok(n) if n > 0) {}
        h.store(true, Ordering::SeqCst);
    });
    BlackHole {
        addr,
        accepted,
        hung_up,
    }
}

fn black_holed_on_drain_does_not_delay_forwarding_or_reaping(mode: Mode) {
    let hole = black_hole();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("signals");
    // The app records SIGUSR1 and, in the same handler, leaves an orphan that exits at once
    // (re-parented to quiesce-init, which must reap it).
    let mut app = trap_app(&log, &[SIGUSR1]);
    app[2] = app[2].replace(
        "def note(n, _): log.write(str(n) + '\\n')",
        "def note(n, _):\n    os.system(\"sh -c '(true &)'\")\n    log.write(str(n) + '\\n')",
    );
    let url = format!("http://{}/deregister", hole.addr);
    let mut args = vec![
        "--on-drain",
        &url,
        "--on-drain-timeout",
        "60s",
        "--drain-delay",
        "0s",
        "--",
    ];
    args.extend(app.iter().map(String::as_str));
    let Some(mut init) = Init::quiet(mode, &args) else {
        return;
    };
    wait_until("the app's handlers", || lines(&log).contains(&"up".into()));
    init.signal(SIGTERM);
    wait_until("the on-drain call to reach the black hole", || {
        hole.accepted.load(Ordering::SeqCst) == 1
    });
    init.signal(SIGUSR1);
    wait_until("SIGUSR1 to reach the app during the on-drain call", || {
        lines(&log).contains(&SIGUSR1.to_string())
    });
    wait_until("the orphan to be reaped during the on-drain call", || {
        children(init.pid).len() == 1
    });
    assert!(
        !hole.hung_up.load(Ordering::SeqCst),
        "the on-drain call was still waiting while PID 1 forwarded and reaped"
    );
    // A second trigger skips what is left of the drain, the wait for the call included.
    init.signal(SIGTERM);
    assert_eq!(init.wait().code(), Some(143));
}

both_modes!(black_holed_on_drain_does_not_delay_forwarding_or_reaping);
