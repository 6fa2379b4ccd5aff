//! The detach controller: a VolumeAttachment goes once no pod on its node uses its
//! PersistentVolume, and not before; one for an inline volume (no PersistentVolume) is left.

mod workload_support;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::VolumeAttachment;
use kube::Api;
use kube::api::DeleteParams;
use serde_json::json;
use workload_support::{Cluster, create, eventually};

fn pod(name: &str, node: &str) -> serde_json::Value {
    json!({"metadata": {"name": name}, "spec": {"nodeName": node,
        "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}],
        "containers": [{"name": "app", "image": "app:1"}]}})
}

fn attachment(name: &str, node: &str, pv: Option<&str>) -> serde_json::Value {
    let source = match pv {
        Some(pv) => json!({"persistentVolumeName": pv}),
        None => {
            json!({"inlineVolumeSpec": {"csi": {"driver": "ebs.csi.aws.com", "volumeHandle": "vol-1"}}})
        }
    };
    json!({"metadata": {"name": name},
        "spec": {"attacher": "ebs.csi.aws.com", "nodeName": node, "source": source}})
}

#[tokio::test]
async fn an_attachment_goes_when_the_last_pod_on_its_node_using_the_volume_is_gone() {
    let cluster = Cluster::start().await;
    let client = cluster.client();
    create(
        &Api::<PersistentVolume>::all(client.clone()),
        json!({"metadata": {"name": "data"}, "spec": {"capacity": {"storage": "1Gi"},
            "accessModes": ["ReadWriteMany"],
            "csi": {"driver": "ebs.csi.aws.com", "volumeHandle": "vol-0"}}}),
    )
    .await;
    create(
        &cluster.api::<PersistentVolumeClaim>(),
        json!({"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteMany"],
            "resources": {"requests": {"storage": "1Gi"}}, "volumeName": "data"}}),
    )
    .await;
    let pods = cluster.api::<Pod>();
    for (name, node) in [("a", "node-1"), ("b", "node-2")] {
        create(&pods, pod(name, node)).await;
    }
    for name in ["a", "b"] {
        eventually(&format!("pod {name} running"), || async {
            let p = pods.get(name).await.ok()?;
            (p.status?.phase.as_deref() == Some("Running")).then_some(())
        })
        .await;
    }
    let attachments: Api<VolumeAttachment> = Api::all(client);
    for (name, node, pv) in [
        ("on-1", "node-1", Some("data")),
        ("on-2", "node-2", Some("data")),
        ("inline", "node-3", None),
    ] {
        create(&attachments, attachment(name, node, pv)).await;
    }

    pods.delete("a", &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    eventually("node-1's attachment detached", || async {
        attachments
            .get_opt("on-1")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    let left = |name: &'static str| {
        let attachments = attachments.clone();
        async move { attachments.get_opt(name).await.unwrap().is_some() }
    };
    assert!(left("on-2").await, "pod b on node-2 still uses the volume");
    assert!(
        left("inline").await,
        "an inline volume is not the controller's"
    );
    cluster.stop().await;
}
