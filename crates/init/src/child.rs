//! Starting the app as tini does: in a process group of its own that is also the terminal's
//! foreground group (so `docker run -it` / `kubectl exec -it` sessions read and write the
//! terminal), with no signal blocked and SIGTTIN/SIGTTOU back at their defaults; a command
//! that cannot start exits 127 or 126, as a shell's would.

use std::io;
use std::os::fd::BorrowedFd;
use std::os::unix::process::CommandExt;
use std::process::Command;

use nix::errno::Errno;
use nix::sys::signal::sigprocmask;
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, SigmaskHow, Signal, sigaction};
use nix::unistd::{Pid, getpgrp, setpgid, tcgetpgrp, tcsetpgrp};

/// The terminal's job-control signals: quiesce-init ignores them (the app, not it, is the
/// foreground group, and a log line must not stop PID 1), the app gets the defaults back.
pub const TTY_STOP: [Signal; 2] = [Signal::SIGTTIN, Signal::SIGTTOU];

/// Why the app could not be started.
#[derive(Debug, thiserror::Error)]
#[error("cannot start {command:?}: {source}")]
pub struct SpawnError {
    command: String,
    source: io::Error,
}

impl SpawnError {
    /// The exit status a shell gives the same failure: 127 when there is no such command,
    /// 126 when it exists but cannot be executed, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self.source.raw_os_error().map(Errno::from_raw) {
            Some(Errno::ENOENT | Errno::ENOTDIR) => 127,
            Some(Errno::EACCES | Errno::ENOEXEC | Errno::EPERM | Errno::EISDIR) => 126,
            _ => 1,
        }
    }
}

/// Ignores SIGTTIN and SIGTTOU in quiesce-init itself.
pub fn ignore_tty_stops() -> nix::Result<()> {
    let ignore = SigAction::new(SigHandler::SigIgn, SaFlags::empty(), SigSet::empty());
    for s in TTY_STOP {
        // SAFETY: installs SIG_IGN, no handler code runs.
        #[allow(unsafe_code)]
        unsafe {
            sigaction(s, &ignore)?;
        }
    }
    Ok(())
}

/// Starts `command` as described in the module documentation; returns its pid.
#[allow(unsafe_code)]
pub fn spawn(command: &[String]) -> Result<Pid, SpawnError> {
    let mut cmd = Command::new(&command[0]);
    cmd.args(&command[1..]);
    // Hand the terminal over only if it is ours to give: started in the background of an
    // interactive shell, quiesce-init must not steal the foreground (tini does; its source
    // notes it as a TODO).
    let hand_over = tcgetpgrp(std::io::stdin()).is_ok_and(|fg| fg == getpgrp());
    // SAFETY: the closure runs in the forked child before exec and calls only
    // async-signal-safe functions (setpgid, tcsetpgrp, sigaction, sigprocmask) on no memory
    // shared with the parent; fd 0 is only passed to tcsetpgrp (closed, it answers EBADF).
    unsafe {
        cmd.pre_exec(move || {
            setpgid(Pid::from_raw(0), Pid::from_raw(0))?;
            // Still with every signal blocked (inherited), so taking the terminal from the
            // background cannot stop us with SIGTTOU. No terminal (ENOTTY, or no stdin at
            // all: EBADF), or one of a zone without job control (ENXIO), is fine.
            if hand_over {
                let stdin = BorrowedFd::borrow_raw(0);
                match tcsetpgrp(stdin, getpgrp()) {
                    Ok(()) | Err(Errno::ENOTTY | Errno::ENXIO | Errno::EBADF) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            let default = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
            for s in TTY_STOP {
                sigaction(s, &default)?;
            }
            // The app must not inherit our blocked mask, or it would never see the SIGTERM we
            // forward.
            sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)?;
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(|source| SpawnError {
        command: command[0].clone(),
        source,
    })?;
    Ok(Pid::from_raw(child.id() as i32))
}
