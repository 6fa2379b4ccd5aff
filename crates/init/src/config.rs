//! Options from flags, each also from an environment variable so a pod spec can configure
//! quiesce-init without changing the image's command. Flags win over the environment.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use nix::sys::signal::Signal;

/// Everything `quiesce-init [OPTIONS] -- CMD [ARGS...]` is told.
#[derive(Debug, Clone)]
pub struct Config {
    /// How long everything keeps running after the trigger, so endpoint removal propagates.
    pub drain_delay: Duration,
    /// How long the app gets after the stop signal before SIGKILL.
    pub stop_timeout: Duration,
    /// The signal that starts the drain (SIGTERM, as the kubelet sends).
    pub trigger: Signal,
    /// The signal the app gets when the delay is over.
    pub stop_signal: Signal,
    /// Signal the app's whole process group, not only its pid: a shell that does not `exec`
    /// or workers that outlive their parent get the stop signal too.
    pub signal_group: bool,
    /// End the drain when traffic has stopped instead of after the fixed delay (which is then
    /// the maximum).
    pub quiet: Option<Quiet>,
    /// Where to answer readiness (200 before the drain, 503 from its first instant).
    pub ready_addr: Option<SocketAddr>,
    /// The app's own readiness URL, reported until the drain starts.
    pub ready_upstream: Option<String>,
    /// A file that exists while ready.
    pub ready_file: Option<PathBuf>,
    /// A URL called when the drain starts (e.g. a Eureka deregistration).
    pub on_drain: Option<String>,
    /// How long the on-drain call may take.
    pub on_drain_timeout: Duration,
    /// The Unix socket `quiesce-init prestop` talks to.
    pub control_socket: PathBuf,
    /// The command to supervise.
    pub command: Vec<String>,
}

/// How drain-until-quiet decides that traffic has stopped.
#[derive(Debug, Clone, PartialEq)]
pub struct Quiet {
    /// No new inbound connection for this long ends the drain.
    pub period: Duration,
    /// The drain lasts at least this long, however quiet.
    pub min: Duration,
    /// Which local ports receive traffic.
    pub ports: Ports,
    /// Connections from these addresses are not traffic (the kubelet probes from the node).
    pub ignore_from: Vec<IpAddr>,
}

/// The ports whose new connections count as traffic.
#[derive(Debug, Clone, PartialEq)]
pub enum Ports {
    /// Every port listening in the pod's network namespace except the readiness endpoint.
    Listening,
    /// Only these.
    Listed(Vec<u16>),
}

/// The inbound listener of a mesh sidecar: under a mesh every request reaches the app over
/// loopback from the sidecar's connection pool, so new connections are counted where clients
/// arrive. Istio's inbound capture port (`15006`, see istio.io "Application Requirements",
/// ports used by Istio) and Linkerd's inbound proxy port (`4143`, linkerd.io "Ports").
const MESH_PORTS: [(&str, u16); 2] = [("istio", 15006), ("linkerd", 4143)];

/// Options of `quiesce-init prestop`.
#[derive(Debug, Clone)]
pub struct Prestop {
    /// Give up waiting for PID 1 after this long.
    pub timeout: Duration,
    /// Only sleep this long (no PID 1 involved).
    pub sleep: Option<Duration>,
    /// The control socket.
    pub control_socket: PathBuf,
}

/// What was asked for.
#[derive(Debug)]
pub enum Invocation {
    /// Supervise a command.
    Run(Box<Config>),
    /// The preStop handshake.
    Prestop(Prestop),
    /// `--help`.
    Help,
    /// `--version`.
    Version,
}

/// The default control socket: in /tmp, which every image has (writable emptyDir or not).
pub const DEFAULT_SOCKET: &str = "/tmp/quiesce-init.sock";

/// The help text.
pub const HELP: &str = "\
quiesce-init: PID 1 for containers that must stop without dropping requests.

USAGE:
    quiesce-init [OPTIONS] -- CMD [ARGS...]
    quiesce-init prestop [--timeout DUR] [--socket PATH]
    quiesce-init prestop --sleep DUR

On the trigger signal (SIGTERM) readiness goes false at once, the on-drain URL is called,
everything keeps running for the drain delay, then the app gets the stop signal and, after
the stop timeout, SIGKILL. A second trigger or a SIGINT skips what is left of the delay.
Other signals are forwarded to the app; orphaned processes are reaped. A command that does
not exist exits 127, one that cannot be executed 126.

OPTIONS (each also from the environment variable shown):
    --drain-delay DUR        keep serving after the trigger [QUIESCE_DRAIN_DELAY, default 5s]
    --stop-timeout DUR       SIGKILL this long after the stop signal [QUIESCE_STOP_TIMEOUT, default 10s]
    --trigger SIG            signal that starts the drain [QUIESCE_TRIGGER, default SIGTERM]
    --stop-signal SIG        signal sent to the app after the delay [QUIESCE_STOP_SIGNAL, default SIGTERM]
    --ready-addr ADDR        serve readiness on ADDR (200/503) [QUIESCE_READY_ADDR]
    --ready-upstream URL     report this http:// URL's readiness until the drain [QUIESCE_READY_UPSTREAM]
    --ready-file PATH        a file that exists while ready [QUIESCE_READY_FILE]
    --on-drain URL           POST to this http:// URL when the drain starts [QUIESCE_ON_DRAIN]
    --on-drain-timeout DUR   [QUIESCE_ON_DRAIN_TIMEOUT, default 5s]
    --signal-group           signal the app's whole process group, not only its pid
                             [QUIESCE_SIGNAL_GROUP=1]
    --drain-until-quiet DUR  end the drain once no new connection has reached the app for DUR;
                             --drain-delay is then the maximum [QUIESCE_DRAIN_QUIET]
    --drain-min DUR          drain at least this long [QUIESCE_DRAIN_MIN, default 1s]
    --drain-ports LIST       ports whose connections count as traffic: numbers, or istio
                             (15006) / linkerd (4143) for a mesh sidecar's inbound listener
                             [QUIESCE_DRAIN_PORTS, default every listening port but readiness]
    --drain-ignore-from IPS  connections from these addresses are not traffic, e.g. the
                             node's (status.hostIP) for the kubelet's probes
                             [QUIESCE_DRAIN_IGNORE_FROM]
    --control-socket PATH    socket for `prestop` [QUIESCE_CONTROL_SOCKET, default /tmp/quiesce-init.sock]
    -h, --help               this text
    -V, --version            the version

Durations: 500ms, 30s, 2m, 1h30m. terminationGracePeriodSeconds must cover
drain delay (the maximum, with --drain-until-quiet) + stop timeout + a margin.
";

/// A bad command line: the message names the input and what was expected.
#[derive(Debug, PartialEq)]
pub struct UsageError(pub String);

fn duration(name: &str, value: &str) -> Result<Duration, UsageError> {
    humantime::parse_duration(value).map_err(|e| {
        UsageError(format!(
            "{name}: expected a duration such as 30s or 2m, got {value:?} ({e})"
        ))
    })
}

fn signal(name: &str, value: &str) -> Result<Signal, UsageError> {
    let upper = value.to_ascii_uppercase();
    let full = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    full.parse::<Signal>()
        .ok()
        .filter(|s| !matches!(s, Signal::SIGKILL | Signal::SIGSTOP | Signal::SIGCHLD))
        .ok_or_else(|| {
            UsageError(format!(
                "{name}: expected a catchable signal such as SIGTERM or QUIT, got {value:?}"
            ))
        })
}

fn boolean(name: &str, value: &str) -> Result<bool, UsageError> {
    match value.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" => Ok(true),
        "0" | "false" | "no" | "" => Ok(false),
        _ => Err(UsageError(format!(
            "{name}: expected 1, true, 0 or false, got {value:?}"
        ))),
    }
}

fn ports(name: &str, value: &str) -> Result<Ports, UsageError> {
    let listed = value
        .split(',')
        .map(str::trim)
        .map(|p| {
            MESH_PORTS
                .iter()
                .find(|(mesh, _)| mesh.eq_ignore_ascii_case(p))
                .map(|(_, port)| *port)
                .or_else(|| p.parse().ok().filter(|n| *n != 0))
                .ok_or_else(|| {
                    UsageError(format!(
                        "{name}: expected ports such as 8080,9090 or a mesh (istio, linkerd), got {p:?} in {value:?}"
                    ))
                })
        })
        .collect::<Result<Vec<u16>, _>>()?;
    Ok(Ports::Listed(listed))
}

fn addresses(name: &str, value: &str) -> Result<Vec<IpAddr>, UsageError> {
    value
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(|a| {
            a.parse().map_err(|_| {
                UsageError(format!(
                    "{name}: expected IP addresses such as 10.0.3.17, got {a:?} in {value:?}"
                ))
            })
        })
        .collect()
}

fn http_url(name: &str, value: &str) -> Result<String, UsageError> {
    if value.starts_with("http://") {
        Ok(value.to_string())
    } else {
        Err(UsageError(format!(
            "{name}: expected an http:// URL (TLS is not supported), got {value:?}"
        )))
    }
}

/// Reads the command line (`args` without the program name) and the environment (`env`).
pub fn parse(
    args: &[String],
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Invocation, UsageError> {
    if args.first().map(String::as_str) == Some("prestop") {
        return parse_prestop(&args[1..], env);
    }
    let mut flags: Vec<(String, String)> = Vec::new();
    let mut command = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        match arg.as_str() {
            "--" => {
                command = args[i + 1..].to_vec();
                break;
            }
            "-h" | "--help" => return Ok(Invocation::Help),
            "--signal-group" => flags.push((arg.clone(), "true".into())),
            "-V" | "--version" => return Ok(Invocation::Version),
            _ if arg.starts_with("--") => {
                let (name, value) = match arg.split_once('=') {
                    Some((n, v)) => (n.to_string(), v.to_string()),
                    None => {
                        i += 1;
                        let v = args
                            .get(i)
                            .ok_or_else(|| UsageError(format!("{arg}: expected a value")))?;
                        (arg.clone(), v.clone())
                    }
                };
                flags.push((name, value));
            }
            _ => {
                return Err(UsageError(format!(
                    "unexpected argument {arg:?}: put the command after --, as in quiesce-init -- {arg}"
                )));
            }
        }
        i += 1;
    }
    let get = |flag: &str, var: &str| -> Option<String> {
        flags
            .iter()
            .rev()
            .find(|(n, _)| n == flag)
            .map(|(_, v)| v.clone())
            .or_else(|| env(var))
    };
    const KNOWN: [&str; 15] = [
        "--drain-delay",
        "--stop-timeout",
        "--trigger",
        "--stop-signal",
        "--ready-addr",
        "--ready-upstream",
        "--ready-file",
        "--on-drain",
        "--on-drain-timeout",
        "--control-socket",
        "--signal-group",
        "--drain-until-quiet",
        "--drain-min",
        "--drain-ports",
        "--drain-ignore-from",
    ];
    if let Some((unknown, _)) = flags.iter().find(|(n, _)| !KNOWN.contains(&n.as_str())) {
        return Err(UsageError(format!(
            "unknown option {unknown}; see quiesce-init --help"
        )));
    }
    if command.is_empty() {
        return Err(UsageError(
            "no command: expected quiesce-init [OPTIONS] -- CMD [ARGS...]".into(),
        ));
    }
    let opt_duration = |flag: &str, var: &str, default: Duration| -> Result<Duration, UsageError> {
        get(flag, var).map_or(Ok(default), |v| duration(flag, &v))
    };
    let ready_addr = match get("--ready-addr", "QUIESCE_READY_ADDR") {
        Some(v) => Some(v.parse().map_err(|_| {
            UsageError(format!(
                "--ready-addr: expected an address such as 0.0.0.0:8086, got {v:?}"
            ))
        })?),
        None => None,
    };
    // Checked even without --drain-until-quiet, so a typo shows before it is needed.
    let min = opt_duration("--drain-min", "QUIESCE_DRAIN_MIN", Duration::from_secs(1))?;
    let traffic_ports = get("--drain-ports", "QUIESCE_DRAIN_PORTS")
        .map_or(Ok(Ports::Listening), |v| ports("--drain-ports", &v))?;
    let ignore_from = get("--drain-ignore-from", "QUIESCE_DRAIN_IGNORE_FROM")
        .map_or(Ok(Vec::new()), |v| addresses("--drain-ignore-from", &v))?;
    let quiet = match get("--drain-until-quiet", "QUIESCE_DRAIN_QUIET") {
        Some(v) => Some(Quiet {
            period: duration("--drain-until-quiet", &v)?,
            min,
            ports: traffic_ports,
            ignore_from,
        }),
        None => None,
    };
    Ok(Invocation::Run(Box::new(Config {
        drain_delay: opt_duration(
            "--drain-delay",
            "QUIESCE_DRAIN_DELAY",
            Duration::from_secs(5),
        )?,
        stop_timeout: opt_duration(
            "--stop-timeout",
            "QUIESCE_STOP_TIMEOUT",
            Duration::from_secs(10),
        )?,
        trigger: get("--trigger", "QUIESCE_TRIGGER")
            .map_or(Ok(Signal::SIGTERM), |v| signal("--trigger", &v))?,
        stop_signal: get("--stop-signal", "QUIESCE_STOP_SIGNAL")
            .map_or(Ok(Signal::SIGTERM), |v| signal("--stop-signal", &v))?,
        signal_group: get("--signal-group", "QUIESCE_SIGNAL_GROUP").map_or(Ok(false), |v| {
            boolean("--signal-group (QUIESCE_SIGNAL_GROUP)", &v)
        })?,
        quiet,
        ready_addr,
        ready_upstream: get("--ready-upstream", "QUIESCE_READY_UPSTREAM")
            .map(|v| http_url("--ready-upstream", &v))
            .transpose()?,
        ready_file: get("--ready-file", "QUIESCE_READY_FILE").map(PathBuf::from),
        on_drain: get("--on-drain", "QUIESCE_ON_DRAIN")
            .map(|v| http_url("--on-drain", &v))
            .transpose()?,
        on_drain_timeout: opt_duration(
            "--on-drain-timeout",
            "QUIESCE_ON_DRAIN_TIMEOUT",
            Duration::from_secs(5),
        )?,
        control_socket: get("--control-socket", "QUIESCE_CONTROL_SOCKET")
            .map_or_else(|| PathBuf::from(DEFAULT_SOCKET), PathBuf::from),
        command,
    })))
}

fn parse_prestop(
    args: &[String],
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Invocation, UsageError> {
    let mut prestop = Prestop {
        timeout: Duration::from_secs(120),
        sleep: None,
        control_socket: env("QUIESCE_CONTROL_SOCKET")
            .map_or_else(|| PathBuf::from(DEFAULT_SOCKET), PathBuf::from),
    };
    let mut i = 0;
    while i < args.len() {
        let (name, inline) = match args[i].split_once('=') {
            Some((n, v)) => (n.to_string(), Some(v.to_string())),
            None => (args[i].clone(), None),
        };
        if name == "-h" || name == "--help" {
            return Ok(Invocation::Help);
        }
        let value = match inline {
            Some(v) => v,
            None => {
                i += 1;
                args.get(i)
                    .cloned()
                    .ok_or_else(|| UsageError(format!("prestop {name}: expected a value")))?
            }
        };
        match name.as_str() {
            "--timeout" => prestop.timeout = duration("prestop --timeout", &value)?,
            "--sleep" => prestop.sleep = Some(duration("prestop --sleep", &value)?),
            "--socket" => prestop.control_socket = PathBuf::from(value),
            other => {
                return Err(UsageError(format!(
                    "prestop: unknown option {other}; see quiesce-init --help"
                )));
            }
        }
        i += 1;
    }
    Ok(Invocation::Prestop(prestop))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &[&str]) -> Vec<String> {
        s.iter().map(|a| a.to_string()).collect()
    }

    #[test]
    fn flags_win_over_the_environment() {
        let env = |k: &str| (k == "QUIESCE_DRAIN_DELAY").then(|| "30s".to_string());
        let Invocation::Run(c) = parse(&args(&["--", "app"]), &env).unwrap() else {
            panic!()
        };
        assert_eq!(c.drain_delay, Duration::from_secs(30));
        let Invocation::Run(c) =
            parse(&args(&["--drain-delay=2s", "--", "app", "-x"]), &env).unwrap()
        else {
            panic!()
        };
        assert_eq!(c.drain_delay, Duration::from_secs(2));
        assert_eq!(c.command, args(&["app", "-x"]));
    }

    #[test]
    fn bad_input_names_the_option() {
        let none = |_: &str| None;
        let err = parse(&args(&["--drain-delay", "soon", "--", "app"]), &none).unwrap_err();
        assert!(
            err.0.starts_with("--drain-delay: expected a duration"),
            "{}",
            err.0
        );
        assert!(
            parse(&args(&["--stop-signal", "KILL", "--", "a"]), &none)
                .unwrap_err()
                .0
                .contains("--stop-signal")
        );
        assert!(
            parse(&args(&["--bogus", "1", "--", "a"]), &none)
                .unwrap_err()
                .0
                .contains("--bogus")
        );
        assert!(
            parse(&args(&["--on-drain", "https://x", "--", "a"]), &none)
                .unwrap_err()
                .0
                .contains("http://")
        );
        assert!(
            parse(&args(&[]), &none)
                .unwrap_err()
                .0
                .contains("no command")
        );
    }

    #[test]
    fn drain_until_quiet_options() {
        let env = |k: &str| match k {
            "QUIESCE_DRAIN_QUIET" => Some("2s".to_string()),
            "QUIESCE_DRAIN_PORTS" => Some("8080, istio".to_string()),
            "QUIESCE_DRAIN_IGNORE_FROM" => Some("10.0.3.17,fd00::1".to_string()),
            "QUIESCE_SIGNAL_GROUP" => Some("1".to_string()),
            _ => None,
        };
        let Invocation::Run(c) = parse(&args(&["--", "app"]), &env).unwrap() else {
            panic!()
        };
        assert!(c.signal_group);
        let q = c.quiet.unwrap();
        assert_eq!(q.period, Duration::from_secs(2));
        assert_eq!(q.min, Duration::from_secs(1), "the default minimum");
        assert_eq!(q.ports, Ports::Listed(vec![8080, 15006]));
        assert_eq!(q.ignore_from.len(), 2);
        let none = |_: &str| None;
        let Invocation::Run(c) = parse(
            &args(&["--signal-group", "--drain-until-quiet=1s", "--", "app"]),
            &none,
        )
        .unwrap() else {
            panic!()
        };
        assert!(c.signal_group, "a flag without a value");
        assert_eq!(c.quiet.unwrap().ports, Ports::Listening);
        for (flag, bad) in [
            ("--drain-ports", "http"),
            ("--drain-ignore-from", "node"),
            ("--drain-until-quiet", "soon"),
        ] {
            let a = [flag, bad, "--", "app"];
            let err = parse(&args(&a), &none).unwrap_err().0;
            assert!(err.starts_with(flag) && err.contains(bad), "{err}");
        }
        let bad_env = |k: &str| (k == "QUIESCE_SIGNAL_GROUP").then(|| "maybe".to_string());
        let err = parse(&args(&["--", "app"]), &bad_env).unwrap_err().0;
        assert!(err.contains("maybe"), "{err}");
    }

    #[test]
    fn signals_by_short_or_full_name() {
        assert_eq!(signal("s", "quit").unwrap(), Signal::SIGQUIT);
        assert_eq!(signal("s", "SIGUSR1").unwrap(), Signal::SIGUSR1);
    }
}
