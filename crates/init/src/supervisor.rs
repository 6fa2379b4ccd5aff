//! The supervisor: starts the command (see `child`), forwards signals, reaps every child (as
//! PID 1 or as a subreaper), and runs the drain sequence on the trigger signal:
//! readiness false → on-drain call → drain (a fixed delay, or until quiet) → stop signal →
//! stop timeout → SIGKILL.
//!
//! All signals but the synchronous ones and the terminal's stop signals are blocked and read
//! from a signalfd, polled together with a wake-up pipe (control socket, on-drain call), with
//! the next deadline as the poll timeout: one thread decides everything and never waits on the
//! network.

use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::mpsc::{self, Receiver};
use std::time::Instant;

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, sigprocmask};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::unistd::Pid;

use crate::child::{self, SpawnError, TTY_STOP};
use crate::config::Config;
use crate::control::{self, Request};
use crate::drain::{self, Drain};
use crate::quiet::Watch;
use crate::readiness::Readiness;
use crate::{http, log, wake};

/// Signals a process gets for its own faults; blocking them would hang it instead of killing.
const SYNCHRONOUS: [Signal; 6] = [
    Signal::SIGSEGV,
    Signal::SIGBUS,
    Signal::SIGFPE,
    Signal::SIGILL,
    Signal::SIGTRAP,
    Signal::SIGSYS,
];

/// Prestop hooks that may wait for the drain at once; more are closed unanswered.
const MAX_WAITING_HOOKS: usize = 64;

/// Why quiesce-init could not supervise.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The app did not start.
    #[error(transparent)]
    Spawn(#[from] SpawnError),
    /// A system call the supervisor cannot do without failed.
    #[error("{what}: {source}")]
    System {
        /// What was being done.
        what: &'static str,
        /// The error.
        source: Errno,
    },
    /// An option's resource could not be set up.
    #[error("{option}: {source}")]
    Setup {
        /// The option, with its value.
        option: String,
        /// The error.
        source: std::io::Error,
    },
}

impl Error {
    /// The exit status for this failure: a shell's for a command that cannot start, else 1.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Spawn(e) => e.exit_code(),
            _ => 1,
        }
    }
}

fn system(what: &'static str) -> impl FnOnce(Errno) -> Error {
    move |source| Error::System { what, source }
}

fn blocked_set() -> SigSet {
    let mut set = SigSet::all();
    for s in SYNCHRONOUS.iter().chain(&TTY_STOP) {
        set.remove(*s);
    }
    set
}

/// A signal's name for the log (real-time ones as SIGRTMIN+n).
fn name(signo: i32) -> String {
    match Signal::try_from(signo) {
        Ok(s) => s.to_string(),
        Err(_) => format!("SIGRTMIN+{}", signo - nix::libc::SIGRTMIN()),
    }
}

/// Where the drain stands.
enum Phase {
    Serving,
    /// The on-drain call is under way; the drain starts when it answers or times out.
    Deregistering {
        deadline: Instant,
    },
    Draining(Drain),
    Stopping {
        kill_at: Instant,
    },
    Killed,
}

struct Supervisor {
    config: Config,
    child: Pid,
    readiness: Readiness,
    ready_port: Option<u16>,
    phase: Phase,
    waiting_hooks: Vec<UnixStream>,
    triggered: Option<Instant>,
    /// Started at the trigger, so connections during the on-drain call count too.
    watch: Option<Watch>,
    on_drain_done: Option<Receiver<()>>,
    waker: wake::Waker,
}

/// Runs the command to completion; returns the exit code quiesce-init should exit with.
pub fn run(config: Config) -> Result<i32, Error> {
    #[cfg(target_os = "linux")]
    if std::process::id() != 1
        && let Err(e) = nix::sys::prctl::set_child_subreaper(true)
    {
        log::phase(&format!(
            "cannot become a child subreaper ({e}); orphans may not be reaped"
        ));
    }
    let blocked = blocked_set();
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&blocked), None).map_err(system("blocking signals"))?;
    child::ignore_tty_stops().map_err(system("ignoring SIGTTIN/SIGTTOU"))?;
    let child = child::spawn(&config.command)?;
    log::phase(&format!(
        "started {:?} as pid {child}",
        config.command.join(" ")
    ));

    let readiness = Readiness::default();
    if let Some(path) = &config.ready_file {
        std::fs::write(path, b"ready\n").map_err(|source| Error::Setup {
            option: format!("--ready-file {}", path.display()),
            source,
        })?;
    }
    let mut ready_port = None;
    if let Some(addr) = config.ready_addr {
        let bound = readiness
            .serve(addr, config.ready_upstream.clone())
            .map_err(|source| Error::Setup {
                option: format!("--ready-addr {addr}"),
                source,
            })?;
        ready_port = Some(bound.port());
        log::phase(&format!("readiness on http://{bound}/"));
    }
    let (waker, woken) = wake::pair().map_err(|source| Error::Setup {
        option: "wake-up pipe".into(),
        source,
    })?;
    let (requests_tx, requests) = mpsc::channel();
    // Held until quiesce-init returns, then the socket file is removed.
    let _control =
        control::listen(&config.control_socket, requests_tx, waker.clone()).inspect_err(|e| {
            log::phase(&format!(
                "control socket {} unavailable ({e}); prestop will not work",
                config.control_socket.display()
            ))
        });
    let signals = SignalFd::with_flags(&blocked, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .map_err(system("signalfd"))?;

    let mut sup = Supervisor {
        config,
        child,
        readiness,
        ready_port,
        phase: Phase::Serving,
        waiting_hooks: Vec::new(),
        triggered: None,
        watch: None,
        on_drain_done: None,
        waker,
    };
    loop {
        let timeout = sup.next_deadline().map_or(PollTimeout::NONE, |at| {
            let ms = at
                .saturating_duration_since(Instant::now())
                .as_millis()
                .min(60_000) as u16;
            PollTimeout::from(ms.max(1))
        });
        let mut fds = [
            PollFd::new(signals.as_fd(), PollFlags::POLLIN),
            PollFd::new(woken.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, timeout) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => {
                return Err(Error::System {
                    what: "poll",
                    source: e,
                });
            }
        }
        while let Ok(Some(info)) = signals.read_signal() {
            if let Some(code) = sup.on_signal(info.ssi_signo as i32) {
                return Ok(code);
            }
        }
        woken.clear();
        while let Ok(Request::Drain(stream)) = requests.try_recv() {
            sup.on_prestop(stream);
        }
        sup.on_time(Instant::now());
    }
}

impl Supervisor {
    fn next_deadline(&self) -> Option<Instant> {
        match &self.phase {
            Phase::Deregistering { deadline } => Some(*deadline),
            Phase::Draining(d) => Some(d.next_check()),
            Phase::Stopping { kill_at } => Some(*kill_at),
            Phase::Serving | Phase::Killed => None,
        }
    }

    /// The pid signals go to: the app, or its whole process group.
    fn target(&self) -> i32 {
        let pid = self.child.as_raw();
        if self.config.signal_group { -pid } else { pid }
    }

    fn send(&self, signo: i32) -> std::io::Result<()> {
        // SAFETY: kill(2) with plain integers. nix's `kill` takes only the standard signals,
        // and real-time ones must be forwarded too.
        #[allow(unsafe_code)]
        let rc = unsafe { nix::libc::kill(self.target(), signo) };
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }

    /// Handles one signal; returns the exit code once the command has exited.
    fn on_signal(&mut self, signo: i32) -> Option<i32> {
        let trigger = self.config.trigger as i32;
        match signo {
            nix::libc::SIGCHLD => return self.reap(),
            s if s == trigger => match self.phase {
                Phase::Serving => self.start_drain(&name(s)),
                Phase::Deregistering { .. } | Phase::Draining(_) => {
                    self.end_drain("second trigger signal: drain skipped")
                }
                Phase::Stopping { .. } | Phase::Killed => {}
            },
            nix::libc::SIGINT
                if matches!(self.phase, Phase::Deregistering { .. } | Phase::Draining(_)) =>
            {
                self.end_drain("SIGINT: drain skipped");
            }
            other => {
                if let Err(e) = self.send(other) {
                    log::phase(&format!("forwarding {} failed: {e}", name(other)));
                }
            }
        }
        None
    }

    fn on_prestop(&mut self, stream: UnixStream) {
        // The kubelet runs one hook per container stop; past a few dozen waiting, the rest
        // is a client gone wrong, and each would hold a descriptor until the drain ends.
        if self.waiting_hooks.len() >= MAX_WAITING_HOOKS {
            return;
        }
        match self.phase {
            Phase::Serving => {
                self.waiting_hooks.push(stream);
                self.start_drain("prestop hook");
            }
            Phase::Deregistering { .. } | Phase::Draining(_) => self.waiting_hooks.push(stream),
            Phase::Stopping { .. } | Phase::Killed => control::release(stream),
        }
    }

    fn start_drain(&mut self, cause: &str) {
        self.readiness
            .start_draining(self.config.ready_file.as_ref());
        self.triggered = Some(Instant::now());
        let max = humantime::format_duration(self.config.drain_delay);
        let plan = match &self.config.quiet {
            None => format!("keeping the app running for {max}"),
            Some(q) => {
                match Watch::start(q.ports.clone(), q.ignore_from.clone(), self.ready_port) {
                    Ok(w) => {
                        self.watch = Some(w);
                        format!(
                            "keeping the app running until no new connection for {} (at least {}, at most {max})",
                            humantime::format_duration(q.period),
                            humantime::format_duration(q.min),
                        )
                    }
                    Err(e) => format!(
                        "cannot watch new connections ({e}): keeping the app running for the maximum, {max}"
                    ),
                }
            }
        };
        log::phase(&format!("drain started by {cause}: readiness 503, {plan}"));
        // The deregistration runs before the drain starts counting, so the drain is what the
        // discovery caches get after it; its timeout bounds how long it can hold the drain.
        // It runs on its own thread (name resolution has no timeout of its own): signals are
        // forwarded and children reaped meanwhile.
        match self.config.on_drain.clone() {
            Some(url) => {
                let (done_tx, done) = mpsc::channel();
                let timeout = self.config.on_drain_timeout;
                let waker = self.waker.clone();
                std::thread::spawn(move || {
                    let started = Instant::now();
                    match http::request("POST", &url, timeout) {
                        Ok(code) => log::phase(&format!(
                            "on-drain POST {url} answered {code} in {:?}",
                            started.elapsed()
                        )),
                        Err(e) => log::phase(&format!("on-drain POST {url} failed: {e}")),
                    }
                    let _ = done_tx.send(());
                    waker.wake();
                });
                self.on_drain_done = Some(done);
                // However long resolving, connecting and reading take together, the drain
                // waits for the call at most the timeout.
                self.phase = Phase::Deregistering {
                    deadline: Instant::now() + timeout,
                };
            }
            None => self.begin_drain_clock(),
        }
    }

    fn begin_drain_clock(&mut self) {
        let quiet = match (&self.config.quiet, self.watch.take()) {
            (Some(q), Some(watch)) => Some(drain::Quiet::new(watch, q.period, q.min)),
            _ => None,
        };
        let triggered = self.triggered.unwrap_or_else(Instant::now);
        self.phase = Phase::Draining(Drain::new(triggered, self.config.drain_delay, quiet));
    }

    fn end_drain(&mut self, why: &str) {
        log::phase(why);
        self.watch = None;
        for hook in self.waiting_hooks.drain(..) {
            control::release(hook);
        }
        let signal = self.config.stop_signal;
        match self.send(signal as i32) {
            Ok(()) => log::phase(&format!(
                "sent {signal} to the app{}; SIGKILL in {}",
                if self.config.signal_group {
                    "'s process group"
                } else {
                    ""
                },
                humantime::format_duration(self.config.stop_timeout)
            )),
            Err(e) => log::phase(&format!("sending {signal} failed: {e}")),
        }
        self.phase = Phase::Stopping {
            kill_at: Instant::now() + self.config.stop_timeout,
        };
    }

    fn on_time(&mut self, now: Instant) {
        match &mut self.phase {
            Phase::Deregistering { deadline } => {
                let answered = self
                    .on_drain_done
                    .as_ref()
                    .is_some_and(|d| d.try_recv().is_ok());
                if answered || now >= *deadline {
                    if !answered {
                        log::phase("on-drain call still unanswered: draining without it");
                    }
                    self.begin_drain_clock();
                }
            }
            Phase::Draining(d) => {
                if let Some(why) = d.over(now) {
                    self.end_drain(&why);
                }
            }
            Phase::Stopping { kill_at } if now >= *kill_at => {
                log::phase("stop timeout over: SIGKILL to the app's process group");
                if let Err(e) = nix::sys::signal::killpg(self.child, Signal::SIGKILL) {
                    log::phase(&format!("SIGKILL failed: {e}"));
                }
                self.phase = Phase::Killed;
            }
            _ => {}
        }
    }

    /// Reaps every exited child; returns the exit code when it was the command.
    fn reap(&mut self) -> Option<i32> {
        let mut code = None;
        while let Some((pid, status)) = reap_one() {
            if pid == self.child.as_raw() {
                code = Some(status);
            }
        }
        if let Some(code) = code {
            log::phase(&format!("the app exited with status {code}"));
            for hook in self.waiting_hooks.drain(..) {
                control::release(hook);
            }
        }
        code
    }
}

/// Reaps one exited child without waiting: its pid and a shell's exit status for it (128+n
/// when signal n killed it). nix's `waitpid` cannot do this for a real-time signal (it has no
/// `Signal` for it and returns an error instead, so the app's death would go unnoticed).
fn reap_one() -> Option<(i32, i32)> {
    let mut status = 0;
    // SAFETY: waitpid(2) writes only the status integer we pass.
    #[allow(unsafe_code)]
    let pid = unsafe { nix::libc::waitpid(-1, &mut status, nix::libc::WNOHANG) };
    if pid <= 0 {
        return None;
    }
    // Without WUNTRACED / WCONTINUED a child is only ever reported exited or killed.
    let code = if nix::libc::WIFSIGNALED(status) {
        128 + nix::libc::WTERMSIG(status)
    } else {
        nix::libc::WEXITSTATUS(status)
    };
    Some((pid, code))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synchronous_and_terminal_signals_stay_unblocked() {
        let set = blocked_set();
        assert!(set.contains(Signal::SIGTERM));
        assert!(!set.contains(Signal::SIGSEGV));
        assert!(!set.contains(Signal::SIGTTOU));
        assert!(!set.contains(Signal::SIGTTIN));
    }

    #[test]
    fn real_time_signals_have_names() {
        assert_eq!(name(nix::libc::SIGRTMIN() + 2), "SIGRTMIN+2");
        assert_eq!(name(nix::libc::SIGHUP), "SIGHUP");
    }
}
