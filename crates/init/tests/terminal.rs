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

/// Under a pseudo-terminal (`script` makes one, as `docker run -it` does), the app reads from
/// the terminal: it can only if it is the foreground process group.
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
    let inner = format!("{BIN} --drain-delay 0s -- sh {}", app.display());
    let mut script = Command::new("script")
        .args(["-q", "-e", "-c", &inner, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("script(1) from util-linux");
    script.stdin.take().unwrap().write_all(b"typed\n").unwrap();
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
    let status = status.unwrap_or_else(|| panic!("the app hung reading the terminal:\n{text}"));
    assert!(status.success(), "{status:?}:\n{text}");
    let words: Vec<&str> = text
        .lines()
        .find(|l| l.starts_with("pgrp"))
        .unwrap_or_else(|| panic!("no pgrp line in:\n{text}"))
        .split_whitespace()
        .collect();
    assert_eq!(
        words[1], words[3],
        "the app's group is the foreground: {text}"
    );
    assert!(
        text.contains("read:typed"),
        "the app read the terminal:\n{text}"
    );
}
