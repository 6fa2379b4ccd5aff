//! What a pod spec asks the lab's runtime for: the container's command and environment, its
//! exec preStop hook, its readiness probe, its grace period. The lab's "image" holds two
//! programs, both the `quiesce` binary itself behind a hidden subcommand, so that
//! `cargo run --bin quiesce -- lab` needs no build step of its own:
//! `quiesce-init` (the real supervisor, `quiesce __init`) and `lab-app` (`quiesce __lab-app`).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod};

/// The programs in the lab's image, and the hidden subcommand of the `quiesce` binary each
/// one is.
pub const IMAGE: [(&str, &str); 2] = [("quiesce-init", "__init"), ("lab-app", "__lab-app")];

/// A pod spec the lab's runtime cannot run.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// No container.
    #[error("the pod has no container")]
    NoContainer,
    /// No command: the lab's image has no entrypoint.
    #[error("container {0}: no command (the lab's image has no entrypoint)")]
    NoCommand(String),
    /// A command the image does not have.
    #[error("{0:?} is not in the lab's image (it has quiesce-init and lab-app)")]
    NotInImage(String),
}

/// The readiness probe's HTTP GET.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// The path (`/ready`).
    pub path: String,
    /// How often it runs until it passes (`periodSeconds`, 10 s by default).
    pub period: Duration,
    /// How long one try may take (`timeoutSeconds`, 1 s by default).
    pub timeout: Duration,
}

/// The first container of a pod, as the runtime runs it.
#[derive(Debug, Clone)]
pub struct ContainerSpec {
    /// The container's name.
    pub name: String,
    /// Program and arguments, resolved against [`IMAGE`].
    pub argv: Vec<String>,
    /// Literal `env` values of the spec.
    pub env: BTreeMap<String, String>,
    /// The exec preStop hook, resolved likewise.
    pub prestop: Option<Vec<String>>,
    /// The readiness probe, if it is an HTTP GET.
    pub probe: Option<Probe>,
}

/// Resolves `command` against the image: `quiesce-init … -- lab-app …` becomes
/// `<program> __init … -- <program> __lab-app …` (the supervised command too, since
/// quiesce-init execs it by name).
pub fn resolve(program: &Path, command: &[String]) -> Result<Vec<String>, SpecError> {
    let first = command.first().map(String::as_str).unwrap_or_default();
    let base = first.rsplit('/').next().unwrap_or(first);
    let (name, sub) = IMAGE
        .iter()
        .find(|(name, _)| *name == base)
        .ok_or_else(|| SpecError::NotInImage(first.to_string()))?;
    let mut argv = vec![program.to_string_lossy().into_owned(), (*sub).to_string()];
    let rest = &command[1..];
    match rest.iter().position(|a| a == "--") {
        Some(i) if *name == "quiesce-init" => {
            argv.extend(rest[..=i].iter().cloned());
            argv.extend(resolve(program, &rest[i + 1..])?);
        }
        _ => argv.extend(rest.iter().cloned()),
    }
    Ok(argv)
}

fn seconds(v: Option<i32>, default: u64) -> Duration {
    v.and_then(|s| u64::try_from(s).ok())
        .map_or(Duration::from_secs(default), Duration::from_secs)
}

impl ContainerSpec {
    /// The pod's first container, with commands resolved to `program`.
    pub fn of(pod: &Pod, program: &Path) -> Result<ContainerSpec, SpecError> {
        let c: &Container = pod
            .spec
            .as_ref()
            .and_then(|s| s.containers.first())
            .ok_or(SpecError::NoContainer)?;
        let mut command: Vec<String> = c.command.clone().unwrap_or_default();
        command.extend(c.args.iter().flatten().cloned());
        if command.is_empty() {
            return Err(SpecError::NoCommand(c.name.clone()));
        }
        let prestop = c
            .lifecycle
            .as_ref()
            .and_then(|l| l.pre_stop.as_ref())
            .and_then(|h| h.exec.as_ref())
            .and_then(|e| e.command.as_ref())
            .map(|cmd| resolve(program, cmd))
            .transpose()?;
        let probe = c.readiness_probe.as_ref().and_then(|p| {
            let get = p.http_get.as_ref()?;
            Some(Probe {
                path: get.path.clone().unwrap_or_else(|| "/".into()),
                period: seconds(p.period_seconds, 10),
                timeout: seconds(p.timeout_seconds, 1),
            })
        });
        Ok(ContainerSpec {
            name: c.name.clone(),
            argv: resolve(program, &command)?,
            env: c
                .env
                .iter()
                .flatten()
                .filter_map(|e| Some((e.name.clone(), e.value.clone()?)))
                .collect(),
            prestop,
            probe,
        })
    }
}

/// The grace period the kubelet gives a deleted pod: the deletion's own, else the spec's, else
/// Kubernetes' default of 30 s.
pub fn grace_period(pod: &Pod) -> Duration {
    let secs = pod.metadata.deletion_grace_period_seconds.or_else(|| {
        pod.spec
            .as_ref()
            .and_then(|s| s.termination_grace_period_seconds)
    });
    secs.and_then(|s| u64::try_from(s).ok())
        .map_or(Duration::from_secs(30), Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_resolve_to_the_quiesce_binary_or_are_refused() {
        let program = Path::new("/bin/quiesce");
        let cmd = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            resolve(
                program,
                &cmd(&["/quiesce-init", "--", "lab-app", "--work", "2ms"])
            )
            .unwrap(),
            cmd(&[
                "/bin/quiesce",
                "__init",
                "--",
                "/bin/quiesce",
                "__lab-app",
                "--work",
                "2ms"
            ])
        );
        assert_eq!(
            resolve(program, &cmd(&["lab-app"])).unwrap(),
            cmd(&["/bin/quiesce", "__lab-app"])
        );
        assert!(matches!(
            resolve(program, &cmd(&["nginx"])),
            Err(SpecError::NotInImage(n)) if n == "nginx"
        ));
    }
}
