//! Helpers shared by the quiesce-init integration tests: starting it (directly, as a child
//! subreaper, or as real PID 1 in a new PID namespace), signalling it, waiting on conditions.

#![allow(dead_code)] // each test binary uses its own subset

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, ChildStderr, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

/// The longest any condition is waited for: a hang fails the test instead of stalling it.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// The quiesce-init binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_quiesce-init");

/// How quiesce-init is started.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    /// A plain child of the test: it reaps orphans as a child subreaper.
    Subreaper,
    /// Real PID 1 of a new PID namespace (`unshare --fork --pid --mount-proc`).
    Pid1,
    /// A plain child running as `nobody` (when the test runs as root), for what must work
    /// without privileges.
    Unprivileged,
}

/// The `unshare` prefix that makes quiesce-init PID 1, or None (with the reason printed) where
/// this machine cannot create a PID namespace. As root it needs nothing else; otherwise it
/// asks for a user namespace too.
pub fn pid1_prefix() -> Option<Vec<String>> {
    let mut prefix: Vec<String> = vec!["unshare".into()];
    if effective_uid() != 0 {
        prefix.extend(["--user".into(), "--map-root-user".into()]);
    }
    prefix.extend(
        ["--fork", "--pid", "--mount-proc", "--kill-child"]
            .iter()
            .map(|s| s.to_string()),
    );
    let probe = Command::new(&prefix[0])
        .args(&prefix[1..])
        .arg("true")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output();
    match probe {
        Ok(out) if out.status.success() => Some(prefix),
        Ok(out) => {
            eprintln!(
                "SKIP: cannot create a PID namespace here ({}); the subreaper variant of this test still runs",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            None
        }
        Err(e) => {
            eprintln!("SKIP: no unshare ({e}); the subreaper variant of this test still runs");
            None
        }
    }
}

/// A running quiesce-init and the host pid to signal (in PID-1 mode `child` is `unshare`).
pub struct Init {
    /// The process the test started.
    pub child: Child,
    /// quiesce-init's own pid, as seen from the test.
    pub pid: u32,
}

/// A `Command` for quiesce-init with `args`, started as `mode` asks; None when that mode is
/// unavailable here (the reason is printed).
pub fn command(mode: Mode, args: &[&str]) -> Option<Command> {
    let mut cmd = match mode {
        Mode::Subreaper => Command::new(BIN),
        Mode::Unprivileged if effective_uid() != 0 => Command::new(BIN),
        Mode::Unprivileged => {
            let mut c = Command::new("setpriv");
            c.args(["--reuid=65534", "--regid=65534", "--clear-groups", BIN]);
            c
        }
        Mode::Pid1 => {
            let prefix = pid1_prefix()?;
            let mut c = Command::new(&prefix[0]);
            c.args(&prefix[1..]).arg(BIN);
            c
        }
    };
    cmd.args(args).stdin(Stdio::null());
    Some(cmd)
}

/// A `Command` for quiesce-init run directly.
pub fn init(args: &[&str]) -> Command {
    command(Mode::Subreaper, args).expect("direct mode is always available")
}

impl Init {
    /// Starts `cmd` (from [`command`]) and finds quiesce-init's pid.
    pub fn start(mode: Mode, mut cmd: Command) -> Init {
        let child = cmd.spawn().expect("quiesce-init starts");
        let pid = match mode {
            Mode::Subreaper | Mode::Unprivileged => child.id(),
            Mode::Pid1 => {
                let mut found = None;
                wait_until("quiesce-init to run as PID 1 under unshare", || {
                    found = children(child.id())
                        .into_iter()
                        .find(|p| comm(*p).as_deref() == Some("quiesce-init"));
                    found.is_some()
                });
                found.unwrap()
            }
        };
        Init { child, pid }
    }

    /// Starts quiesce-init with `args` and its output discarded; None when `mode` is unavailable.
    pub fn quiet(mode: Mode, args: &[&str]) -> Option<Init> {
        let mut cmd = command(mode, args)?;
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
        Some(Init::start(mode, cmd))
    }

    /// Starts quiesce-init with `args`, its stderr lines readable from the returned log.
    pub fn logged(mode: Mode, args: &[&str]) -> Option<(Init, Log)> {
        let mut cmd = command(mode, args)?;
        cmd.stdout(Stdio::null()).stderr(Stdio::piped());
        let mut init = Init::start(mode, cmd);
        let log = Log::new(init.child.stderr.take().unwrap());
        Some((init, log))
    }

    /// Sends `sig` (a number, so real-time signals work too) to quiesce-init.
    pub fn signal(&self, sig: i32) {
        send(self.pid, sig);
    }

    /// Waits for quiesce-init (or the unshare around it) to exit.
    pub fn wait(&mut self) -> ExitStatus {
        wait_exit(&mut self.child)
    }
}

impl Drop for Init {
    fn drop(&mut self) {
        // A failed assertion must not leave the supervisor (and its app) running.
        if self.child.try_wait().ok().flatten().is_none() {
            // The app leads its own process group: end it with everything it started.
            for app in children(self.pid) {
                #[allow(unsafe_code)]
                // SAFETY: kill(2) with plain integers.
                unsafe {
                    nix::libc::kill(-(app as i32), nix::libc::SIGKILL);
                }
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// quiesce-init's stderr, line by line, kept so a failure can print all of it.
pub struct Log {
    lines: Receiver<String>,
    /// Every line read so far.
    pub seen: Vec<String>,
}

impl Log {
    /// Reads `stderr` line by line on a thread of its own.
    pub fn new(stderr: ChildStderr) -> Log {
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Log {
            lines,
            seen: Vec::new(),
        }
    }

    /// Reads lines until one contains `text`; returns it.
    pub fn until(&mut self, text: &str) -> String {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(line) = self.seen.iter().find(|l| l.contains(text)) {
                return line.clone();
            }
            match self
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(line) => self.seen.push(line),
                Err(_) => panic!(
                    "no log line containing {text:?} within {DEADLINE:?}; log so far:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// The position of the first line containing `text` (waiting for it).
    pub fn position(&mut self, text: &str) -> usize {
        self.until(text);
        self.seen.iter().position(|l| l.contains(text)).unwrap()
    }

    /// Everything read so far, for failure messages.
    pub fn text(&self) -> String {
        self.seen.join("\n")
    }
}

/// Starts `quiesce-init prestop` against `socket` (20 s timeout), its stderr to `stderr`.
pub fn prestop(socket: &std::path::Path, stderr: Stdio) -> Child {
    init(&[
        "prestop",
        "--socket",
        socket.to_str().unwrap(),
        "--timeout",
        "20s",
    ])
    .stdout(Stdio::null())
    .stderr(stderr)
    .spawn()
    .unwrap()
}

/// Sends signal number `sig` to `pid`.
pub fn send(pid: u32, sig: i32) {
    #[allow(unsafe_code)]
    // SAFETY: kill(2) with plain integers; no memory is shared.
    let rc = unsafe { nix::libc::kill(pid as i32, sig) };
    assert_eq!(
        rc,
        0,
        "kill -{sig} {pid}: {}",
        std::io::Error::last_os_error()
    );
}

/// The first real-time signal as this libc numbers it (glibc keeps two for itself).
pub fn sigrtmin() -> i32 {
    nix::libc::SIGRTMIN()
}

/// The pids of `pid`'s children.
pub fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// A process's command name.
pub fn comm(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|c| c.trim().to_string())
}

/// A signal-set line (`SigIgn`, `SigBlk`, …) of `/proc/PID/status`, as a bit mask.
pub fn sigset(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"));
    u64::from_str_radix(line.trim(), 16).unwrap()
}

/// Whether signal `sig` is in the mask `set`.
pub fn has(set: u64, sig: i32) -> bool {
    set & (1 << (sig - 1)) != 0
}

/// A free loopback address to listen on.
pub fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Waits for `cond` with a deadline (conditions, never fixed sleeps).
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits for `child` to exit, at most [`DEADLINE`].
pub fn wait_exit(child: &mut Child) -> ExitStatus {
    let mut status = None;
    wait_until("quiesce-init to exit", || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    status.unwrap()
}

/// Status code of `GET /` on `addr`, or None when nothing answers within 2 s.
pub fn get(addr: SocketAddr) -> Option<u16> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut head = String::new();
    s.read_to_string(&mut head).ok()?;
    head.split_whitespace().nth(1)?.parse().ok()
}

/// A Python app that records every signal in `signals` to `log` (one name a line) and says
/// `up` once its handlers are in place; it ignores none and exits only when killed.
pub fn trap_app(log: &std::path::Path, signals: &[i32]) -> Vec<String> {
    let list = signals
        .iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let script = format!(
        "import signal, os, time\n\
         log = open({log:?}, 'a', buffering=1)\n\
         def note(n, _): log.write(str(n) + '\\n')\n\
         for n in [{list}]: signal.signal(n, note)\n\
         log.write('up\\n')\n\
         while True: time.sleep(0.05)\n",
        log = log.display().to_string()
    );
    vec!["python3".into(), "-c".into(), script]
}

/// The lines of a file (empty while it does not exist).
pub fn lines(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Runs the test body in both modes: as a subreaper and as real PID 1 (skipped with a message
/// where no PID namespace can be made).
#[macro_export]
macro_rules! both_modes {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn subreaper() {
                super::$name($crate::common::Mode::Subreaper);
            }
            #[test]
            fn pid1() {
                super::$name($crate::common::Mode::Pid1);
            }
        }
    )*};
}

/// The effective uid, from /proc (no unsafe, no extra nix feature).
fn effective_uid() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(u32::MAX)
}
