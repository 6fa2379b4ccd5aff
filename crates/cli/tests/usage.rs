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

/// The Helm chart passes flags and environment variables to `quiesce drainer`; a renamed
/// flag would crash-loop every install. Each one must be in the drainer's help.
#[test]
fn the_charts_drainer_flags_and_env_exist() {
    let out = quiesce(&["drainer", "--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout).to_string();
    let template = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../deploy/helm/quiesce/templates/deployment.yaml"),
    )
    .expect("the chart's Deployment");
    let mut checked = 0;
    for line in template.lines().map(str::trim) {
        if let Some(flag) = line.strip_prefix("- --") {
            let name = flag.split(['=', ' ']).next().unwrap();
            assert!(
                help.contains(&format!("--{name}")),
                "the chart passes --{name}, which quiesce drainer does not know"
            );
            checked += 1;
        }
        if let Some(var) = line.strip_prefix("- name: QUIESCE_") {
            assert!(
                help.contains(&format!("QUIESCE_{var}")),
                "the chart sets QUIESCE_{var}, which quiesce drainer does not read"
            );
            checked += 1;
        }
    }
    assert!(
        checked >= 10,
        "found {checked} flags and variables in the chart"
    );
}

/// Images and bug reports name a build by `quiesce --version`: the release and the commit it
/// was built from (the image's revision label carries the same commit).
#[test]
fn version_names_the_release_and_the_commit() {
    let out = quiesce(&["--version"]);
    assert!(out.status.success());
    let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let head = Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("git runs");
    assert!(head.status.success(), "the tests run in a git checkout");
    let head = String::from_utf8_lossy(&head.stdout).trim().to_string();
    assert_eq!(
        line,
        format!("quiesce {} (commit {head})", env!("CARGO_PKG_VERSION"))
    );
}

/// The help paragraph of `--flag` (its line and description up to the next option).
fn flag_help(help: &str, flag: &str) -> Option<String> {
    let mut lines = help.lines().skip_while(|l| {
        !l.trim_start()
            .split([' ', ','])
            .any(|w| w == format!("--{flag}"))
    });
    let first = lines.next()?;
    let rest: Vec<&str> = lines
        .take_while(|l| !l.trim_start().starts_with('-'))
        .collect();
    Some(format!("{first}\n{}", rest.join("\n")))
}

/// `quiesce drain` and `quiesce drainer` (and, through the same definition, the Lambda's
/// variables) take the same drain switches, word for word, with the same variables.
#[test]
fn drain_and_drainer_take_the_same_drain_switches() {
    let help = |cmd: &str| {
        let out = quiesce(&[cmd, "--help"]);
        assert!(out.status.success(), "{cmd} --help");
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let (drain, drainer) = (help("drain"), help("drainer"));
    for (flag, var) in [
        ("force", "QUIESCE_FORCE"),
        ("surge", "QUIESCE_SURGE"),
        ("taint", "QUIESCE_TAINT"),
        (
            "exclude-from-load-balancers",
            "QUIESCE_EXCLUDE_FROM_LOAD_BALANCERS",
        ),
        ("keep-in-load-balancers", "QUIESCE_KEEP_IN_LOAD_BALANCERS"),
    ] {
        let in_drain = flag_help(&drain, flag)
            .unwrap_or_else(|| panic!("quiesce drain has no --{flag}:\n{drain}"));
        let in_drainer = flag_help(&drainer, flag)
            .unwrap_or_else(|| panic!("quiesce drainer has no --{flag}:\n{drainer}"));
        assert_eq!(in_drain, in_drainer, "--{flag} differs");
        assert!(
            in_drain.contains(var),
            "--{flag} reads no {var}: {in_drain}"
        );
    }
}

/// A switch's variable takes a boolean word; anything else is a usage error naming the flag.
#[test]
fn a_switch_variable_that_is_not_a_boolean_is_a_usage_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_quiesce"))
        .args(["drain", "node-1"])
        .env("QUIESCE_FORCE", "sometimes")
        .output()
        .expect("the quiesce binary runs");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("sometimes") && err.contains("--force"),
        "stderr was: {err}"
    );
}

/// The SAM template sets the Lambda's environment; its drain settings are `quiesce drainer`'s
/// flags read from the same variables, so every variable it sets is one the drainer's help
/// names, or one of the few only the Lambda reads (its EKS endpoint and its log filter).
#[test]
fn the_sam_templates_variables_are_the_drainers() {
    const LAMBDA_ONLY: [&str; 3] = ["QUIESCE_API_SERVER", "QUIESCE_CA_DATA", "QUIESCE_LOG"];
    let out = quiesce(&["drainer", "--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout).to_string();
    let template = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/sam/template.yaml"),
    )
    .expect("the SAM template");
    let mut checked = 0;
    for line in template.lines().map(str::trim) {
        let Some((var, _)) = line.split_once(':') else {
            continue;
        };
        if !var.starts_with("QUIESCE_") || LAMBDA_ONLY.contains(&var) {
            continue;
        }
        assert!(
            help.contains(&format!("[env: {var}=")),
            "the SAM template sets {var}, which quiesce drainer (and so the Lambda) does not read"
        );
        checked += 1;
    }
    assert!(
        checked >= 8,
        "found {checked} drain settings in the template"
    );
}
