//! `--cluster` against the sandbox: the live objects are audited like files.

use quiesce_audit::{Options, audit, cluster};
use quiesce_core::budget::Stack;
use quiesce_sandbox::scenario::Scenario;
use quiesce_sandbox::{Sandbox, SandboxOptions};

#[tokio::test]
async fn the_live_default_workloads_are_audited() {
    let sandbox = Sandbox::start(SandboxOptions {
        scenario: Scenario::default_for(3),
        ..Default::default()
    })
    .await
    .unwrap();
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
