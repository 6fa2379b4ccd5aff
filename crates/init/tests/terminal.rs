//! Terminal handling, as `docker run -it` or `kubectl exec -it` set it up: the app leads its
//! own process group and must be the terminal's foreground group (or its reads stop it with
//! SIGTTIN), while quiesce-init ignores SIGTTIN/SIGTTOU (it is in the background then) and the
//! app gets them back at their defaults.

mod common;

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{BIN, DEADLINE, Init, Mode, children, comm, has, sigset, wait_until};
use nix::libc::{SIGTERM, SIGTTIN, SIGTTOU};

#[test]
fn tty_stop_signals_are_ignored_by_quiesce_init_and_restored_for_the_app() {
    let mut init = Init::quiet(
        Mode::Subreaper,
        &["--drain-delay", "0s", "--", "sleep", "30"],
    )
    .unwrap();
    let mut app = 0;
    wait_until("the app to be sleep", || {
        app = children(init.pid).first().copied().unwrap_or(0);
        app != 0 && comm(app).as_deref() == Some("sleep")
    });
    let (ignored, blocked) = (sigset(init.pid, "SigIgn"), sigset(init.pid, "SigBlk"));
    for sig in [SIGTTIN, SIGTTOU] {
        assert!(has(ignored, sig), "quiesce-init ignores {sig}");
        assert!(!has(blocked, sig), "quiesce-init does not block {sig}");
        assert!(
            !has(sigset(app, "SigIgn"), sig),
            "the app gets {sig} at its default"
        );
    }
    assert_eq!(
        sigset(app, "SigBlk"),
        0,
        "the app starts with no signal blocked"
    );
    init.signal(SIGTERM);
    assert_eq!(init.wait().code(), Some(143));
}

/// Runs `command` (a shell command line) under a pseudo-terminal made by `script`, as
/// `docker run -it` makes one, typing `input`; its output, or a panic if it hangs.
fn in_pty(command: &str, input: &[u8]) -> String {
    let mut script = Command::new("script")
        .args(["-q", "-e", "-c", command, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("script(1) from util-linux");
    script.stdin.take().unwrap().write_all(input).unwrap();
    let mut out = script.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = out.read_to_string(&mut text);
        text
    });
    let deadline = Instant::now() + DEADLINE;
    let status = loop {
        if let Some(s) = script.try_wait().unwrap() {
            break Some(s);
        }
        if Instant::now() > deadline {
            // A background app stopped on SIGTTIN never exits: end the session.
            let _ = script.kill();
            let _ = script.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let text = reader.join().unwrap();
    let status = status.unwrap_or_else(|| panic!("the session hung:\n{text}"));
    assert!(status.success(), "{status:?}:\n{text}");
    text
}

/// The numbers on the first line of `text` that starts with `tag`.
fn numbers(text: &str, tag: &str) -> Vec<i64> {
    text.lines()
        .find(|l| l.starts_with(tag))
        .unwrap_or_else(|| panic!("no {tag} line in:\n{text}"))
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect()
}

/// Under a pseudo-terminal the app reads from the terminal: it can only if it is the
/// foreground process group.
#[test]
fn the_app_is_the_terminals_foreground_process_group() {
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("app.sh");
    std::fs::write(
        &app,
        "python3 -c 'import os; print(\"pgrp\", os.getpgrp(), \"foreground\", os.tcgetpgrp(0))'\n\
         read line; echo \"read:$line\"\n",
    )
    .unwrap();
    let text = in_pty(
        &format!("{BIN} --drain-delay 0s -- sh {}", app.display()),
        b"typed\n",
    );
    let ids = numbers(&text, "pgrp");
    assert_eq!(ids[0], ids[1], "the app's group is the foreground: {text}");
    assert!(
        text.contains("read:typed"),
        "the app read the terminal:\n{text}"
    );
}

/// Started in the background of a terminal session, quiesce-init does not take the terminal
/// away from the session's foreground job.
#[test]
fn in_the_background_the_terminal_is_not_taken() {
    let session = format!(
        "import os, subprocess\n\
         app = 'import os; print(\"app\", os.getpgrp(), os.tcgetpgrp(0), flush=True)'\n\
         p = subprocess.Popen([{BIN:?}, '--drain-delay', '0s', '--', 'python3', '-c', app], preexec_fn=lambda: os.setpgid(0, 0))\n\
         p.wait()\n\
         print('session', os.getpgrp(), os.tcgetpgrp(0))\n"
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("session.py");
    std::fs::write(&file, session).unwrap();
    let text = in_pty(&format!("python3 {}", file.display()), b"");
    let app = numbers(&text, "app");
    let session = numbers(&text, "session");
    assert_eq!(
        app[1], session[0],
        "the session kept the foreground: {text}"
    );
    assert_ne!(app[0], app[1], "the app is in the background: {text}");
    assert_eq!(session[0], session[1], "{text}");
}
