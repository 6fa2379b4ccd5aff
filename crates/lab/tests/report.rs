//! The HTML report opened in a real browser: headless Chromium (Debian's `chromium`, which
//! `scripts/test` installs) loads the file with no network, runs the inline script, and the
//! dumped DOM must show the chart drawn.

use std::time::Instant;

use quiesce_lab::report::render;
use quiesce_testbed::chromium::{attr, dump_dom, svg_tag};
use serde_json::{Value, json};

fn ev(t: f64, kind: &str, subject: &str, detail: Value) -> Value {
    json!({"t": t, "kind": kind, "subject": subject, "detail": detail})
}

/// Two nodes, the first replaced by a third; a web pod evicted and rescheduled; endpoints
/// dipping; requests with a burst of refused and reset failures.
fn synthetic_timeline() -> Value {
    let web = |node: &str| json!({"node": node, "namespace": "default", "workload": "web"});
    let mut events = vec![
        ev(0.0, "node-launched", "node-1", json!({})),
        ev(0.0, "node-ready", "node-1", json!({})),
        ev(0.0, "node-launched", "node-2", json!({})),
        ev(0.1, "node-ready", "node-2", json!({})),
        ev(0.2, "pod-scheduled", "default/web-a", web("node-1")),
        ev(1.2, "pod-ready", "default/web-a", web("node-1")),
        ev(0.2, "pod-scheduled", "default/web-b", web("node-2")),
        ev(1.2, "pod-ready", "default/web-b", web("node-2")),
        ev(1.5, "endpoints", "web", json!({"ready": 2})),
        ev(3.0, "node-launched", "node-3", json!({})),
        ev(3.5, "node-ready", "node-3", json!({})),
        ev(
            4.0,
            "hook-started",
            "node-1",
            json!({"transition": "terminating"}),
        ),
        ev(4.1, "node-cordoned", "node-1", json!({})),
        ev(4.2, "eviction", "default/web-a", json!({})),
        ev(4.2, "pod-terminating", "default/web-a", web("node-1")),
        ev(
            4.2,
            "prestop",
            "default/web-a",
            json!({"command": "quiesce-init prestop"}),
        ),
        ev(4.3, "sigterm", "default/web-a", json!({})),
        ev(
            4.4,
            "process-exited",
            "default/web-a",
            json!({"status": "exit 0"}),
        ),
        ev(4.25, "pod-scheduled", "default/web-c", web("node-3")),
        ev(5.2, "endpoints", "web", json!({"ready": 1})),
        ev(
            5.25,
            "rules",
            "web",
            json!({"endpoints": ["127.0.1.2:8080"],
                "removed": [{"pod_ip": "10.244.0.1", "kept_by_conntrack": 2}]}),
        ),
        ev(5.3, "pod-ready", "default/web-c", web("node-3")),
        ev(5.6, "pod-gone", "default/web-a", web("node-1")),
        ev(6.3, "endpoints", "web", json!({"ready": 2})),
        ev(7.0, "node-terminated", "node-1", json!({})),
        // A subject that would end the data <script> if it were not escaped.
        ev(7.5, "note", "</script><b>not markup</b>", json!({})),
    ];
    events.sort_by(|a, b| a["t"].as_f64().partial_cmp(&b["t"].as_f64()).unwrap());
    let mut requests = Vec::new();
    for i in 0..36 {
        let t = f64::from(i) * 0.25;
        let failed = match i {
            17 => json!({"refused": 3}),
            18 => json!({"refused": 2, "reset": 1}),
            _ => json!({}),
        };
        requests.push(json!({"t": t, "service": "web", "ok": 40, "failed": failed}));
    }
    json!({"duration": 9.0, "bucket_seconds": 0.25, "events": events, "requests": requests})
}

fn summary() -> Value {
    json!({
        "mode": "naive", "dataplane": "kernel", "nodes": 2, "nodes_replaced": 1,
        "kernel": {"sep_packets": 61, "conntrack_kept": 2},
        "requests": {"sent": 1446, "ok": 1440, "failed": 6, "by_cause": {"refused": 5, "reset": 1},
            "by_service": {"web": {"sent": 1446, "ok": 1440, "failed": 6, "by_cause": {"refused": 5, "reset": 1}}}},
        "phases": {"launch": 3.5, "drain": 2.9}
    })
}

#[test]
fn the_report_renders_in_headless_chromium() {
    let html = render(&synthetic_timeline(), &summary());
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(
        !html.contains("</script><b>"),
        "data cannot close its script element"
    );
    assert!(
        !html.contains("http://") || !html.contains("src=\"http"),
        "no network loads"
    );

    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("report.html");
    std::fs::write(&page, &html).unwrap();
    let profile = dir.path().join("profile");
    let started = Instant::now();
    let dom = dump_dom(&page, &profile);
    eprintln!("chromium took {:?}", started.elapsed());

    let tag = svg_tag(&dom);
    assert_eq!(
        attr(tag, "data-rendered"),
        Some("true"),
        "the script finished drawing: {tag}"
    );
    let marks: u64 = attr(tag, "data-marks")
        .and_then(|m| m.parse().ok())
        .unwrap_or_else(|| panic!("data-marks missing: {tag}"));
    // 3 node lanes (+ cordon, 3 ready dots, a terminated line, a hook marker), 3 pods with
    // their segments, SIGTERM, eviction, endpoint line, 36 ok bars, failure bars.
    assert!(marks > 50, "marks drawn: {marks}");
    for text in [
        "node-1",
        "node-3",
        "ready endpoints",
        "quiesce lab \u{2014} mode naive, kernel data plane",
        "61 connections through KUBE-SEP rules, 2 kept by conntrack",
        "6 failed",
        "refused: 5",
    ] {
        assert!(dom.contains(text), "the page shows {text:?}");
    }
    for tooltip in [
        "web-a (web): preStop hook at",
        "web-a (web): process exit 0 at",
        "web: rules rewritten at",
        "removed 10.244.0.1 (conntrack kept 2)",
    ] {
        assert!(
            dom.contains(tooltip),
            "the page has the tooltip {tooltip:?}"
        );
    }
    assert!(
        dom.contains("&lt;/script&gt;&lt;b&gt;not markup"),
        "the odd subject stays text (as a tooltip)"
    );
}

#[test]
fn an_empty_run_still_renders_a_page() {
    let html = render(&json!({}), &json!({}));
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("empty.html");
    std::fs::write(&page, &html).unwrap();
    let dom = dump_dom(&page, &dir.path().join("profile"));
    let tag = svg_tag(&dom);
    assert_eq!(attr(tag, "data-rendered"), Some("true"), "{tag}");
    assert_eq!(attr(tag, "data-marks"), Some("0"), "{tag}");
}
