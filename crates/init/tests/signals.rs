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

/// tini's process-group test: the app ignores SIGUSR1 and waits for a worker that does not;
/// only a signal to the whole group ends the worker, and with it the app.
fn group_mode_reaches_a_worker_whose_parent_ignores_the_signal(mode: Mode) {
    let app = "import signal, subprocess, sys\n\
               signal.signal(signal.SIGUSR1, signal.SIG_IGN)\n\
               w = subprocess.Popen(['sleep', '25'], preexec_fn=lambda: signal.signal(signal.SIGUSR1, signal.SIG_DFL))\n\
               sys.exit(0 if w.wait() == -signal.SIGUSR1 else 1)\n";
    for by_env in [false, true] {
        let mut args = vec!["--drain-delay", "0s"];
        if !by_env {
            args.push("--signal-group");
        }
        args.extend(["--", "python3", "-c", app]);
        let Some(mut cmd) = common::command(mode, &args) else {
            return;
        };
        if by_env {
            cmd.env("QUIESCE_SIGNAL_GROUP", "1");
        }
        cmd.stdout(std::process::Stdio::null());
        let mut init = Init::start(mode, cmd);
        wait_until("the worker to start", || {
            children(init.pid).first().is_some_and(|app| {
                children(*app)
                    .iter()
                    .any(|w| comm(*w).as_deref() == Some("sleep"))
            })
        });
        init.signal(libc::SIGUSR1);
        assert_eq!(
            init.wait().code(),
            Some(0),
            "the worker died of SIGUSR1 (group mode by {})",
            if by_env { "environment" } else { "flag" }
        );
    }
}

/// In group mode the stop signal after the drain goes to the group too: `sh -c 'app; …'`
/// does not exec, and its `app` must stop as well.
fn group_mode_stops_a_shell_and_its_child(mode: Mode) {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let worker = dir.path().join("worker.sh");
    // Bounded, so a failing run leaves nothing behind for long.
    std::fs::write(
        &worker,
        format!(
            "trap 'echo TERM >> {0}; exit 0' TERM\necho up >> {0}\nfor i in $(seq 400); do sleep 0.05; done\n",
            log.display()
        ),
    )
    .unwrap();
    let script = format!("sh {}; echo never", worker.display());
    let Some(mut init) = Init::quiet(
        mode,
        &[
            "--drain-delay",
            "0s",
            "--signal-group",
            "--",
            "sh",
            "-c",
            &script,
        ],
    ) else {
        return;
    };
    wait_until("the worker", || lines(&log).contains(&"up".into()));
    init.signal(libc::SIGTERM);
    wait_until("the stop signal to reach the shell's child", || {
        lines(&log).contains(&"TERM".into())
    });
    assert_eq!(
        init.wait().code(),
        Some(128 + libc::SIGTERM),
        "sh died of SIGTERM"
    );
}

both_modes!(
    every_signal_reaches_the_app,
    terminating_signals_end_the_app_with_128_plus_n,
    group_mode_reaches_a_worker_whose_parent_ignores_the_signal,
    group_mode_stops_a_shell_and_its_child,
);
