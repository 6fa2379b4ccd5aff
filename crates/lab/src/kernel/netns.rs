//! The lab's private network namespace: where the kernel data plane's rules live, apart from the
//! host's, and gone with the lab.

use std::process::Stdio;

use super::command::CommandError;

/// The sysctl kube-proxy sets so that DNAT to loopback addresses is routed (upstream
/// `sysctlRouteLocalnet` in proxier.go); in the lab every pod address is a loopback one.
const ROUTE_LOCALNET: &str = "/proc/sys/net/ipv4/conf/all/route_localnet";

/// The commands the kernel data plane runs (with the package that ships each).
const TOOLS: [(&str, &str, &str); 4] = [
    ("iptables-restore", "--version", "iptables"),
    ("iptables-save", "--version", "iptables"),
    ("conntrack", "--version", "conntrack"),
    ("ip", "-V", "iproute2"),
];

/// Why the lab cannot use the kernel data plane; it then says so and uses the userspace one.
#[derive(Debug, thiserror::Error)]
pub enum Unavailable {
    /// Network namespaces and iptables need root.
    #[error("not running as root (effective uid {0})")]
    NotRoot(u32),
    /// A command the data plane runs is not installed.
    #[error("`{tool}` is not installed (Debian package {package})")]
    Missing {
        /// The command.
        tool: &'static str,
        /// Where it comes from.
        package: &'static str,
    },
    /// The kernel refused a private network namespace.
    #[error("unshare(CLONE_NEWNET) failed: {0}")]
    Unshare(nix::Error),
    /// Setting up the namespace failed.
    #[error("{0}")]
    Setup(#[from] CommandError),
}

/// Proof that the calling thread left the host's network namespace for a private one: the
/// kernel data plane takes it, so its rules can never be written to the host's tables.
#[derive(Debug, Clone, Copy)]
pub struct PrivateNetns {
    _private: (),
}

/// Moves the calling thread into a new, private network namespace with `lo` up and
/// `route_localnet=1`, after checking that it runs as root and that iptables, conntrack and
/// iproute2 are installed.
///
/// `unshare(CLONE_NEWNET)` moves only the calling thread; every thread it starts afterwards (the
/// async runtime's workers, the commands the proxier runs) inherits the namespace. So call it
/// before the runtime starts — `quiesce lab` does so first thing. Done in-process rather than
/// by re-executing under `unshare -n`: one process, no re-exec, and a test thread can take a
/// namespace of its own. The namespace is anonymous and held only by the lab's threads and
/// children, so the kernel removes it, with every rule and conntrack entry in it, when the lab
/// exits by any route — normal exit, SIGINT, a panic, even SIGKILL: nothing is left behind and
/// nothing is named in `/run/netns` for a second run to trip over.
pub fn enter_private_netns() -> Result<PrivateNetns, Unavailable> {
    let euid = nix::unistd::geteuid();
    if !euid.is_root() {
        return Err(Unavailable::NotRoot(euid.as_raw()));
    }
    for (tool, arg, package) in TOOLS {
        match std::process::Command::new(tool)
            .arg(arg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
        {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Unavailable::Missing { tool, package });
            }
            Err(source) => {
                return Err(CommandError::Spawn {
                    command: format!("{tool} {arg}"),
                    source,
                }
                .into());
            }
            Ok(_) => {}
        }
    }
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).map_err(Unavailable::Unshare)?;
    let out = std::process::Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .output()
        .map_err(|source| CommandError::Spawn {
            command: "ip link set lo up".into(),
            source,
        })?;
    if !out.status.success() {
        return Err(CommandError::Failed {
            command: "ip link set lo up".into(),
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        }
        .into());
    }
    // /proc/sys/net shows the namespace of the thread that opens it: this one's, now.
    std::fs::write(ROUTE_LOCALNET, "1").map_err(|source| CommandError::Sysctl {
        path: ROUTE_LOCALNET,
        source,
    })?;
    Ok(PrivateNetns { _private: () })
}
