//! `quiesce lab` as a user runs it: the whole node group replaced under live traffic. quiesce
//! drops nothing; the naive baseline (kubectl-drain semantics, apps that stop at SIGTERM)
//! drops requests, and says why. Both modes run on both data planes: the userspace balancer,
//! and (as root with iptables and conntrack) the kernel's, in a private network namespace with
//! kube-proxy's rules, which must leave nothing behind.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use quiesce_testbed::chromium::{attr, dump_dom, svg_tag};
use serde_json::Value;

/// The lab's refusal when `--dataplane kernel` cannot be had (no root, no iptables …).
const KERNEL_UNAVAILABLE: &str = "the kernel data plane is not available";

/// Runs the lab on the kernel data plane; None (and the reason printed) when this machine
/// cannot give it one.
fn kernel_lab(args: &[&str]) -> Option<(Value, String, std::process::ExitStatus)> {
    let mut all = vec!["--dataplane", "kernel"];
    all.extend_from_slice(args);
    let run = lab(&all)?;
    let first = run.1.lines().next().unwrap_or_default();
    assert!(first.starts_with("dataplane: kernel"), "{}", run.1);
    assert_eq!(run.0["dataplane"], "kernel", "{:#}", run.0);
    Some(run)
}

/// The kernel path is shown, not claimed: every connection the clients opened went through a
/// KUBE-SEP rule of the lab's own namespace.
fn assert_kernel_counted(json: &Value) {
    let kernel = &json["kernel"];
    let connections = json["requests"]["connections"].as_u64().unwrap();
    let sep_packets = kernel["sep_packets"].as_u64().unwrap();
    assert!(connections > 0, "{json:#}");
    assert!(sep_packets >= connections, "{json:#}");
    let rules = kernel["endpoint_rules"].as_array().unwrap();
    assert!(
        rules
            .iter()
            .all(|r| r["chain"].as_str().unwrap().starts_with("KUBE-SEP-")),
        "{json:#}"
    );
    assert_eq!(
        rules
            .iter()
            .map(|r| r["packets"].as_u64().unwrap())
            .sum::<u64>(),
        sep_packets
    );
    assert!(
        rules.iter().any(|r| !r["removed_at"].is_null()),
        "the old nodes' pods lost their rules: {json:#}"
    );
    assert_eq!(kernel["errors"], serde_json::json!([]), "{json:#}");
}

/// Every pod of the Services was a real process, and each one the kubelet stopped exited
/// within its grace period: in quiesce mode under the quiesce-init supervisor, after its
/// preStop hook; as root each one PID 1 of its own PID namespace.
fn assert_pods_were_processes(json: &Value, quiesce: bool) {
    let pods = json["pods"].as_array().unwrap();
    // web 3 + api 1 at the start, and a replacement for each one the drains moved.
    assert!(pods.len() >= 8, "{json:#}");
    let first = if quiesce { " __init " } else { " __lab-app " };
    let namespaced = json["pod_isolation"]["kind"] == "pid-namespace";
    for p in pods {
        let pid1 = &p["pid1"];
        assert!(pid1["cmdline"].as_str().unwrap().contains(first), "{p:#}");
        if namespaced {
            assert_eq!(pid1["ns_pid"], 1, "{p:#}");
        }
        // Ready only once its probe passed after the start (a pod evicted before its first
        // probe passed never was).
        let started = p["started_at"].as_f64().unwrap();
        assert!(
            p["ready_at"].as_f64().is_none_or(|ready| ready >= started),
            "{p:#}"
        );
        if p["stopped_by"] == "kubelet" {
            assert_eq!(p["exit"], "exit 0", "{p:#}");
            assert!(p["sigkill_at"].is_null(), "{p:#}");
            assert_eq!(!p["prestop_at"].is_null(), quiesce, "{p:#}");
        } else {
            assert_eq!(p["stopped_by"], "lab-end", "{p:#}");
        }
    }
    let stopped = pods.iter().filter(|p| p["stopped_by"] == "kubelet").count();
    assert!(
        stopped >= 4,
        "every drained pod was stopped by its kubelet: {json:#}"
    );
    assert!(json["requests"]["retries"].is_u64(), "{json:#}");
}

/// Runs the lab; the report it writes must render in headless Chromium with marks drawn. None
/// (and the reason printed) when `--dataplane kernel` was asked for and this machine cannot
/// give it.
fn lab(args: &[&str]) -> Option<(Value, String, std::process::ExitStatus)> {
    lab_with_env(args, &[])
}

/// [`lab`] with these environment variables set.
fn lab_with_env(
    args: &[&str],
    env: &[(&str, &str)],
) -> Option<(Value, String, std::process::ExitStatus)> {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("lab.html");
    let out = Command::new(env!("CARGO_BIN_EXE_quiesce"))
        .envs(env.iter().copied())
        .arg("lab")
        .args(args)
        .args(["--output", "json", "--report"])
        .arg(&report)
        .output()
        .expect("quiesce runs");
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    if stderr.contains(KERNEL_UNAVAILABLE) {
        eprintln!("skipped: {}", stderr.trim());
        return None;
    }
    let json: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("JSON on stdout ({e}); stderr:\n{stderr}"));
    assert!(report.exists(), "the report is written");
    let dom = dump_dom(&report, &dir.path().join("chromium-profile"));
    let tag = svg_tag(&dom);
    assert_eq!(attr(tag, "data-rendered"), Some("true"), "{tag}");
    let marks: u64 = attr(tag, "data-marks").unwrap().parse().unwrap();
    assert!(
        marks > 100,
        "a lab run draws nodes, pods and request bars: {marks}"
    );
    Some((json, stderr, out.status))
}

/// What every quiesce run must show, whatever carries the traffic.
fn assert_quiesce_dropped_nothing(json: &Value, stderr: &str, status: std::process::ExitStatus) {
    assert!(status.success(), "{json:#}\n{stderr}");
    assert_eq!(json["nodes_replaced"], 3, "{json:#}");
    assert!(
        json["requests"]["sent"].as_u64().unwrap() >= 5000,
        "{json:#}"
    );
    assert_eq!(json["requests"]["failed"], 0, "{json:#}\n{stderr}");
    let phases: Vec<&str> = json["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        phases,
        [
            "cluster-ready",
            "traffic-warmup",
            "refresh",
            "traffic-cooldown",
            "total"
        ]
    );
    assert!(
        stderr.contains("requests so far"),
        "progress is shown while it works: {stderr}"
    );
    for name in ["I1", "I2", "I3", "I4", "I5"] {
        assert_eq!(json["invariants"][name]["held"], true, "{name}: {json:#}");
        assert!(
            json["invariants"][name]["checked"].as_u64().unwrap() > 0,
            "{json:#}"
        );
    }
}

/// What every naive run must show, whatever carries the traffic.
fn assert_naive_failed_with_causes(json: &Value, stderr: &str, status: std::process::ExitStatus) {
    assert!(status.success(), "{json:#}\n{stderr}");
    assert_eq!(json["nodes_replaced"], 3, "{json:#}");
    let failed = json["requests"]["failed"].as_u64().unwrap();
    assert!(failed > 0, "{json:#}");
    let causes = json["requests"]["by_cause"].as_object().unwrap();
    assert_eq!(
        causes.values().map(|n| n.as_u64().unwrap()).sum::<u64>(),
        failed,
        "every failure has a cause: {json:#}"
    );
    assert!(
        causes
            .keys()
            .all(|c| ["refused", "reset", "5xx", "timeout"].contains(&c.as_str())),
        "{json:#}"
    );
}

#[test]
fn quiesce_replaces_every_node_without_dropping_a_request() {
    let (json, stderr, status) = lab(&["--dataplane", "userspace"]).expect("userspace runs");
    assert_quiesce_dropped_nothing(&json, &stderr, status);
    assert_pods_were_processes(&json, true);
    assert_eq!(json["dataplane"], "userspace", "{json:#}");
    assert!(json["kernel"].is_null(), "{json:#}");
    assert!(stderr.starts_with("dataplane: userspace"), "{stderr}");
}

/// The checks are shown to catch a drainer that breaks its guarantee: one that sends CONTINUE
/// as soon as the node's pods are gone, before their replacements are Ready (the apps stop
/// half a second after SIGTERM; a replacement takes a second from its start to Ready).
#[test]
fn a_drainer_that_skips_the_replacement_gate_is_caught_by_i1_and_fails_the_run() {
    let (json, stderr, status) = lab_with_env(
        &[
            "--dataplane",
            "userspace",
            "--drain-delay",
            "500ms",
            "--propagation-delay",
            "100ms",
        ],
        &[("QUIESCE_LAB_SABOTAGE", "skip-replacement-gate")],
    )
    .expect("userspace runs");
    assert_eq!(status.code(), Some(1), "{json:#}\n{stderr}");
    assert!(
        stderr.contains("broken on purpose: skip-replacement-gate"),
        "{stderr}"
    );
    assert_eq!(json["sabotage"], "skip-replacement-gate", "{json:#}");
    assert_eq!(json["invariants"]["I1"]["held"], false, "{json:#}");
    let violations = json["invariants"]["I1"]["violations"].as_array().unwrap();
    assert!(
        violations
            .iter()
            .any(|v| v.as_str().unwrap().contains("Ready elsewhere, below its")),
        "{json:#}"
    );
}

/// The roll under the chaos schedule of seed 1 (API, AWS, delivery and drainer faults, a
/// Lease handover and a racing drainer) keeps every guarantee, judged from the outside. One
/// seed in the suite (each run takes a minute of the machine); the README's figures come from
/// seeds 1 to 5 run by hand.
#[test]
fn the_roll_under_chaos_seed_1_keeps_every_guarantee() {
    let (json, stderr, status) =
        lab(&["--dataplane", "userspace", "--chaos", "--seed", "1"]).expect("userspace runs");
    assert!(status.success(), "{json:#}\n{stderr}");
    assert_eq!(json["nodes_replaced"], 3, "{json:#}");
    assert_eq!(json["requests"]["failed"], 0, "{json:#}");
    for name in ["I1", "I2", "I3", "I4", "I5"] {
        assert_eq!(json["invariants"][name]["held"], true, "{name}: {json:#}");
    }
    let injected = json["faults"]["injected"].as_object().unwrap();
    assert!(json["faults"]["total"].as_u64().unwrap() >= 20, "{json:#}");
    assert!(injected.keys().any(|k| k.starts_with("api-")), "{json:#}");
    assert!(injected.keys().any(|k| k.starts_with("aws-")), "{json:#}");
    let restarts = json["drainer"]["restarts"].as_array().unwrap();
    assert!(restarts.len() >= 2, "{json:#}");
    assert!(restarts.iter().all(|r| r["phase"].is_string()), "{json:#}");
    // One action per run is given up on (a load balancer holds its drained instance) and
    // its drainer stopped while the node's record said so; Auto Scaling terminated the
    // instance all the same, so every node was still replaced (asserted above).
    assert!(
        restarts
            .iter()
            .any(|r| r["phase"] == "abandoning" && r["record"] == "abandoning"),
        "{json:#}"
    );
    assert!(
        json["replacements"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["result"] == "terminated"),
        "{json:#}"
    );
}

/// The same roll driven through quiesce-lambda's handler: invocations that end at their
/// deadline (a drain resumed by the next from the record on the Node), two at once on the
/// duplicated deliveries, under the API, AWS and delivery faults of seed 1.
#[test]
fn the_roll_on_the_lambda_face_in_slices_keeps_every_guarantee() {
    let (json, stderr, status) = lab(&[
        "--dataplane",
        "userspace",
        "--chaos",
        "--seed",
        "1",
        "--face",
        "lambda",
    ])
    .expect("userspace runs");
    assert!(status.success(), "{json:#}\n{stderr}");
    assert_eq!(json["nodes_replaced"], 3, "{json:#}");
    assert_eq!(json["requests"]["failed"], 0, "{json:#}");
    for name in ["I1", "I2", "I3", "I4", "I5"] {
        assert_eq!(json["invariants"][name]["held"], true, "{name}: {json:#}");
    }
    let lambda = &json["lambda"];
    assert!(
        lambda["slices_given_back"].as_u64().unwrap() >= 1,
        "{json:#}"
    );
    assert!(
        lambda["concurrent_on_duplicates"].as_u64().unwrap() >= 1,
        "{json:#}"
    );
    assert!(
        json["faults"]["injected"]
            .as_object()
            .unwrap()
            .keys()
            .any(|k| k.starts_with("api-")),
        "{json:#}"
    );
}

#[test]
fn the_naive_baseline_drops_requests_and_names_their_causes() {
    let (json, stderr, status) =
        lab(&["--mode", "naive", "--dataplane", "userspace"]).expect("userspace runs");
    assert_naive_failed_with_causes(&json, &stderr, status);
    assert_pods_were_processes(&json, false);
    assert_eq!(json["dataplane"], "userspace", "{json:#}");
}

#[test]
fn quiesce_on_the_kernel_data_plane_drops_nothing_and_counts_every_connection() {
    let Some((json, stderr, status)) = kernel_lab(&[]) else {
        return;
    };
    assert_quiesce_dropped_nothing(&json, &stderr, status);
    assert_kernel_counted(&json);
    assert_pods_were_processes(&json, true);
    // Keep-alive connections the clients held on a pod outlived its rule: conntrack kept
    // them there, as it does on a node, until the pod's app closed them.
    assert!(
        json["kernel"]["conntrack_kept"].as_u64().unwrap() > 0,
        "{json:#}"
    );
}

#[test]
fn the_naive_baseline_on_the_kernel_data_plane_fails_for_the_clusters_reasons() {
    let Some((json, stderr, status)) = kernel_lab(&["--mode", "naive"]) else {
        return;
    };
    assert_naive_failed_with_causes(&json, &stderr, status);
    assert_kernel_counted(&json);
    assert_pods_were_processes(&json, false);
}

/// Network namespaces some process still holds, by inode.
fn live_netns() -> std::collections::BTreeSet<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path().join("ns/net")).ok())
        .map(|l| l.to_string_lossy().into_owned())
        .collect()
}

/// The lab's own processes: its pods' containers (`quiesce __init`, `quiesce __lab-app`, and
/// the `unshare` that starts each one in a PID namespace), by pid.
fn lab_processes() -> std::collections::BTreeSet<u32> {
    let ours = format!("{} __", env!("CARGO_BIN_EXE_quiesce"));
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|raw| {
                String::from_utf8_lossy(&raw)
                    .replace('\0', " ")
                    .contains(&ours)
            })
        })
        .collect()
}

/// Starts the lab on the kernel data plane, interrupts it with SIGINT once traffic flows, and
/// checks that its namespace and every process it started are gone. False when this machine
/// has no kernel data plane (the reason printed).
fn interrupted_run_leaves_nothing() -> bool {
    let mut child = Command::new(env!("CARGO_BIN_EXE_quiesce"))
        .args(["lab", "--dataplane", "kernel", "--output", "json"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("quiesce runs");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    if first.contains(KERNEL_UNAVAILABLE) {
        eprintln!("skipped: {first}");
        let _ = child.wait();
        return false;
    }
    assert!(first.starts_with("dataplane: kernel"), "{first}");
    // The lab has its own namespace: not this test's.
    let ns = std::fs::read_link(format!("/proc/{}/ns/net", child.id()))
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let ours = std::fs::read_link("/proc/self/ns/net").unwrap();
    assert_ne!(
        ns,
        ours.to_string_lossy(),
        "the lab left the host's namespace"
    );
    // Mid-run: the traffic flows through the rules, to the pods' processes.
    let deadline = Instant::now() + Duration::from_secs(120);
    for line in lines.by_ref() {
        let line = line.unwrap();
        if line.contains("traffic:") {
            break;
        }
        assert!(Instant::now() < deadline, "no traffic within 120 s");
    }
    let processes = lab_processes();
    assert!(
        processes.len() >= 4,
        "the Services' pods run as processes: {processes:?}"
    );
    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = child.wait().unwrap();
    assert!(!status.success(), "SIGINT ends the run: {status}");
    // Drain what it still printed, so nothing holds the pipe.
    for _ in lines {}
    // The namespace is anonymous (nothing in /run/netns): held only by the lab's threads and
    // children, it is gone once they are; the children die with the lab (PR_SET_PDEATHSIG, and
    // a PID namespace's processes with its PID 1). A data-plane command that was running at
    // the signal finishes within milliseconds.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left: Vec<u32> = lab_processes().intersection(&processes).copied().collect();
        if left.is_empty() && !live_netns().contains(&ns) {
            return true;
        }
        assert!(
            Instant::now() < deadline,
            "the lab's namespace {ns} or processes {left:?} outlived the lab"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn sigint_mid_run_leaves_no_namespace_and_no_process_behind_and_the_next_run_works() {
    // The second run comes right after the first: nothing the first left (there is nothing)
    // stands in its way.
    if interrupted_run_leaves_nothing() {
        assert!(interrupted_run_leaves_nothing());
    }
}

/// `quiesce lab` as an unprivileged user: as root, dropped to `nobody` with setpriv.
fn unprivileged_lab(args: &[&str]) -> Command {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let root = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        == Some("0");
    let mut command = if root {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(env!("CARGO_BIN_EXE_quiesce"));
        c
    } else {
        Command::new(env!("CARGO_BIN_EXE_quiesce"))
    };
    command.arg("lab").args(args);
    command
}

#[test]
fn without_root_the_first_line_says_the_lab_falls_back_to_userspace() {
    let mut child = unprivileged_lab(&["--output", "json"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("quiesce runs");
    let first = BufReader::new(child.stderr.take().unwrap())
        .lines()
        .next()
        .unwrap()
        .unwrap();
    // Only the first line is under test: the run itself is the userspace tests' job.
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        first.starts_with("dataplane: userspace, because the kernel data plane is not available")
            && first.contains("not running as root"),
        "{first}"
    );

    let out = unprivileged_lab(&["--dataplane", "kernel"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "--dataplane kernel: the kernel data plane is not available: not running as root"
        ),
        "asked for, it is an error that says why: {stderr}"
    );
}

/// `--slo max-failed=0`: the lab rolls through `quiesce roll`'s code (pre-flight, the refresh
/// behind the same trait as Auto Scaling's, the gate on the live failure count), the gate
/// stays green all along, and the roll completes with nothing failed.
#[test]
fn a_roll_gated_on_zero_failures_completes() {
    let (json, stderr, status) =
        lab(&["--dataplane", "userspace", "--slo", "max-failed=0"]).expect("userspace runs");
    assert_quiesce_dropped_nothing(&json, &stderr, status);
    let roll = &json["roll"];
    assert_eq!(roll["outcome"], "complete", "{roll:#}\n{stderr}");
    assert!(roll["refreshId"].is_string(), "{roll:#}");
    assert_eq!(roll["replaced"].as_array().unwrap().len(), 3, "{roll:#}");
    assert_eq!(roll["breaches"], serde_json::json!([]), "{roll:#}");
    assert_eq!(
        roll["preflight"]["refusals"],
        serde_json::json!([]),
        "{roll:#}"
    );
    assert!(roll["evaluations"].as_u64().unwrap() >= 2, "{roll:#}");
    assert!(
        stderr.contains("gate green"),
        "progress shows the gate: {stderr}"
    );
}

/// `--mode naive --slo max-failed=20`: the first naive drain breaks the SLO; the gate, read
/// every `evaluateEverySeconds`, sees it at most one interval late — at most 20 + rps × the
/// interval failed by then — and the roll rolls back before another old node goes.
#[test]
fn a_naive_roll_gated_on_twenty_failures_rolls_back_at_the_first_breach() {
    let (json, stderr, status) = lab(&[
        "--mode",
        "naive",
        "--dataplane",
        "userspace",
        "--slo",
        "max-failed=20",
    ])
    .expect("userspace runs");
    assert!(status.success(), "{json:#}\n{stderr}");
    let roll = &json["roll"];
    assert_eq!(roll["outcome"], "rolled-back", "{roll:#}\n{stderr}");
    let interval = roll["evaluateEverySeconds"].as_f64().unwrap();
    let rps = roll["rps"].as_f64().unwrap();
    let bound = 20.0 + rps * interval;
    let breaches = roll["breaches"].as_array().unwrap();
    let at_breach = breaches[0]["value"].as_f64().unwrap();
    assert!(
        at_breach > 20.0 && at_breach <= bound,
        "{at_breach} failed at the breach, bound {bound}: {roll:#}"
    );
    let replaced = json["nodes_replaced"].as_u64().unwrap();
    assert!(replaced < 3, "{json:#}");
    assert_eq!(roll["replaced"].as_array().unwrap().len() as u64, replaced);
    assert!(
        json["replacements"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["rollback"] == true),
        "the rollback replaced the new instances: {json:#}"
    );
}
