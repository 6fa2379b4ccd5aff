//! The commands the kernel data plane runs, as kube-proxy runs them: `iptables-restore
//! --noflush` to write, `iptables-save -c` to read counters, `conntrack -L` to see connections.
//! Each one is bounded in time and killed if the lab drops it.

use std::collections::BTreeMap;
use std::net::SocketAddrV4;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use super::rules::{ServicePort, count_established, parse_sep_counters};

/// No iptables or conntrack command may hang a sync: each one is local and takes milliseconds.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

/// A command of the data plane that did not do its job.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// It could not be started.
    #[error("`{command}` could not be started: {source}")]
    Spawn {
        /// The command line.
        command: String,
        /// Why.
        source: std::io::Error,
    },
    /// It exited with a failure.
    #[error("`{command}` failed ({status}): {stderr}")]
    Failed {
        /// The command line.
        command: String,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// What it said.
        stderr: String,
    },
    /// It ran past [`COMMAND_TIMEOUT`] and was killed.
    #[error(
        "`{command}` did not finish within {}",
        humantime::format_duration(COMMAND_TIMEOUT)
    )]
    Timeout {
        /// The command line.
        command: String,
    },
    /// Writing a sysctl failed.
    #[error("writing {path}: {source}")]
    Sysctl {
        /// The /proc path.
        path: &'static str,
        /// Why.
        source: std::io::Error,
    },
}

/// Runs a data-plane command with a deadline, feeding it `input`; its stdout on success.
async fn run(program: &str, args: &[&str], input: Option<&str>) -> Result<String, CommandError> {
    let command = format!("{program} {}", args.join(" "));
    let mut child = Command::new(program)
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| CommandError::Spawn {
            command: command.clone(),
            source,
        })?;
    if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
        let written = stdin.write_all(input.as_bytes()).await;
        drop(stdin);
        if let Err(source) = written {
            return Err(CommandError::Spawn { command, source });
        }
    }
    let out = match tokio::time::timeout(COMMAND_TIMEOUT, child.wait_with_output()).await {
        Ok(Ok(out)) => out,
        Ok(Err(source)) => return Err(CommandError::Spawn { command, source }),
        Err(_) => return Err(CommandError::Timeout { command }),
    };
    if !out.status.success() {
        return Err(CommandError::Failed {
            command,
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub(super) async fn restore(input: &str) -> Result<(), CommandError> {
    // --noflush: only the chains named in the input are replaced, as kube-proxy restores.
    run("iptables-restore", &["--noflush"], Some(input))
        .await
        .map(|_| ())
}

pub(super) async fn sep_counters() -> Result<BTreeMap<String, (u64, u64)>, CommandError> {
    Ok(parse_sep_counters(
        &run("iptables-save", &["-c", "-t", "nat"], None).await?,
    ))
}

/// ESTABLISHED connections conntrack holds from a Service's virtual IP to one endpoint.
pub(super) async fn established(svc: &ServicePort, ep: SocketAddrV4) -> Result<u64, CommandError> {
    let listing = run(
        "conntrack",
        &[
            "-L",
            "-p",
            "tcp",
            "--orig-dst",
            &svc.vip.to_string(),
            "--reply-src",
            &ep.ip().to_string(),
            "--reply-port-src",
            &ep.port().to_string(),
            "--state",
            "ESTABLISHED",
        ],
        None,
    )
    .await?;
    Ok(count_established(&listing))
}
