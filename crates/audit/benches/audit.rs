//! Objects per second: parse and audit a generated 10,000-object manifest stream
//! (2,500 × Deployment + Service + PodDisruptionBudget + ConfigMap, each Deployment reading its
//! ConfigMap through envFrom so stack detection follows the reference), once with the stacks
//! detected from the manifests and once with `--stack eureka`. `cargo bench -p quiesce-audit`.

use std::path::Path;
use std::time::Instant;

use quiesce_audit::{Options, audit, load};
use quiesce_core::budget::Stack;

fn corpus(apps: usize) -> String {
    (0..apps)
        .map(|i| {
            format!(
                "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: app{i}, namespace: ns{ns}}}\nspec:\n  replicas: 2\n  selector: {{matchLabels: {{app: app{i}}}}}\n  template:\n    metadata: {{labels: {{app: app{i}}}}}\n    spec:\n      terminationGracePeriodSeconds: 30\n      containers:\n        - name: app\n          image: example/app:1\n          envFrom: [{{configMapRef: {{name: app{i}}}}}]\n          readinessProbe: {{httpGet: {{path: /, port: 80}}}}\n          lifecycle: {{preStop: {{sleep: {{seconds: 10}}}}}}\n---\napiVersion: v1\nkind: Service\nmetadata: {{name: app{i}, namespace: ns{ns}}}\nspec: {{selector: {{app: app{i}}}}}\n---\napiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata: {{name: app{i}, namespace: ns{ns}}}\nspec: {{maxUnavailable: 1, selector: {{matchLabels: {{app: app{i}}}}}}}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: app{i}, namespace: ns{ns}}}\ndata: {{key: value}}\n---\n",
                ns = i % 50
            )
        })
        .collect()
}

fn main() {
    let text = corpus(2_500);
    let detected = Options::default();
    let eureka = Options {
        stacks: vec![Stack::Eureka],
        ..Options::default()
    };
    for (round, (mode, opts)) in [("detected", &detected), ("--stack eureka", &eureka)]
        .into_iter()
        .cycle()
        .take(6)
        .enumerate()
    {
        let round = round + 1;
        let start = Instant::now();
        let objects = load::parse(Path::new("bench.yaml"), &text).expect("generated corpus parses");
        let parsed = start.elapsed();
        let (findings, workloads) = audit(&objects, opts);
        let total = start.elapsed();
        println!(
            "round {round} ({mode}): {} objects, {workloads} workloads, {} findings; parse {parsed:?}, total {total:?}: {:.0} objects/s",
            objects.len(),
            findings.len(),
            objects.len() as f64 / total.as_secs_f64()
        );
    }
}
