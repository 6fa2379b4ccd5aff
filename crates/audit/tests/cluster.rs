//! `--cluster` against the sandbox: the live objects are audited like files.

use quiesce_audit::{Options, audit, cluster};
use quiesce_core::budget::Stack;
use quiesce_sandbox::scenario::Scenario;
use quiesce_sandbox::{Sandbox, SandboxOptions};

/// The sandbox with its default scenario on 3 nodes (web, api, db, log-agent).
async fn default_sandbox() -> Sandbox {
    Sandbox::start(SandboxOptions {
        scenario: Scenario::default_for(3),
        ..Default::default()
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn the_live_default_workloads_are_audited() {
    let sandbox = default_sandbox().await;
    let objects = cluster::load(&sandbox.client()).await.unwrap();
    sandbox.shutdown().await;
    let opts = Options {
        stacks: vec![Stack::KubeProxy],
        ..Options::default()
    };
    let (findings, workloads) = audit(&objects, &opts);
    assert_eq!(workloads, 4, "web, api, db, log-agent");
    let of = |workload: &str| -> Vec<&str> {
        findings
            .iter()
            .filter(|f| f.workload == workload)
            .map(|f| f.rule)
            .collect()
    };
    assert!(
        of("Deployment default/web").contains(&"no-prestop-delay"),
        "{findings:#?}"
    );
    assert!(
        !of("Deployment default/web").contains(&"no-pdb"),
        "the live PDB selects web"
    );
    assert!(
        of("Deployment default/api").contains(&"single-replica"),
        "{findings:#?}"
    );
    assert!(findings.iter().all(|f| f.source.starts_with("cluster")));
}

#[tokio::test]
async fn live_namespace_labels_switch_on_mesh_detection() {
    use k8s_openapi::api::core::v1::Namespace;
    use kube::api::{Api, Patch, PatchParams};

    let sandbox = default_sandbox().await;
    let namespaces: Api<Namespace> = Api::all(sandbox.client());
    namespaces
        .patch(
            "default",
            &PatchParams::default(),
            &Patch::Merge(
                serde_json::json!({"metadata": {"labels": {"istio-injection": "enabled"}}}),
            ),
        )
        .await
        .unwrap();
    let objects = cluster::load(&sandbox.client()).await.unwrap();
    sandbox.shutdown().await;
    let (findings, _) = audit(&objects, &Options::default());
    let web = findings
        .iter()
        .find(|f| f.rule == "no-prestop-delay" && f.workload == "Deployment default/web")
        .unwrap_or_else(|| panic!("{findings:#?}"));
    assert!(web.message.contains("needed 20s"), "{}", web.message);
    assert_eq!(
        web.evidence[0],
        "istio: Namespace default, label istio-injection=enabled"
    );
}
