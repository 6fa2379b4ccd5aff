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

/// The default traffic ports, in a network namespace of the test's own (nothing else listens
/// there): every listening port counts but quiesce-init's readiness port, and the count of new
/// connections is exact.
#[test]
fn by_default_every_listening_port_but_readiness_counts() {
    let Some(mut prefix) = common::pid1_prefix() else {
        return;
    };
    prefix.insert(1, "--net".into());
    let script = format!(
        "ip link set lo up && exec {} --ready-addr 127.0.0.1:8086 --drain-until-quiet 2s \
         --drain-delay 30s --drain-min 2s --stop-timeout 10s \
         -- python3 -m http.server 8080 --bind 127.0.0.1",
        common::BIN
    );
    let mut cmd = std::process::Command::new(&prefix[0]);
    cmd.args(&prefix[1..])
        .args(["sh", "-c", &script])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut init = Init::start(Mode::Pid1, cmd);
    let mut log = Log::new(init.child.stderr.take().unwrap());
    // The client runs inside the namespace: it waits for the app, then (once told) sends five
    // sparse requests to the app and probes readiness every 100 ms in between.
    let client = "import sys, time, urllib.request, urllib.error\n\
                  def get(port):\n\
                  \x20   try: return urllib.request.urlopen(f'http://127.0.0.1:{port}/', timeout=2).status\n\
                  \x20   except urllib.error.HTTPError as e: return e.code\n\
                  \x20   except OSError: return None\n\
                  for _ in range(200):\n\
                  \x20   if get(8080) == 200: break\n\
                  \x20   time.sleep(0.05)\n\
                  print('serving', flush=True)\n\
                  sys.stdin.readline()\n\
                  for i in range(5):\n\
                  \x20   assert get(8080) == 200, f'request {i} failed'\n\
                  \x20   for _ in range(3):\n\
                  \x20       get(8086)\n\
                  \x20       time.sleep(0.1)\n\
                  print('done', flush=True)\n";
    let mut traffic = std::process::Command::new("nsenter")
        .args([
            "--target",
            &init.pid.to_string(),
            "--net",
            "python3",
            "-c",
            client,
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut said = std::io::BufReader::new(traffic.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut said, &mut line).unwrap();
    assert_eq!(line.trim(), "serving");
    init.signal(SIGTERM);
    log.until("drain started by SIGTERM");
    std::io::Write::write_all(traffic.stdin.as_mut().unwrap(), b"go\n").unwrap();
    // Gaps of 300 ms against a 2 s quiet period, and at least 2 s of drain: all five count.
    let quiet = log.until("quiet for 2s");
    assert!(
        quiet.contains("(5 during the drain)"),
        "the five app requests, not the readiness probes nor the client's own sockets: {quiet}\n{}",
        log.text()
    );
    assert!(
        common::wait_exit(&mut traffic).success(),
        "no request failed"
    );
    assert_eq!(init.wait().code(), Some(143));
}
