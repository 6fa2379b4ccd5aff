//! One pod's container from its bind to the final delete, as the kubelet runs it: start, the
//! readiness probe until it passes, then at deletion preStop, SIGTERM, SIGKILL at the end of
//! the grace period, each step in the timeline and the pod's [`PodRecord`].

use std::collections::BTreeMap;
use std::net::SocketAddr;

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use nix::sys::signal::Signal;
use serde_json::json;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::process::{Container, Exec, describe, run_hook};
use super::spec::{ContainerSpec, grace_period};
use super::{Life, Listen, probe, status};
use crate::app::{LISTEN_ENV, LISTENING, POD_NAME_ENV};
use crate::dataplane::Registry;
use crate::timeline::kind;

/// Bound and given an IP by the sandbox: the moment the container starts.
fn bound_ip(pod: &Pod) -> Option<(String, String)> {
    let node = pod.spec.as_ref()?.node_name.clone()?;
    let ip = pod.status.as_ref()?.pod_ip.clone()?;
    Some((node, ip))
}

/// What ended a wait on the pod.
enum Next {
    /// The pod object is gone (or the run ended).
    Gone,
    /// It has a deletionTimestamp.
    Deleting(Box<Pod>),
}

/// Waits until the pod is being deleted or gone (or the run is over, which counts as gone).
async fn deletion(
    rx: &mut watch::Receiver<Option<Pod>>,
    stopped: &mut watch::Receiver<bool>,
) -> Next {
    loop {
        match rx.borrow_and_update().clone() {
            None => return Next::Gone,
            Some(p) if p.metadata.deletion_timestamp.is_some() => {
                return Next::Deleting(Box::new(p));
            }
            Some(_) => {}
        }
        tokio::select! {
            changed = rx.changed() => if changed.is_err() { return Next::Gone },
            _ = stopped.wait_for(|s| *s) => return Next::Gone,
        }
    }
}

/// Removes the pod's registry entry when its task ends, however it ends.
struct Unregister(Registry, String);

impl Drop for Unregister {
    fn drop(&mut self) {
        self.0.remove(&self.1);
    }
}

/// One pod's container, from the bind to the final delete.
pub(super) async fn pod_life(mut rx: watch::Receiver<Option<Pod>>, life: Life) {
    let mut stopped = life.stopped.clone();
    let (pod, node, ip) = loop {
        let pod = rx.borrow_and_update().clone();
        match pod {
            None => return,
            Some(p) if p.metadata.deletion_timestamp.is_some() => return,
            Some(p) => {
                if let Some((node, ip)) = bound_ip(&p) {
                    break (p, node, ip);
                }
            }
        }
        tokio::select! {
            changed = rx.changed() => if changed.is_err() { return },
            _ = stopped.wait_for(|s| *s) => return,
        }
    };
    let subject = format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any());
    life.update(&subject, |r| {
        r.pod = subject.clone();
        r.node = node.clone();
    });
    let fail = |why: String| {
        tracing::warn!(pod = %subject, error = %why, "the pod's container did not run");
        life.update(&subject, |r| r.error = Some(why));
    };
    let spec = match ContainerSpec::of(&pod, &life.opts.program) {
        Ok(s) => s,
        Err(e) => return fail(e.to_string()),
    };
    let listen = match life.opts.listen {
        Listen::Ephemeral => SocketAddr::from(([127, 0, 0, 1], 0)),
        Listen::PodAddress(port) => match crate::kernel::pod_address(&ip) {
            Some(a) => SocketAddr::from((a, port)),
            None => return fail(format!("pod IP {ip} has no address in the lab's namespace")),
        },
    };
    let dir = life.opts.run_dir.join(pod.name_any());
    if let Err(e) = std::fs::create_dir_all(&dir) {
        return fail(format!("creating {}: {e}", dir.display()));
    }
    // The container's environment: the spec's, and what its runtime adds — the downward API's
    // pod name and address, and a control socket in the container's own directory.
    let mut env = spec.env.clone();
    env.insert(POD_NAME_ENV.into(), pod.name_any());
    env.insert(LISTEN_ENV.into(), listen.to_string());
    env.insert(
        "QUIESCE_CONTROL_SOCKET".into(),
        dir.join("quiesce-init.sock").to_string_lossy().into_owned(),
    );
    let exec = Exec {
        argv: spec.argv.clone(),
        env: env.clone(),
    };
    let (logs_tx, mut logs) = mpsc::unbounded_channel();
    let started = Container::start(&exec, &life.opts.isolation, LISTENING, logs_tx, 64).await;
    let (mut container, listening) = match started {
        Ok(c) => c,
        Err(e) => return fail(e.to_string()),
    };
    life.update(&subject, |r| {
        r.pid1 = Some(container.pid1().clone());
        r.started_at = life.now();
    });
    life.timeline.record(
        kind::PROCESS_STARTED,
        &subject,
        json!({"node": node, "pid1": container.pid1(), "isolation": life.opts.isolation}),
    );
    let log_task = {
        let timeline = life.timeline.clone();
        let subject = subject.clone();
        tokio::spawn(async move {
            while let Some(line) = logs.recv().await {
                timeline.record(kind::CONTAINER_LOG, &subject, json!({"line": line}));
            }
        })
    };
    let _logs = AbortOnDrop(log_task);
    let Some(addr) = listening.and_then(|l| l.parse::<SocketAddr>().ok()) else {
        let status = container.wait().await;
        life.update(&subject, |r| {
            r.exited_at = life.now();
            r.exit = Some(describe(status));
            r.stopped_by = Some("crashed".into());
        });
        life.timeline.record(
            kind::PROCESS_EXITED,
            &subject,
            json!({"status": describe(status)}),
        );
        return;
    };
    life.registry.insert(ip.clone(), addr);
    let _unregister = Unregister(life.registry.clone(), ip.clone());

    // Probing until Ready, while watching for the deletion and for the process's end.
    let probe = spec.probe.clone();
    let ready = async {
        let Some(probe) = probe else {
            return;
        };
        loop {
            if probe::passes(addr, &probe).await {
                return;
            }
            tokio::time::sleep(probe.period).await;
        }
    };
    let next = tokio::select! {
        () = ready => {
            life.update(&subject, |r| r.ready_at = life.now());
            life.timeline.record(kind::PROBE_PASSED, &subject, json!({"addr": addr.to_string()}));
            let latest = rx.borrow().clone().unwrap_or_else(|| pod.clone());
            if let Err(e) = status::set_ready(&life.api, &latest).await {
                tracing::warn!(pod = %subject, error = %e, "could not report the pod Ready");
            }
            None
        }
        n = deletion(&mut rx, &mut stopped) => Some(n),
        status = container.wait() => {
            exited(&life, &subject, status, "crashed");
            return;
        }
    };
    let next = match next {
        Some(n) => n,
        None => tokio::select! {
            n = deletion(&mut rx, &mut stopped) => n,
            status = container.wait() => {
                exited(&life, &subject, status, "crashed");
                return;
            }
        },
    };
    let deleting = match next {
        Next::Gone => {
            // No graceful stop: the object vanished (node gone, force delete) or the run ended.
            let by = if *stopped.borrow() {
                "lab-end"
            } else {
                "pod-vanished"
            };
            life.update(&subject, |r| r.sigkill_at = life.now());
            container.kill();
            let status = container.wait().await;
            exited(&life, &subject, status, by);
            return;
        }
        Next::Deleting(p) => p,
    };
    let status = terminate(&life, &subject, &mut container, &spec, &env, &deleting).await;
    exited(&life, &subject, status, "kubelet");
    drop(_unregister);
    // The kubelet's final delete, once the container is gone.
    if let Err(e) = status::delete_final(&life.api, &deleting).await {
        tracing::debug!(pod = %subject, error = %e, "final delete");
    }
}

/// The kubelet's stop: preStop, SIGTERM, SIGKILL at the end of the grace period.
async fn terminate(
    life: &Life,
    subject: &str,
    container: &mut Container,
    spec: &ContainerSpec,
    env: &BTreeMap<String, String>,
    pod: &Pod,
) -> std::process::ExitStatus {
    let deadline = Instant::now() + grace_period(pod);
    if let Some(argv) = &spec.prestop {
        life.update(subject, |r| r.prestop_at = life.now());
        life.timeline
            .record(kind::PRESTOP, subject, json!({"command": argv.join(" ")}));
        let hook = Exec {
            argv: argv.clone(),
            env: env.clone(),
        };
        // The hook runs to its end (or the deadline) whatever the container does meanwhile:
        // quiesce-init's drain may well stop the app and exit before the hook returns.
        let hook = run_hook(&hook, deadline);
        let mut hook = std::pin::pin!(hook);
        let ran = tokio::select! {
            r = &mut hook => r,
            _ = container.wait() => hook.await,
        };
        let outcome = match ran {
            Ok(Some(s)) => describe(s),
            Ok(None) => "timeout".into(),
            Err(e) => e.to_string(),
        };
        life.update(subject, |r| r.prestop_exit = Some(outcome.clone()));
        life.timeline
            .record(kind::PRESTOP_DONE, subject, json!({"status": outcome}));
    }
    if container.signal(Signal::SIGTERM) {
        life.update(subject, |r| r.sigterm_at = life.now());
        life.timeline.record(
            kind::SIGTERM,
            subject,
            json!({"pid": container.pid1().host_pid}),
        );
    }
    if let Ok(status) = tokio::time::timeout_at(deadline, container.wait()).await {
        return status;
    }
    container.kill();
    life.update(subject, |r| r.sigkill_at = life.now());
    life.timeline
        .record(kind::SIGKILL, subject, json!({"grace_period_over": true}));
    container.wait().await
}

fn exited(life: &Life, subject: &str, status: std::process::ExitStatus, by: &str) {
    life.update(subject, |r| {
        r.exited_at = life.now();
        r.exit = Some(describe(status));
        r.stopped_by = Some(by.to_string());
    });
    life.timeline.record(
        kind::PROCESS_EXITED,
        subject,
        json!({"status": describe(status), "stopped_by": by}),
    );
}

struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
