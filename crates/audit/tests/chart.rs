//! Our own Helm chart, rendered by Helm's engine, passes our own audit; and the rule that lets
//! it: a Service that only exposes metrics ports carries no client traffic, so it asks for no
//! preStop delay.

mod common;

use std::path::Path;

use common::{detect_text, rules};
use quiesce_audit::{audit, load};
use quiesce_testbed::helm;
use serde_json::json;

/// A Deployment behind a Service with `ports`, with a readiness probe and no preStop.
fn behind(ports: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: exporter}}\nspec:\n  replicas: 2\n  selector: {{matchLabels: {{app: exporter}}}}\n  template:\n    metadata: {{labels: {{app: exporter}}}}\n    spec:\n      topologySpreadConstraints: [{{maxSkew: 1, topologyKey: kubernetes.io/hostname, whenUnsatisfiable: ScheduleAnyway, labelSelector: {{matchLabels: {{app: exporter}}}}}}]\n      containers:\n        - name: app\n          image: example/exporter:1\n          readinessProbe: {{httpGet: {{path: /, port: 9100}}}}\n---\napiVersion: v1\nkind: Service\nmetadata: {{name: exporter}}\nspec: {{selector: {{app: exporter}}, ports: {ports}}}\n---\napiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata: {{name: exporter}}\nspec: {{maxUnavailable: 1, selector: {{matchLabels: {{app: exporter}}}}}}\n"
    )
}

#[test]
fn a_metrics_only_service_needs_no_prestop_delay() {
    for ports in [
        "[{name: metrics, port: 9100}]",
        "[{name: http-metrics, port: 8080}, {name: https-metrics, port: 8443}]",
    ] {
        let findings = detect_text(&behind(ports));
        assert!(findings.is_empty(), "{ports}: {findings:#?}");
    }
}

#[test]
fn a_service_with_any_other_port_still_needs_one() {
    for ports in [
        "[{name: http, port: 8080}, {name: metrics, port: 9100}]",
        // An unnamed port may carry anything.
        "[{port: 9100}]",
        "[{name: metricsproxy, port: 9100}]",
    ] {
        assert_eq!(
            rules(&detect_text(&behind(ports))),
            ["no-prestop-delay"],
            "{ports}"
        );
    }
}

#[test]
fn the_rendered_chart_passes_the_audit() {
    for values in [json!(null), json!({"serviceMonitor": {"enabled": true}})] {
        let rendered = helm::template(&helm::chart_dir(), "quiesce", "kube-system", &values)
            .and_then(|r| r.stream())
            .expect("the chart renders");
        let objects = load::parse(Path::new("chart.yaml"), &rendered).unwrap();
        let (findings, workloads) = audit(&objects, &common::opts(&[]));
        assert_eq!(workloads, 1, "{values}");
        assert!(findings.is_empty(), "{values}: {findings:#?}");
    }
}
