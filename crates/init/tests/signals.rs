//! Signals as tini's test suite checks them: every catchable signal but the trigger and
//! SIGCHLD reaches the app (real-time ones included), one whose default action terminates ends
//! it with 128+n, and the group mode reaches workers whose parent ignores the signal. Each
//! test runs with quiesce-init as a subreaper and as real PID 1 of a new PID namespace.

mod common;

use common::{Init, Mode, children, comm, lines, sigrtmin, trap_app, wait_until};
use nix::libc;

/// The forwarded signals the issue lists, two real-time ones among them.
fn forwarded() -> Vec<i32> {
    vec![
        libc::SIGHUP,
        libc::SIGQUIT,
        libc::SIGUSR1,
        libc::SIGUSR2,
        libc::SIGWINCH,
        libc::SIGCONT,
        libc::SIGALRM,
        sigrtmin() + 2,
        libc::SIGRTMAX() - 1,
    ]
}

fn every_signal_reaches_the_app(mode: Mode) {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("signals");
    let mut trapped = forwarded();
    trapped.push(libc::SIGCHLD);
    let app = trap_app(&log, &trapped);
    let mut args = vec!["--drain-delay", "0s", "--"];
    args.extend(app.iter().map(String::as_str));
    let Some(mut init) = Init::quiet(mode, &args) else {
        return;
    };
    wait_until("the app's handlers", || lines(&log).contains(&"up".into()));
    for sig in forwarded() {
        init.signal(sig);
        wait_until(&format!("signal {sig} to reach the app"), || {
            lines(&log).contains(&sig.to_string())
        });
    }
    // SIGCHLD is quiesce-init's own (it reaps); a higher-numbered signal sent after it is
    // dequeued after it, so once that one arrived SIGCHLD would have been forwarded too.
    init.signal(libc::SIGCHLD);
    let marker = sigrtmin() + 2;
    init.signal(marker);
    wait_until("the marker signal a second time", || {
        lines(&log)
            .iter()
            .filter(|l| **l == marker.to_string())
            .count()
            == 2
    });
    assert!(
        !lines(&log).contains(&libc::SIGCHLD.to_string()),
        "SIGCHLD was forwarded: {:?}",
        lines(&log)
    );
    init.signal(libc::SIGTERM);
    assert_eq!(init.wait().code(), Some(128 + libc::SIGTERM));
}

fn terminating_signals_end_the_app_with_128_plus_n(mode: Mode) {
    let terminating = forwarded()
        .into_iter()
        .filter(|s| ![libc::SIGWINCH, libc::SIGCONT].contains(s));
    for sig in terminating {
        // The app is `sleep` with the signal at its default (a test runner may have it
        // ignored, and an ignored disposition is inherited across exec) and no core file.
        let app = format!(
            "import os, resource, signal\n\
             resource.setrlimit(resource.RLIMIT_CORE, (0, 0))\n\
             signal.signal({sig}, signal.SIG_DFL)\n\
             os.execvp('sleep', ['sleep', '30'])\n"
        );
        let Some(mut init) = Init::quiet(mode, &["--", "python3", "-c", &app]) else {
            return;
        };
        wait_until("the app to be sleep", || {
            children(init.pid)
                .first()
                .is_some_and(|p| comm(*p).as_deref() == Some("sleep"))
        });
        init.signal(sig);
        assert_eq!(init.wait().code(), Some(128 + sig), "signal {sig}");
    }
}

/// tini's process-group test's app: it ignores `signal` and waits for a worker that does not;
/// it exits 0 when the worker died of `signal`, 1 otherwise.
fn group_app(signal: &str) -> String {
    format!(
        "import signal, subprocess, sys\n\
         signal.signal(signal.{signal}, signal.SIG_IGN)\n\
         w = subprocess.Popen(['sleep', '25'], preexec_fn=lambda: signal.signal(signal.{signal}, signal.SIG_DFL))\n\
         sys.exit(0 if w.wait() == -signal.{signal} else 1)\n"
    )
}

fn start_group_app(mode: Mode, signal: &str, by_env: bool) -> Option<Init> {
    let app = group_app(signal);
    let mut args = vec!["--drain-delay", "0s", "--stop-timeout", "30s"];
    if !by_env {
        args.push("--signal-group");
    }
    args.extend(["--", "python3", "-c", &app]);
    let mut cmd = common::command(mode, &args)?;
    if by_env {
        cmd.env("QUIESCE_SIGNAL_GROUP", "1");
    }
    cmd.stdout(std::process::Stdio::null());
    let init = Init::start(mode, cmd);
    wait_until("the worker to start", || {
        children(init.pid).first().is_some_and(|app| {
            children(*app)
                .iter()
                .any(|w| comm(*w).as_deref() == Some("sleep"))
        })
    });
    Some(init)
}

/// Only a signal to the whole group ends the worker, and with it the app.
fn group_mode_reaches_a_worker_whose_parent_ignores_the_signal(mode: Mode) {
    for by_env in [false, true] {
        let Some(mut init) = start_group_app(mode, "SIGUSR1", by_env) else {
            return;
        };
        init.signal(libc::SIGUSR1);
        assert_eq!(
            init.wait().code(),
            Some(0),
            "the worker died of SIGUSR1 (group mode by {})",
            if by_env { "environment" } else { "flag" }
        );
    }
}

/// The drain's stop signal goes to the group too: the worker stops at the end of the drain,
/// not at the SIGKILL after the stop timeout (which would end everything with 137).
fn group_mode_sends_the_stop_signal_to_the_group(mode: Mode) {
    let Some(mut init) = start_group_app(mode, "SIGTERM", false) else {
        return;
    };
    init.signal(libc::SIGTERM);
    assert_eq!(init.wait().code(), Some(0), "the worker died of SIGTERM");
}

both_modes!(
    every_signal_reaches_the_app,
    terminating_signals_end_the_app_with_128_plus_n,
    group_mode_reaches_a_worker_whose_parent_ignores_the_signal,
    group_mode_sends_the_stop_signal_to_the_group,
);
