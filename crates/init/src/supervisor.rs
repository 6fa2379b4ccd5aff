//! The supervisor: starts the command in its own process group, forwards signals, reaps every
//! child (as PID 1 or as a subreaper), and runs the drain sequence on the trigger signal:
//! readiness false → on-drain call → drain delay → stop signal → stop timeout → SIGKILL.
//!
//! All signals are blocked and read from a signalfd, polled together with the control socket's
//! wake-up pipe, with the next deadline as the poll timeout: one thread decides everything.

use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::mpsc;
use std::time::Instant;

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, kill, killpg, sigprocmask};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use crate::config::Config;
use crate::control::{self, Request};
use crate::readiness::Readiness;
use crate::{http, log};

/// Signals a process gets for its own faults; blocking them would hang it instead of killing.
const SYNCHRONOUS: [Signal; 6] = [
    Signal::SIGSEGV,
    Signal::SIGBUS,
    Signal::SIGFPE,
    Signal::SIGILL,
    Signal::SIGTRAP,
    Signal::SIGSYS,
];

fn blocked_set() -> SigSet {
    let mut set = SigSet::all();
    for s in SYNCHRONOUS {
        set.remove(s);
    }
    set
}

/// Where the drain stands.
enum Phase {
    Serving,
    Delaying { until: Instant },
    Stopping { kill_at: Instant },
    Killed,
}

struct Supervisor {
    config: Config,
    child: Pid,
    readiness: Readiness,
    phase: Phase,
    waiting_hooks: Vec<UnixStream>,
}

/// Runs the command to completion; returns the exit code quiesce-init should exit with.
pub fn run(config: Config) -> Result<i32, String> {
    #[cfg(target_os = "linux")]
    if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        log::phase(&format!(
            "cannot become a child subreaper ({e}); orphans may not be reaped"
        ));
    }
    let blocked = blocked_set();
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&blocked), None)
        .map_err(|e| format!("blocking signals: {e}"))?;
    let child = spawn(&config.command)?;
    log::phase(&format!(
        "started {:?} as pid {child}",
        config.command.join(" ")
    ));

    let readiness = Readiness::default();
    if let Some(path) = &config.ready_file {
        std::fs::write(path, b"ready\n")
            .map_err(|e| format!("--ready-file {}: {e}", path.display()))?;
    }
    if let Some(addr) = config.ready_addr {
        let bound = readiness
            .serve(addr, config.ready_upstream.clone())
            .map_err(|e| format!("--ready-addr {addr}: {e}"))?;
        log::phase(&format!("readiness on http://{bound}/"));
    }
    let (wake_tx, wake_rx) = UnixStream::pair().map_err(|e| e.to_string())?;
    wake_rx.set_nonblocking(true).map_err(|e| e.to_string())?;
    let (requests_tx, requests) = mpsc::channel();
    if let Err(e) = control::listen(&config.control_socket, requests_tx, wake_tx) {
        log::phase(&format!(
            "control socket {} unavailable ({e}); prestop will not work",
            config.control_socket.display()
        ));
    }
    let signals = SignalFd::with_flags(&blocked, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .map_err(|e| format!("signalfd: {e}"))?;

    let mut sup = Supervisor {
        config,
        child,
        readiness,
        phase: Phase::Serving,
        waiting_hooks: Vec::new(),
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
            PollFd::new(wake_rx.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, timeout) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(format!("poll: {e}")),
        }
        while let Ok(Some(info)) = signals.read_signal() {
            let Ok(signal) = Signal::try_from(info.ssi_signo as i32) else {
                continue;
            };
            if let Some(code) = sup.on_signal(signal) {
                return Ok(code);
            }
        }
        drain_wake(&wake_rx);
        while let Ok(Request::Drain(stream)) = requests.try_recv() {
            sup.on_prestop(stream);
        }
        sup.on_time(Instant::now());
    }
}

fn drain_wake(wake: &UnixStream) {
    let mut buf = [0u8; 64];
    while let Ok(n) = std::io::Read::read(&mut &*wake, &mut buf) {
        if n == 0 {
            break;
        }
    }
}

#[allow(unsafe_code)]
fn spawn(command: &[String]) -> Result<Pid, String> {
    let mut cmd = Command::new(&command[0]);
    cmd.args(&command[1..]).process_group(0);
    // SAFETY: runs in the forked child before exec; sigprocmask is async-signal-safe and touches
    // no memory shared with the parent. The child must not inherit our blocked signal mask, or
    // it would never see the SIGTERM we forward.
    unsafe {
        cmd.pre_exec(|| {
            sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)
                .map_err(std::io::Error::from)
        });
    }
    let child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {:?}: {e}", command[0]))?;
    Ok(Pid::from_raw(child.id() as i32))
}

impl Supervisor {
    fn next_deadline(&self) -> Option<Instant> {
        match self.phase {
            Phase::Delaying { until } => Some(until),
            Phase::Stopping { kill_at } => Some(kill_at),
            Phase::Serving | Phase::Killed => None,
        }
    }

    /// Handles one signal; returns the exit code once the command has exited.
    fn on_signal(&mut self, signal: Signal) -> Option<i32> {
        match signal {
            Signal::SIGCHLD => return self.reap(),
            s if s == self.config.trigger => match self.phase {
                Phase::Serving => self.start_drain(&format!("{s}")),
                Phase::Delaying { .. } => self.end_delay("second trigger signal: delay skipped"),
                Phase::Stopping { .. } | Phase::Killed => {}
            },
            Signal::SIGINT if matches!(self.phase, Phase::Delaying { .. }) => {
                self.end_delay("SIGINT: delay skipped");
            }
            other => {
                if let Err(e) = kill(self.child, other) {
                    log::phase(&format!("forwarding {other} failed: {e}"));
                }
            }
        }
        None
    }

    fn on_prestop(&mut self, stream: UnixStream) {
        match self.phase {
            Phase::Serving => {
                self.waiting_hooks.push(stream);
                self.start_drain("prestop hook");
            }
            Phase::Delaying { .. } => self.waiting_hooks.push(stream),
            Phase::Stopping { .. } | Phase::Killed => control::release(stream),
        }
    }

    fn start_drain(&mut self, cause: &str) {
        self.readiness
            .start_draining(self.config.ready_file.as_ref());
        let delay = self.config.drain_delay;
        log::phase(&format!(
            "drain started by {cause}: readiness 503, keeping the app running for {}",
            humantime::format_duration(delay)
        ));
        // The deregistration runs before the delay starts counting, so the delay is what the
        // discovery caches get after it; its timeout bounds how long it can hold the drain.
        if let Some(url) = &self.config.on_drain {
            let started = Instant::now();
            match http::request("POST", url, self.config.on_drain_timeout) {
                Ok(code) => log::phase(&format!(
                    "on-drain POST {url} answered {code} in {:?}",
                    started.elapsed()
                )),
                Err(e) => log::phase(&format!("on-drain POST {url} failed: {e}")),
            }
        }
        self.phase = Phase::Delaying {
            until: Instant::now() + delay,
        };
    }

    fn end_delay(&mut self, why: &str) {
        log::phase(why);
        for hook in self.waiting_hooks.drain(..) {
            control::release(hook);
        }
        let signal = self.config.stop_signal;
        match kill(self.child, signal) {
            Ok(()) => log::phase(&format!(
                "sent {signal} to the app; SIGKILL in {}",
                humantime::format_duration(self.config.stop_timeout)
            )),
            Err(e) => log::phase(&format!("sending {signal} failed: {e}")),
        }
        self.phase = Phase::Stopping {
            kill_at: Instant::now() + self.config.stop_timeout,
        };
    }

    fn on_time(&mut self, now: Instant) {
        match self.phase {
            Phase::Delaying { until } if now >= until => self.end_delay("drain delay over"),
            Phase::Stopping { kill_at } if now >= kill_at => {
                log::phase("stop timeout over: SIGKILL to the app's process group");
                if let Err(e) = killpg(self.child, Signal::SIGKILL) {
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
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, status)) if pid == self.child => code = Some(status),
                Ok(WaitStatus::Signaled(pid, signal, _)) if pid == self.child => {
                    code = Some(128 + signal as i32)
                }
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => {}
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synchronous_signals_stay_unblocked() {
        let set = blocked_set();
        assert!(set.contains(Signal::SIGTERM));
        assert!(!set.contains(Signal::SIGSEGV));
    }
}
