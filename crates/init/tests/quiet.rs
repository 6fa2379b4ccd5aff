//! Drain until quiet: after the trigger the app keeps running until no new inbound connection
//! has reached its ports for the quiet period (at least the minimum, at most the maximum).
//! A client keeps opening short connections (one request each, the kind a table poll misses)
//! until the endpoint change "propagates"; the test asserts what happened and in which order,
//! never how fast.

mod common;

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{Init, Log, Mode, free_addr, get, wait_until};
use nix::libc::SIGTERM;

/// quiesce-init running `python3 -m http.server` on `app`, draining until quiet.
fn start(mode: Mode, app: SocketAddr, extra: &[&str]) -> Option<(Init, Log)> {
    let port = app.port().to_string();
    let mut args = vec!["--drain-ports", &port, "--stop-timeout", "10s"];
    args.extend(extra);
    args.extend([
        "--",
        "python3",
        "-m",
        "http.server",
        &port,
        "--bind",
        "127.0.0.1",
    ]);
    let (init, log) = Init::logged(mode, &args)?;
    wait_until("the app to serve", || get(app) == Some(200));
    Some((init, log))
}

/// A connection to `to` from the loopback address `from` (as kubelet probes come from the
/// node's address, not the client's).
fn connect_from(from: Ipv4Addr, to: SocketAddr) -> std::io::Result<TcpStream> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, SockaddrIn, bind, connect, socket};
    let fd: OwnedFd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    bind(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &SockaddrIn::from(SocketAddrV4::new(from, 0)),
    )?;
    let SocketAddr::V4(to) = to else {
        unreachable!("loopback v4")
    };
    connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &SockaddrIn::from(to))?;
    let stream = TcpStream::from(fd);
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    Ok(stream)
}

/// One HTTP/1.0 request on a new connection from `from`; the status code.
fn request(from: Ipv4Addr, to: SocketAddr) -> Option<u16> {
    use std::io::{Read, Write};
    let mut s = connect_from(from, to).ok()?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut head = String::new();
    s.read_to_string(&mut head).ok()?;
    head.split_whitespace().nth(1)?.parse().ok()
}

fn the_stop_signal_waits_for_the_quiet_period_after_the_last_connection(mode: Mode) {
    let app = free_addr();
    let quiet = Duration::from_secs(2);
    let Some((mut init, mut log)) = start(
        mode,
        app,
        &[
            "--drain-until-quiet",
            "2s",
            "--drain-delay",
            "60s",
            "--drain-min",
            "500ms",
        ],
    ) else {
        return;
    };
    init.signal(SIGTERM);
    log.until("drain started by SIGTERM");
    // The endpoint change "propagates" some time after the trigger: until then clients
    // keep opening connections, a request each.
    let propagated = Instant::now() + Duration::from_millis(1500);
    let mut last_connection = Instant::now();
    let mut sent = 0;
    while Instant::now() < propagated && sent < 1000 {
        last_connection = Instant::now();
        assert_eq!(
            request(Ipv4Addr::LOCALHOST, app),
            Some(200),
            "request {sent} during the drain failed:\n{}",
            log.text()
        );
        sent += 1;
        // Sparse and short: a poll of the socket table every few tens of milliseconds
        // would miss most of these, and the drain would end too early.
        std::thread::sleep(Duration::from_millis(300));
    }
    let stop = log.position("sent SIGTERM to the app");
    let stopped = Instant::now();
    assert!(
        stopped >= last_connection + quiet,
        "the stop signal came before the last connection + the quiet period:\n{}",
        log.text()
    );
    let quiet_line = log.position("quiet for 2s");
    assert!(
        quiet_line < stop,
        "the quiet period ended the drain:\n{}",
        log.text()
    );
    assert!(
        !log.text().contains("maximum"),
        "the maximum did not apply:\n{}",
        log.text()
    );
    assert!(
        log.seen[quiet_line].contains("last new connection"),
        "the log says when the last connection came: {}",
        log.seen[quiet_line]
    );
    assert_eq!(init.wait().code(), Some(143));
}

fn constant_new_connections_drain_for_the_maximum(mode: Mode) {
    let app = free_addr();
    let Some((mut init, mut log)) = start(
        mode,
        app,
        &[
            "--drain-until-quiet",
            "1s",
            "--drain-delay",
            "3s",
            "--drain-min",
            "0s",
        ],
    ) else {
        return;
    };
    init.signal(SIGTERM);
    log.until("drain started by SIGTERM");
    let stopped = Arc::new(AtomicBool::new(false));
    let client = {
        let stopped = stopped.clone();
        std::thread::spawn(move || {
            let mut failed_before_stop = 0;
            for _ in 0..2000 {
                if stopped.load(Ordering::SeqCst) {
                    break;
                }
                let ok = request(Ipv4Addr::LOCALHOST, app) == Some(200);
                if !ok && !stopped.load(Ordering::SeqCst) {
                    failed_before_stop += 1;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            failed_before_stop
        })
    };
    let max = log.position("maximum drain delay 3s reached");
    let stop = log.position("sent SIGTERM to the app");
    stopped.store(true, Ordering::SeqCst);
    assert!(max < stop, "{}", log.text());
    assert!(!log.text().contains("quiet for"), "{}", log.text());
    let failed = client.join().unwrap();
    // Requests racing the stop signal may fail; the ones before it may not. A request in
    // flight when the flag is set can still fail, so this allows exactly that one.
    assert!(failed <= 1, "{failed} requests failed during the drain");
    assert_eq!(init.wait().code(), Some(143));
}

fn probes_from_the_host_address_do_not_keep_the_pod_busy(mode: Mode) {
    let app = free_addr();
    let host = Ipv4Addr::new(127, 0, 0, 2);
    let Some((mut init, mut log)) = start(
        mode,
        app,
        &[
            "--drain-until-quiet",
            "1s",
            "--drain-delay",
            "60s",
            "--drain-min",
            "0s",
            "--drain-ignore-from",
            "127.0.0.2",
        ],
    ) else {
        return;
    };
    let probing = Arc::new(AtomicBool::new(true));
    let probes = Arc::new(AtomicUsize::new(0));
    let prober = {
        let (probing, probes) = (probing.clone(), probes.clone());
        std::thread::spawn(move || {
            // The kubelet's probes never stop (every 100 ms here); bounded in count.
            while probing.load(Ordering::SeqCst) && probes.load(Ordering::SeqCst) < 2000 {
                let _ = request(host, app);
                probes.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    wait_until("a few probes", || probes.load(Ordering::SeqCst) >= 3);
    init.signal(SIGTERM);
    let quiet = log.position("quiet for 1s");
    let stop = log.position("sent SIGTERM to the app");
    probing.store(false, Ordering::SeqCst);
    assert!(quiet < stop, "{}", log.text());
    assert!(!log.text().contains("maximum"), "{}", log.text());
    prober.join().unwrap();
    assert_eq!(init.wait().code(), Some(143));
}

both_modes!(
    the_stop_signal_waits_for_the_quiet_period_after_the_last_connection,
    constant_new_connections_drain_for_the_maximum,
    probes_from_the_host_address_do_not_keep_the_pod_busy,
);

/// Counting connections needs no privilege: the same drain as `nobody`.
#[test]
fn drain_until_quiet_works_without_root() {
    the_stop_signal_waits_for_the_quiet_period_after_the_last_connection(Mode::Unprivileged);
}
