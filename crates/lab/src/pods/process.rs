//! One container as an OS process: its first process started in a PID namespace of its own
//! (as root, through util-linux `unshare --pid --fork`, so that process really is PID 1, as in
//! a container), signalled and waited for as the kubelet's runtime does, and never outliving
//! the lab: its process group is killed on drop, and `PR_SET_PDEATHSIG` kills it if the lab
//! dies without dropping anything (SIGKILL, abort).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// How a container's first process is isolated: decided once per run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind", content = "why")]
pub enum Isolation {
    /// A PID namespace per container: its first process is PID 1 there (root only).
    PidNamespace,
    /// No namespace: the first process is the lab's child, and quiesce-init makes itself a
    /// child subreaper to reap orphans as PID 1 would. Carries the reason.
    Subreaper(String),
}

impl Isolation {
    /// A PID namespace when running as root and `unshare --pid --fork` works here, else the
    /// subreaper fallback and why.
    pub async fn detect() -> Isolation {
        let euid = nix::unistd::geteuid();
        if !euid.is_root() {
            return Isolation::Subreaper(format!("not running as root (effective uid {euid})"));
        }
        let trial = Command::new("unshare")
            .args(["--pid", "--fork", "--kill-child", "--", "true"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .status();
        match tokio::time::timeout(Duration::from_secs(5), trial).await {
            Ok(Ok(s)) if s.success() => Isolation::PidNamespace,
            Ok(Ok(s)) => Isolation::Subreaper(format!("`unshare --pid --fork true` failed: {s}")),
            Ok(Err(e)) => Isolation::Subreaper(format!("cannot run `unshare` (util-linux): {e}")),
            Err(_) => Isolation::Subreaper("`unshare --pid --fork true` hung for 5s".into()),
        }
    }
}

/// Why a container could not start.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// The process could not be spawned.
    #[error("cannot start {program}: {source}")]
    Spawn {
        /// What was run.
        program: String,
        /// Why not.
        source: std::io::Error,
    },
    /// `unshare` started but its child (the namespace's PID 1) never showed up.
    #[error("the PID namespace's first process did not appear within 5s under pid {0}")]
    NoPid1(u32),
}

/// What a process is run with: the resolved command, its environment, and `unshare` or not.
#[derive(Debug, Clone)]
pub struct Exec {
    /// Program and arguments.
    pub argv: Vec<String>,
    /// The whole environment (nothing of the lab's own is inherited, as in a container).
    pub env: BTreeMap<String, String>,
}

impl Exec {
    /// The command, in a PID namespace of its own when `pid_namespace`.
    fn command(&self, pid_namespace: bool) -> Command {
        let mut argv: Vec<&str> = Vec::new();
        if pid_namespace {
            argv.extend(["unshare", "--pid", "--fork", "--kill-child", "--"]);
        }
        argv.extend(self.argv.iter().map(String::as_str));
        let mut cmd = Command::new(argv[0]);
        cmd.args(&argv[1..])
            .env_clear()
            .envs(&self.env)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .process_group(0);
        die_with_parent(&mut cmd);
        cmd
    }

    /// Starts it, with stdout and stderr each made by `output` (piped or null).
    fn spawn(&self, pid_namespace: bool, output: fn() -> Stdio) -> Result<Child, ProcessError> {
        self.command(pid_namespace)
            .stdout(output())
            .stderr(output())
            .spawn()
            .map_err(|source| ProcessError::Spawn {
                program: self.argv.join(" "),
                source,
            })
    }
}

/// Has the kernel SIGKILL the process when the thread that spawned it exits — with the lab's
/// runtime threads, which end when the lab does, however it ends.
#[allow(unsafe_code)]
fn die_with_parent(cmd: &mut Command) {
    // SAFETY: the closure runs in the forked child before exec and only calls prctl, which is
    // async-signal-safe, touching no memory shared with the parent.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)
        });
    }
}

/// The container's first process as the process table shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Pid1 {
    /// Its pid in the lab's PID namespace.
    pub host_pid: u32,
    /// Its pid in its own namespace (`NSpid` in /proc): 1 in a PID namespace.
    pub ns_pid: Option<u32>,
    /// Its command line.
    pub cmdline: String,
}

impl Pid1 {
    fn read(pid: u32) -> Pid1 {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let ns_pid = status
            .lines()
            .find_map(|l| l.strip_prefix("NSpid:"))
            .and_then(|ids| ids.split_whitespace().last())
            .and_then(|id| id.parse().ok());
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|raw| {
                raw.split(|b| *b == 0)
                    .filter(|a| !a.is_empty())
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default();
        Pid1 {
            host_pid: pid,
            ns_pid,
            cmdline,
        }
    }
}

/// A running container. Dropping it kills its process group (and with its PID 1, a PID
/// namespace's every process).
#[derive(Debug)]
pub struct Container {
    child: Child,
    pid1: Pid1,
    group: Pid,
    exited: Option<ExitStatus>,
}

impl Drop for Container {
    fn drop(&mut self) {
        if self.exited.is_none() {
            let _ = killpg(self.group, Signal::SIGKILL);
        }
    }
}

/// How long a started container has to print where it listens.
const STARTUP: Duration = Duration::from_secs(10);

impl Container {
    /// Starts the container; returns it with the first line its stdout printed that starts
    /// with `marker` (where the app listens), and its stderr lines on `logs` (at most
    /// `max_logs`, the rest are read and dropped so the pipe never fills).
    pub async fn start(
        exec: &Exec,
        isolation: &Isolation,
        marker: &'static str,
        logs: mpsc::UnboundedSender<String>,
        max_logs: usize,
    ) -> Result<(Container, Option<String>), ProcessError> {
        let mut child = exec.spawn(*isolation == Isolation::PidNamespace, Stdio::piped)?;
        let pid = child.id().unwrap_or_default();
        let group = Pid::from_raw(pid as i32);
        let (found_tx, found) = oneshot::channel();
        if let Some(out) = child.stdout.take() {
            tokio::spawn(async move {
                let mut found_tx = Some(found_tx);
                let mut lines = BufReader::new(out).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if let Some(rest) = line.strip_prefix(marker)
                        && let Some(tx) = found_tx.take()
                    {
                        let _ = tx.send(rest.trim().to_string());
                    }
                }
            });
        }
        if let Some(err) = child.stderr.take() {
            tokio::spawn(async move {
                let mut lines = BufReader::new(err).lines();
                let mut n = 0;
                while let Ok(Some(line)) = lines.next_line().await {
                    n += 1;
                    if n <= max_logs {
                        let _ = logs.send(line);
                    }
                }
            });
        }
        let mut container = Container {
            child,
            pid1: Pid1::read(pid),
            group,
            exited: None,
        };
        if *isolation == Isolation::PidNamespace {
            let pid1 = container.namespace_pid1(pid).await?;
            container.pid1 = Pid1::read(pid1);
        }
        let listening = tokio::select! {
            l = found => l.ok(),
            _ = container.child.wait() => None,
            () = tokio::time::sleep(STARTUP) => None,
        };
        // Read again: the first read may have come before `unshare` exec'd its child.
        container.pid1 = Pid1::read(container.pid1.host_pid);
        Ok((container, listening))
    }

    /// `unshare --fork`'s child: the namespace's PID 1, in the lab's pid numbering.
    async fn namespace_pid1(&self, unshare: u32) -> Result<u32, ProcessError> {
        let path = PathBuf::from(format!("/proc/{unshare}/task/{unshare}/children"));
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let children = std::fs::read_to_string(&path).unwrap_or_default();
            if let Some(pid) = children
                .split_whitespace()
                .next()
                .and_then(|p| p.parse().ok())
            {
                return Ok(pid);
            }
            if Instant::now() >= deadline {
                return Err(ProcessError::NoPid1(unshare));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// The container's first process.
    pub fn pid1(&self) -> &Pid1 {
        &self.pid1
    }

    /// Sends `signal` to the container's PID 1 (SIGTERM, as the runtime's stop does); false
    /// when it had already exited (nothing was sent).
    pub fn signal(&mut self, signal: Signal) -> bool {
        if let Ok(Some(status)) = self.child.try_wait() {
            self.exited = Some(status);
        }
        self.exited.is_none() && kill(Pid::from_raw(self.pid1.host_pid as i32), signal).is_ok()
    }

    /// Kills the whole container at once (SIGKILL to its process group).
    pub fn kill(&self) {
        if self.exited.is_none() {
            let _ = killpg(self.group, Signal::SIGKILL);
        }
    }

    /// Waits for the container to exit (cancel-safe).
    pub async fn wait(&mut self) -> ExitStatus {
        if let Some(s) = self.exited {
            return s;
        }
        let status = match self.child.wait().await {
            Ok(s) => s,
            // Only if it was already reaped elsewhere: report it as killed.
            Err(_) => std::os::unix::process::ExitStatusExt::from_raw(9),
        };
        self.exited = Some(status);
        status
    }
}

/// Runs an exec hook to completion or until `deadline` (then it is killed): its exit status,
/// or None when it ran out of time. It runs beside the container's processes, not in their
/// PID namespace (`quiesce-init prestop` only needs the control socket's path).
pub async fn run_hook(exec: &Exec, deadline: Instant) -> Result<Option<ExitStatus>, ProcessError> {
    let mut child = exec.spawn(false, Stdio::null)?;
    Ok(tokio::time::timeout_at(deadline, child.wait())
        .await
        .ok()
        .and_then(Result::ok))
}

/// `exit 0`, `signal 9 (SIGKILL)`: how the report shows an exit status.
pub fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit {code}"),
        (None, Some(sig)) => match Signal::try_from(sig) {
            Ok(s) => format!("signal {sig} ({s})"),
            Err(_) => format!("signal {sig}"),
        },
        _ => status.to_string(),
    }
}
