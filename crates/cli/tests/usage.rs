//! The command line's contract with scripts: help works, and bad usage exits 2.

use std::process::Command;

fn quiesce(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_quiesce"))
        .args(args)
        .output()
        .expect("the quiesce binary runs")
}

#[test]
fn help_lists_the_subcommands() {
    let out = quiesce(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("sandbox"), "help was: {help}");
}

#[test]
fn an_unknown_flag_is_a_usage_error() {
    let out = quiesce(&["--no-such-flag"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--no-such-flag"), "stderr was: {err}");
}
