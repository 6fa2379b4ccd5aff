//! The lab's pods are real processes (`quiesce lab`'s container runtime against the sandbox,
//! in real time, with this package's `quiesce` binary as the image): a pod deleted under traffic
//! drops requests when its app is PID 1 and stops at SIGTERM while kube-proxy still routes to
//! it, and drops none under quiesce-init, whose preStop drain outlasts the propagation delay.
//! As root every container's first process is PID 1 of a PID namespace of its own, and in
//! quiesce mode that process is the quiesce-init supervisor, as the process table shows.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, ListParams};
use kube::{Api, ResourceExt};
use quiesce_lab::app::{LISTEN_ENV, LISTENING};
use quiesce_lab::dataplane::{Balancer, Registry};
use quiesce_lab::pods::process::{Container, Exec, Isolation};
use quiesce_lab::pods::{Listen, PodRecord, Runtime, RuntimeOptions};
use quiesce_lab::timeline::{Timeline, kind, watch_cluster};
use quiesce_lab::traffic::{Route, Traffic, TrafficOptions, TrafficStats};
use quiesce_sandbox::scenario::Scenario;
use quiesce_sandbox::{Sandbox, SandboxOptions};
use serde_json::json;

const PROPAGATION: Duration = Duration::from_secs(1);
const DEADLINE: Duration = Duration::from_secs(20);
const QUIESCE: &str = env!("CARGO_BIN_EXE_quiesce");

/// Three web pods on two nodes, run by the lab's runtime: under quiesce-init (3 s drain
/// started by its preStop hook) or the app alone.
fn scenario(quiesce: bool) -> Scenario {
    let container = if quiesce {
        json!({"name": "web", "image": "registry.example/web:1",
            "command": ["/quiesce-init", "--", "lab-app", "--work", "5ms"],
            "env": [{"name": "QUIESCE_DRAIN_DELAY", "value": "3s"}],
            "lifecycle": {"preStop": {"exec": {"command": ["/quiesce-init", "prestop"]}}},
            "ports": [{"name": "http", "containerPort": 8080}],
            "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080}, "periodSeconds": 1}})
    } else {
        json!({"name": "web", "image": "registry.example/web:1",
            "command": ["lab-app", "--work", "5ms"],
            "ports": [{"name": "http", "containerPort": 8080}],
            "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080}, "periodSeconds": 1}})
    };
    Scenario {
        objects: vec![
            json!({"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
                "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                    "template": {"metadata": {"labels": {"app": "web"},
                        "annotations": {quiesce_sandbox::cluster::EXTERNAL_RUNTIME: "true"}},
                        "spec": {"terminationGracePeriodSeconds": 30, "containers": [container]}}}}),
            json!({"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "web", "namespace": "default"},
                "spec": {"selector": {"app": "web"},
                    "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}}),
        ],
        ..Scenario::nodes_only(2)
    }
}

/// Polls a condition until it holds or the deadline passes (the condition is the
/// synchronisation; the short pause only keeps the loop from spinning).
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let until = tokio::time::Instant::now() + DEADLINE;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < until,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Processes whose command line starts with `prefix`, with the last pid of their `NSpid`
/// (their pid in their own PID namespace).
fn processes(prefix: &str) -> Vec<(u32, Option<u32>)> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&raw).replace('\0', " ");
            if !cmdline.starts_with(prefix) {
                return None;
            }
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
            let ns_pid = status
                .lines()
                .find_map(|l| l.strip_prefix("NSpid:"))
                .and_then(|ids| ids.split_whitespace().last()?.parse().ok());
            Some((pid, ns_pid))
        })
        .collect()
}

struct Outcome {
    stats: TrafficStats,
    victim: PodRecord,
    records: Vec<PodRecord>,
    timeline: Timeline,
    isolation: Isolation,
    /// Supervisors seen while the pods ran: (host pid, pid in their namespace).
    supervisors: Vec<(u32, Option<u32>)>,
}

/// Deletes one web pod under traffic and returns what the traffic and the runtime saw.
async fn delete_one_pod_under_traffic(quiesce: bool) -> Outcome {
    let sandbox = Sandbox::start(SandboxOptions {
        scenario: scenario(quiesce),
        ..Default::default()
    })
    .await
    .expect("the sandbox starts");
    let client = sandbox.client();
    let timeline = Timeline::new();
    let watch = watch_cluster(client.clone(), timeline.clone());
    let isolation = Isolation::detect().await;
    let run_dir = tempfile::tempdir().unwrap();
    let registry = Registry::default();
    let runtime = Runtime::start(
        client.clone(),
        "default",
        "app=web",
        RuntimeOptions {
            program: QUIESCE.into(),
            listen: Listen::Ephemeral,
            isolation: isolation.clone(),
            run_dir: run_dir.path().to_path_buf(),
        },
        registry.clone(),
        timeline.clone(),
    );
    let balancer = Balancer::start(
        client.clone(),
        "default",
        "web",
        PROPAGATION,
        registry.clone(),
        timeline.clone(),
    );
    let served = {
        let registry = registry.clone();
        move |ips: &[String]| ips.len() == 3 && ips.iter().all(|ip| registry.get(ip).is_some())
    };
    assert!(
        balancer.wait_until(DEADLINE, served.clone()).await,
        "3 Ready endpoints whose apps run"
    );
    let supervisors = processes(&format!("{QUIESCE} __init "));

    let traffic = Traffic::start(
        vec![("web".into(), Route::Balancer(balancer.clone()))],
        TrafficOptions {
            rps: 200.0,
            concurrency: 6,
            requests_per_connection: 10,
            ..Default::default()
        },
        timeline.clone(),
    );
    eventually("steady traffic", || traffic.snapshot().ok >= 100).await;
    assert_eq!(
        traffic.snapshot().failed,
        0,
        "no failures before the deletion"
    );

    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let victim = pods
        .list(&ListParams::default().labels("app=web"))
        .await
        .unwrap()
        .items
        .remove(0);
    let victim_ip = victim.status.as_ref().unwrap().pod_ip.clone().unwrap();
    pods.delete(&victim.name_any(), &DeleteParams::default())
        .await
        .unwrap();
    let replaced = {
        let victim_ip = victim_ip.clone();
        move |ips: &[String]| served(ips) && !ips.contains(&victim_ip)
    };
    assert!(
        balancer.wait_until(DEADLINE, replaced).await,
        "the replacement serves"
    );
    assert!(
        registry
            .wait_until(DEADLINE, |m| !m.contains_key(&victim_ip))
            .await,
        "the victim's app is gone with its pod"
    );
    // The kubelet's final delete, once the process exited.
    let name = victim.name_any();
    let until = tokio::time::Instant::now() + DEADLINE;
    while pods.get_opt(&name).await.unwrap().is_some() {
        assert!(
            tokio::time::Instant::now() < until,
            "{name} was never deleted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let after = traffic.snapshot().sent + 100;
    eventually("traffic after the replacement", || {
        traffic.snapshot().sent >= after
    })
    .await;
    let stats = traffic.stop().await;
    drop(balancer);
    let records = runtime.stop().await;
    // Every watch ends before the server does: its graceful shutdown would wait for an open
    // watch request (kube's watcher asks for 290 s).
    drop(watch);
    sandbox.shutdown().await;
    let victim = records
        .iter()
        .find(|r| r.pod == format!("default/{name}"))
        .cloned()
        .expect("the victim has a record");
    Outcome {
        stats,
        victim,
        records,
        timeline,
        isolation,
        supervisors,
    }
}

fn kinds(timeline: &Timeline) -> Vec<String> {
    timeline.events().into_iter().map(|e| e.kind).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_under_quiesce_init_stops_without_dropping_a_request() {
    let o = delete_one_pod_under_traffic(true).await;
    eprintln!("{:?}\n{:#?}", o.stats, o.victim);
    assert_eq!(
        o.stats.failed, 0,
        "a 3 s drain covers a 1 s lag: {:?}",
        o.stats
    );
    assert!(o.stats.ok > 200, "{:?}", o.stats);
    let v = &o.victim;
    // started < Ready < preStop < exit; the hook returned after the drain, and the
    // supervisor and its app exited 0 within the grace period.
    let (started, ready, prestop, exited) = (
        v.started_at.unwrap(),
        v.ready_at.unwrap(),
        v.prestop_at.unwrap(),
        v.exited_at.unwrap(),
    );
    assert!(
        started <= ready && ready < prestop && prestop < exited,
        "{v:#?}"
    );
    assert!(
        exited - prestop >= 3.0,
        "the drain delay passed first: {v:#?}"
    );
    assert_eq!(v.prestop_exit.as_deref(), Some("exit 0"), "{v:#?}");
    assert_eq!(v.exit.as_deref(), Some("exit 0"), "{v:#?}");
    assert_eq!(v.stopped_by.as_deref(), Some("kubelet"), "{v:#?}");
    assert_eq!(v.sigkill_at, None, "{v:#?}");
    let k = kinds(&o.timeline);
    for want in [
        kind::PROCESS_STARTED,
        kind::PROBE_PASSED,
        kind::PRESTOP,
        kind::PRESTOP_DONE,
        kind::PROCESS_EXITED,
        kind::POD_GONE,
        kind::ENDPOINTS,
    ] {
        assert!(k.iter().any(|x| x == want), "timeline has {want}: {k:?}");
    }
    // quiesce-init's own log lines, as `kubectl logs` shows them.
    assert!(
        o.timeline
            .events()
            .iter()
            .any(|e| e.kind == kind::CONTAINER_LOG
                && e.detail["line"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("drain started")),
        "quiesce-init logged its drain"
    );
    match o.isolation {
        Isolation::PidNamespace => {
            // Seen from outside, while they ran: three supervisors, each PID 1 of its own
            // namespace — and the runtime recorded the same of every pod.
            assert_eq!(o.supervisors.len(), 3, "{:?}", o.supervisors);
            assert!(
                o.supervisors.iter().all(|(_, ns)| *ns == Some(1)),
                "{:?}",
                o.supervisors
            );
            for r in &o.records {
                let pid1 = r.pid1.as_ref().unwrap();
                assert_eq!(pid1.ns_pid, Some(1), "{r:#?}");
                assert!(
                    pid1.cmdline.starts_with(&format!("{QUIESCE} __init ")),
                    "{r:#?}"
                );
            }
        }
        Isolation::Subreaper(why) => eprintln!("no PID namespaces here: {why}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_that_is_pid_1_and_stops_at_sigterm_drops_requests() {
    let o = delete_one_pod_under_traffic(false).await;
    eprintln!("{:?}\n{:#?}", o.stats, o.victim);
    assert!(
        o.stats.failed > 0,
        "an app that stops on SIGTERM drops requests: {:?}",
        o.stats
    );
    assert_eq!(o.stats.sent, o.stats.ok + o.stats.failed);
    for cause in o.stats.by_cause.keys() {
        assert!(
            cause == "refused" || cause == "reset",
            "failures are refused or reset, got {cause}: {:?}",
            o.stats
        );
    }
    let v = &o.victim;
    assert_eq!(v.prestop_at, None, "{v:#?}");
    assert!(v.sigterm_at.unwrap() < v.exited_at.unwrap(), "{v:#?}");
    // A well-written server: it stopped accepting, finished its requests and exited 0.
    assert_eq!(v.exit.as_deref(), Some("exit 0"), "{v:#?}");
    if o.isolation == Isolation::PidNamespace {
        assert!(o.records.iter().all(|r| {
            let pid1 = r.pid1.as_ref().unwrap();
            pid1.ns_pid == Some(1) && pid1.cmdline.starts_with(&format!("{QUIESCE} __lab-app"))
        }));
    }
    let k = kinds(&o.timeline);
    for want in [kind::SIGTERM, kind::PROCESS_EXITED, kind::POD_GONE] {
        assert!(k.iter().any(|x| x == want), "timeline has {want}: {k:?}");
    }
}

/// Whether the process is gone or a zombie (dead, only waiting to be reaped).
fn dead(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status")).map_or(true, |s| {
        s.lines()
            .find_map(|l| l.strip_prefix("State:"))
            .is_some_and(|st| st.trim_start().starts_with('Z'))
    })
}

/// The worst way for the lab to go: its thread panics and the container's handle is never
/// dropped (as after an abort or a SIGKILL, when no destructor runs). The kernel still kills
/// the container, since it was started with PR_SET_PDEATHSIG.
#[test]
fn a_container_dies_with_the_lab_thread_that_started_it_even_when_nothing_is_dropped() {
    let (tx, rx) = std::sync::mpsc::channel();
    let lab = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let exec = Exec {
                argv: vec![QUIESCE.into(), "__lab-app".into()],
                env: [(LISTEN_ENV.to_string(), "127.0.0.1:0".to_string())].into(),
            };
            let (logs, _) = tokio::sync::mpsc::unbounded_channel();
            let isolation = Isolation::detect().await;
            let (container, listening) = Container::start(&exec, &isolation, LISTENING, logs, 8)
                .await
                .unwrap();
            assert!(listening.is_some(), "the app started");
            tx.send(container.pid1().host_pid).unwrap();
            std::mem::forget(container);
            panic!("the lab panics with its container running");
        });
    });
    let pid = rx.recv().unwrap();
    assert!(lab.join().is_err(), "the thread panicked");
    let until = std::time::Instant::now() + DEADLINE;
    while !dead(pid) {
        assert!(
            std::time::Instant::now() < until,
            "pid {pid} outlived the thread that started it"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
