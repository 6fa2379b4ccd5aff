//! The real control plane starts on loopback and answers both kube-rs and the real kubectl.

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, PostParams};
use quiesce_testbed::ControlPlane;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_kube_rs_and_kubectl() {
    let plane = ControlPlane::start().await.expect("control plane starts");
    let client = plane.client().await.unwrap();
    let version = client.apiserver_version().await.unwrap();
    assert_eq!(
        (version.major.as_str(), version.minor.as_str()),
        ("1", "20")
    );

    let nodes: Api<Node> = Api::all(client);
    let node: Node = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "testbed-node-1"},
        "spec": {"providerID": "aws:///us-east-1a/i-0123456789abcdef0"}
    }))
    .unwrap();
    nodes.create(&PostParams::default(), &node).await.unwrap();

    let out = std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(plane.kubeconfig_path())
        .args(["get", "nodes", "-o", "name"])
        .output()
        .expect("kubectl runs");
    assert!(
        out.status.success(),
        "kubectl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "node/testbed-node-1"
    );
}
