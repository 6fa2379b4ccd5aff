//! `quiesce drain --wait-load-balancers` (issue 17): the real binary against the sandbox and
//! moto's ELBv2 (tests/moto/elbv2_ext.py, with its stand-in for the AWS Load Balancer
//! Controller), the AWS SDK configured the usual way, from the environment.

use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::api::PostParams;
use quiesce_sandbox::scenario::Scenario;
use quiesce_sandbox::{Sandbox, SandboxOptions};
use quiesce_testbed::aws::{instance, target_group, with_test_credentials};
use quiesce_testbed::moto::Moto;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drain_waits_for_the_controller_to_deregister_the_fenced_node() {
    let moto = tokio::task::spawn_blocking(Moto::start)
        .await
        .unwrap()
        .expect("moto starts (scripts/test --setup installs it in the venv)");
    let config = quiesce_aws::sdk::sdk_config(&quiesce_aws::sdk::AwsOptions {
        region: Some("us-east-1".into()),
        endpoint_url: Some(moto.url().to_string()),
    })
    .await;
    let config = with_test_credentials(config);
    let instance = instance(&config, "g", &[]).await;
    let elb = aws_sdk_elasticloadbalancingv2::Client::new(&config);
    let vpc = moto.default_vpc().unwrap();
    let tag = [("elbv2.k8s.aws/cluster", "lab")];
    target_group(&elb, &vpc, "k8s-web", "instance", 2, &tag, &[&instance]).await;

    let sandbox = Sandbox::start(SandboxOptions {
        scenario: Scenario::nodes_only(2),
        ..Default::default()
    })
    .await
    .unwrap();
    let node: Node = serde_json::from_value(json!({
        "metadata": {"name": "web-node", "labels": {"kubernetes.io/hostname": "web-node"}},
        "spec": {"providerID": format!("aws:///us-east-1a/{instance}")},
    }))
    .unwrap();
    Api::<Node>::all(sandbox.client())
        .create(&PostParams::default(), &node)
        .await
        .unwrap();
    moto.post(
        "/_quiesce/elbv2/controller",
        &json!({"apiServer": sandbox.url(), "cluster": "lab"}),
    )
    .unwrap();
    let kubeconfig = tempfile::NamedTempFile::new().unwrap();
    sandbox.write_kubeconfig(kubeconfig.path()).unwrap();

    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_quiesce"));
    cmd.args([
        "drain",
        "web-node",
        "--timeout",
        "60s",
        "--exclude-from-load-balancers",
        "--wait-load-balancers",
        "--output",
        "json",
    ])
    .arg("--kubeconfig")
    .arg(kubeconfig.path())
    .env("AWS_ENDPOINT_URL", moto.url())
    .env("AWS_REGION", "us-east-1")
    .env("AWS_ACCESS_KEY_ID", "testing")
    .env("AWS_SECRET_ACCESS_KEY", "testing")
    .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .expect("quiesce drain finished within 120s")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    let phase = report["phases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "targets-deregistered")
        .unwrap_or_else(|| panic!("the phase is in the report: {report:#}"));
    let seconds = phase["seconds"].as_f64().unwrap();
    eprintln!("targets-deregistered at {seconds:.2}s (2 s delay)");
    let log = moto.elbv2_log().unwrap();
    let at = |event: &str| {
        log.iter()
            .find(|e| e["event"] == event && e["target"] == instance.as_str())
            .and_then(|e| e["at"].as_f64())
            .unwrap_or_else(|| panic!("{event} in {log:#?}"))
    };
    assert!(at("drained") - at("deregistered") >= 1.5, "{log:#?}");
    assert!(
        seconds >= 1.5,
        "the drain waited for the 2 s delay: {report:#}"
    );
    sandbox.shutdown().await;
}
