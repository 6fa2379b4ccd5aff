//! `quiesce roll` as an operator or CI runs it: the real binary against moto (Auto Scaling with
//! Instance Refresh, SQS, launch templates) and the sandbox, with the production drainer
//! answering the hooks. Pre-flight refuses with its reasons and fixes in JSON; the roll to an
//! AMI (a new launch template version) then completes and says so in `roll.outcome`.

#[path = "../../roll/tests/support/mod.rs"]
mod support;

use std::process::{Command, Stdio};

fn quiesce_roll(
    bed: &support::Bed,
    kubeconfig: &std::path::Path,
    extra: &[&str],
) -> (i32, serde_json::Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_quiesce"))
        .args(["roll", "--asg", support::GROUP])
        .args([
            "--min-healthy",
            "66",
            "--checkpoints",
            "50,100",
            "--checkpoint-delay",
            "1s",
        ])
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["--endpoint-url", bed.moto.url(), "--region", "us-east-1"])
        .args(["--output", "json", "--log", "warn"])
        .args(extra)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let json = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {stdout}\n--- stderr\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), json)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_binary_refuses_without_a_drainer_then_rolls_the_group() {
    let mut bed = support::bed(support::GroupSetup::default(), "").await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    bed.sandbox.write_kubeconfig(&kubeconfig).unwrap();

    let (code, json) = tokio::task::block_in_place(|| {
        quiesce_roll(
            &bed,
            &kubeconfig,
            &[
                "--launch-template-version",
                "2",
                "--drainer-lease",
                "kube-system/quiesce-drainer",
            ],
        )
    });
    assert_eq!(code, 1, "{json:#}");
    assert_eq!(json["roll"]["outcome"], "refused", "{json:#}");
    let refusals = json["roll"]["preflight"]["refusals"].as_array().unwrap();
    assert_eq!(refusals.len(), 1, "{json:#}");
    assert!(
        refusals[0]["reason"]
            .as_str()
            .unwrap()
            .contains("no live drainer"),
        "{json:#}"
    );
    assert!(
        refusals[0]["fix"]
            .as_str()
            .unwrap()
            .contains("--drainer-lease"),
        "{json:#}"
    );
    assert_eq!(bed.members().await.len(), 3, "nothing changed");
    assert!(bed.members().await.iter().all(|(_, _, v)| v == "1"));

    bed.run_drainer();
    bed.run_kubelets();
    let (code, json) = tokio::task::block_in_place(|| {
        quiesce_roll(
            &bed,
            &kubeconfig,
            &["--image-id", "ami-0new", "--drainer-lease", "none"],
        )
    });
    assert_eq!(json["roll"]["outcome"], "complete", "{json:#}");
    assert_eq!(code, 0);
    assert_eq!(
        json["roll"]["replaced"].as_array().unwrap().len(),
        3,
        "{json:#}"
    );
    assert_eq!(json["roll"]["preflight"]["batch"], 1, "{json:#}");
    assert!(
        bed.members()
            .await
            .iter()
            .all(|(_, s, v)| s == "InService" && v == "3"),
        "every instance on the AMI's new launch template version 3: {:?}",
        bed.members().await
    );
}
