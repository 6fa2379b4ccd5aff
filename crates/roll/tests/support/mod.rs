//! A node group to roll: moto (quiesce's lifecycle-hook and Instance Refresh extensions) for
//! Auto Scaling, SQS and EC2 launch templates, the sandbox for Kubernetes, the production
//! drainer answering every hook, and a stand-in for the kubelets of new instances (a Node
//! registered for each instance that launches).

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_autoscaling::types::{LaunchTemplateSpecification, RetentionAction};
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, PostParams};
use quiesce_aws::hooks::AutoScaling;
use quiesce_aws::queue::Sqs;
use quiesce_aws::sdk::{AwsOptions, sdk_config};
use quiesce_drainer::metrics::Metrics;
use quiesce_drainer::nodes::NodeIndex;
use quiesce_drainer::{Handler, Settings, WorkerSettings};
use quiesce_roll::aws::AwsRefresh;
use quiesce_roll::refresh::Preferences;
use quiesce_roll::run::{OnBreach, RollSpec, Undrainable};
use quiesce_sandbox::{Sandbox, SandboxOptions, scenario::Scenario};
use quiesce_testbed::aws::{queue, with_test_credentials};
use quiesce_testbed::moto::Moto;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::time::Instant;

pub const GROUP: &str = "workers";

/// Workloads that drain in seconds; a budget letting one web pod go at a time.
pub const WORKLOADS: &str = r#"
objects:
  - apiVersion: apps/v1
    kind: Deployment
    metadata: {name: web, namespace: default}
    spec:
      replicas: 3
      selector: {matchLabels: {app: web}}
      strategy: {type: RollingUpdate, rollingUpdate: {maxSurge: 1, maxUnavailable: 0}}
      template:
        metadata:
          labels: {app: web}
          annotations: {sandbox.quiesce.io/startup-delay: 1s, sandbox.quiesce.io/prestop-delay: 1s}
        spec:
          terminationGracePeriodSeconds: 3
          containers: [{name: web, image: web:1, resources: {requests: {cpu: 100m, memory: 64Mi}}}]
  - apiVersion: policy/v1
    kind: PodDisruptionBudget
    metadata: {name: web, namespace: default}
    spec: {maxUnavailable: 1, selector: {matchLabels: {app: web}}}
"#;

/// How the group is set up.
#[derive(Debug, Clone)]
pub struct GroupSetup {
    pub size: i32,
    pub terminate_hook: Option<&'static str>,
    pub launch_hook: bool,
    pub retain: bool,
}

impl Default for GroupSetup {
    fn default() -> Self {
        GroupSetup {
            size: 3,
            terminate_hook: Some("ABANDON"),
            launch_hook: true,
            retain: true,
        }
    }
}

pub struct Bed {
    pub moto: Moto,
    pub sandbox: Sandbox,
    pub aws: aws_config::SdkConfig,
    pub asg: aws_sdk_autoscaling::Client,
    pub refresh: AwsRefresh,
    pub queue_url: String,
    pub template: String,
    /// The instances the group started with, in node order (`node-1` is the first).
    pub instances: Vec<String>,
    stop: Vec<watch::Sender<bool>>,
}

impl Drop for Bed {
    fn drop(&mut self) {
        for s in &self.stop {
            let _ = s.send(true);
        }
    }
}

pub async fn bed(setup: GroupSetup, extra: &str) -> Bed {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("info,aws=warn,hyper=warn")
        .try_init();
    let moto = tokio::task::spawn_blocking(Moto::start)
        .await
        .unwrap()
        .expect("moto starts (scripts/test --setup installs it in the venv)");
    let base = sdk_config(&AwsOptions {
        region: Some("us-east-1".into()),
        endpoint_url: Some(moto.url().to_string()),
    })
    .await;
    let aws = with_test_credentials(base);
    let asg = aws_sdk_autoscaling::Client::new(&aws);
    let sqs = aws_sdk_sqs::Client::new(&aws);
    let (queue_url, queue_arn) = queue(&sqs, "lifecycle").await;
    let addr = moto.url().trim_start_matches("http://").to_string();
    let created = ec2_call(
        &addr,
        "Action=CreateLaunchTemplate&Version=2016-11-15&LaunchTemplateName=workers\
         &LaunchTemplateData.ImageId=ami-12c6146b&LaunchTemplateData.InstanceType=t3.medium",
    );
    let template = element(&created, "launchTemplateId");
    ec2_call(
        &addr,
        &format!(
            "Action=CreateLaunchTemplateVersion&Version=2016-11-15&LaunchTemplateId={template}\
             &LaunchTemplateData.ImageId=ami-0patched&LaunchTemplateData.InstanceType=t3.medium"
        ),
    );
    let mut group = asg
        .create_auto_scaling_group()
        .auto_scaling_group_name(GROUP)
        .launch_template(
            LaunchTemplateSpecification::builder()
                .launch_template_id(&template)
                .version("1")
                .build(),
        )
        .min_size(0)
        .max_size(setup.size * 2 + 2)
        .desired_capacity(setup.size)
        .availability_zones("us-east-1a");
    if setup.retain {
        group = group
            .instance_lifecycle_policy(quiesce_testbed::aws::on_abandon(RetentionAction::Retain));
    }
    group.send().await.unwrap();
    if let Some(result) = setup.terminate_hook {
        put_hook(
            &asg,
            "quiesce-drain",
            "autoscaling:EC2_INSTANCE_TERMINATING",
            result,
            &queue_arn,
        )
        .await;
    }
    if setup.launch_hook {
        put_hook(
            &asg,
            "quiesce-launch",
            "autoscaling:EC2_INSTANCE_LAUNCHING",
            "ABANDON",
            &queue_arn,
        )
        .await;
    }
    let instances: Vec<String> = asg
        .describe_auto_scaling_groups()
        .auto_scaling_group_names(GROUP)
        .send()
        .await
        .unwrap()
        .auto_scaling_groups()[0]
        .instances()
        .iter()
        .filter_map(|i| i.instance_id().map(str::to_string))
        .collect();
    let sandbox = Sandbox::start(SandboxOptions {
        scenario: Scenario::default(),
        ..SandboxOptions::default()
    })
    .await
    .unwrap();
    // The instances' kubelets register their Nodes first, so the scheduler spreads the
    // replicas over them.
    for (i, instance) in instances.iter().enumerate() {
        register(&sandbox, &format!("node-{}", i + 1), instance).await;
    }
    let ready = || async {
        Api::<Node>::all(sandbox.client())
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .iter()
            .filter(|n| quiesce_drainer::nodes::is_ready(n))
            .count()
            == instances.len()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ready().await {
        assert!(Instant::now() < deadline, "the nodes never became Ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut objects = Scenario::from_yaml(WORKLOADS, "roll test").unwrap().objects;
    if !extra.is_empty() {
        objects.extend(Scenario::from_yaml(extra, "extra").unwrap().objects);
    }
    for object in objects {
        create(&sandbox, object).await;
    }
    let refresh = AwsRefresh::new(&aws);
    let bed = Bed {
        moto,
        sandbox,
        aws,
        asg,
        refresh,
        queue_url,
        template,
        instances,
        stop: Vec::new(),
    };
    bed.wait_for("every web pod Ready", Duration::from_secs(30), || async {
        ready_pods(&bed.sandbox, "app=web").await == 3
    })
    .await;
    bed
}

async fn put_hook(
    asg: &aws_sdk_autoscaling::Client,
    name: &str,
    transition: &str,
    result: &str,
    target: &str,
) {
    asg.put_lifecycle_hook()
        .auto_scaling_group_name(GROUP)
        .lifecycle_hook_name(name)
        .lifecycle_transition(transition)
        .heartbeat_timeout(30)
        .default_result(result)
        .notification_target_arn(target)
        .role_arn("arn:aws:iam::123456789012:role/lifecycle")
        .send()
        .await
        .unwrap();
}

/// The kubelet of `instance` registers its Node.
pub async fn register(sandbox: &Sandbox, name: &str, instance: &str) {
    let node: Node = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "spec": {"providerID": format!("aws:///us-east-1a/{instance}")},
    }))
    .unwrap();
    Api::<Node>::all(sandbox.client())
        .create(&PostParams::default(), &node)
        .await
        .unwrap();
}

/// Creates one of the test's workload objects through the API.
async fn create(sandbox: &Sandbox, object: Value) {
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::core::v1::Pod;
    use k8s_openapi::api::policy::v1::PodDisruptionBudget;
    let client = sandbox.client();
    let pp = PostParams::default();
    match object["kind"].as_str() {
        Some("Deployment") => {
            Api::<Deployment>::namespaced(client, "default")
                .create(&pp, &serde_json::from_value(object).unwrap())
                .await
                .unwrap();
        }
        Some("PodDisruptionBudget") => {
            Api::<PodDisruptionBudget>::namespaced(client, "default")
                .create(&pp, &serde_json::from_value(object).unwrap())
                .await
                .unwrap();
        }
        Some("Pod") => {
            Api::<Pod>::namespaced(client, "default")
                .create(&pp, &serde_json::from_value(object).unwrap())
                .await
                .unwrap();
        }
        other => panic!("the roll tests create no {other:?}"),
    }
}

/// One EC2 Query API call to moto (launch templates: aws-sdk-ec2 is no dependency for two
/// set-up calls); the response body.
/// An IAM role in moto (CreateRole), which moto's CreateFunction requires to exist; its ARN.
pub fn iam_role(moto: &Moto, name: &str) -> String {
    let addr = moto.url().trim_start_matches("http://");
    // Percent-encoded by hand: this module is also compiled into the CLI's roll test, which has
    // no URL-encoding crate.
    let trust: String = br#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"lambda.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#
        .iter()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' => (*b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    let created = query_call(
        addr,
        "iam",
        &format!(
            "Action=CreateRole&Version=2010-05-08&RoleName={name}&AssumeRolePolicyDocument={trust}"
        ),
    );
    element(&created, "Arn")
}

fn ec2_call(addr: &str, body: &str) -> String {
    query_call(addr, "ec2", body)
}

/// One Query-protocol call of `service` (its signing name) to moto, unsigned; the answer.
fn query_call(addr: &str, service: &str, body: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "POST / HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Authorization: AWS4-HMAC-SHA256 Credential=testing/20261201/us-east-1/{service}/aws4_request, SignedHeaders=host, Signature=0\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 200") || answer.starts_with("HTTP/1.0 200"),
        "{answer}"
    );
    answer
}

fn element(xml: &str, name: &str) -> String {
    let open = format!("<{name}>");
    let start = xml
        .find(&open)
        .unwrap_or_else(|| panic!("no {name} in {xml}"))
        + open.len();
    let end = xml[start..].find(&format!("</{name}>")).unwrap();
    xml[start..start + end].to_string()
}

pub async fn ready_pods(sandbox: &Sandbox, selector: &str) -> usize {
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::all(sandbox.client());
    pods.list(&kube::api::ListParams::default().labels(selector))
        .await
        .unwrap()
        .items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none() && quiesce_core::gate::is_ready(p))
        .count()
}

impl Bed {
    /// A CloudWatch (Query protocol) call to moto: alarms for the refresh's
    /// AlarmSpecification (aws-sdk-cloudwatch is no dependency for two test calls).
    pub fn cloudwatch(&self, body: &str) -> String {
        let addr = self.moto.url().trim_start_matches("http://").to_string();
        query_call(&addr, "monitoring", &format!("{body}&Version=2010-08-01"))
    }

    /// The production drainer (queue loop and handler) answering every hook of the group.
    pub fn run_drainer(&mut self) -> Arc<Handler<AutoScaling>> {
        let settings = Settings {
            drain_margin: Duration::from_secs(20),
            replacement_startup: Duration::from_secs(2),
            claim_hold: Duration::from_secs(3),
            launch_timeout: Duration::from_secs(60),
            ..Settings::default()
        };
        let handler = Arc::new(Handler::new(
            self.sandbox.client(),
            NodeIndex::listed(self.sandbox.client()),
            AutoScaling::new(&self.aws),
            settings,
            Arc::new(Metrics::default()),
        ));
        let (stop, rx) = watch::channel(false);
        let worker = WorkerSettings {
            visibility: Duration::from_secs(30),
            wait: Duration::from_secs(1),
            retry_after: Duration::from_secs(1),
            ..WorkerSettings::default()
        };
        tokio::spawn(quiesce_drainer::worker::run(
            Arc::new(Sqs::new(&self.aws, &self.queue_url)),
            handler.clone(),
            worker,
            rx,
        ));
        self.stop.push(stop);
        handler
    }

    /// Registers a Node for every instance that launches (the new instances' kubelets),
    /// until the bed is dropped or ten minutes pass.
    pub fn run_kubelets(&mut self) {
        let (stop, mut rx) = watch::channel(false);
        self.stop.push(stop);
        let asg = self.asg.clone();
        let sandbox_client = self.sandbox.client();
        let known: Vec<String> = self.instances.clone();
        tokio::spawn(async move {
            let mut known = known;
            let deadline = Instant::now() + Duration::from_secs(600);
            while Instant::now() < deadline && !*rx.borrow() {
                if let Ok(out) = asg
                    .describe_auto_scaling_groups()
                    .auto_scaling_group_names(GROUP)
                    .send()
                    .await
                {
                    for i in out.auto_scaling_groups().iter().flat_map(|g| g.instances()) {
                        let Some(id) = i.instance_id() else { continue };
                        let state = i.lifecycle_state().map(|s| s.as_str()).unwrap_or("");
                        if known.iter().any(|k| k == id) || state.starts_with("Terminating") {
                            continue;
                        }
                        let node: Node = serde_json::from_value(json!({
                            "metadata": {"name": format!("node-{id}"), "labels": {"kubernetes.io/hostname": format!("node-{id}")}},
                            "spec": {"providerID": format!("aws:///us-east-1a/{id}")},
                        }))
                        .unwrap();
                        if Api::<Node>::all(sandbox_client.clone())
                            .create(&PostParams::default(), &node)
                            .await
                            .is_ok()
                        {
                            known.push(id.to_string());
                        }
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(300)) => {}
                    _ = rx.changed() => {}
                }
            }
        });
    }

    pub fn spec(&self, preferences: Preferences) -> RollSpec {
        RollSpec {
            group: GROUP.into(),
            version: "2".into(),
            preferences,
            on_breach: OnBreach::Rollback,
            undrainable: Undrainable::Skip,
            hold_max: Duration::from_secs(120),
            evaluate_every: Duration::from_secs(1),
            poll_every: Duration::from_millis(500),
            deadline: Duration::from_secs(300),
        }
    }

    /// moto's record of every lifecycle action.
    pub async fn actions(&self) -> Vec<Value> {
        let moto = &self.moto;
        tokio::task::block_in_place(|| moto.lifecycle_actions().unwrap())
    }

    /// The group's instances: (id, state, launch template version).
    pub async fn members(&self) -> Vec<(String, String, String)> {
        self.asg
            .describe_auto_scaling_groups()
            .auto_scaling_group_names(GROUP)
            .send()
            .await
            .unwrap()
            .auto_scaling_groups()[0]
            .instances()
            .iter()
            .map(|i| {
                (
                    i.instance_id().unwrap_or_default().to_string(),
                    i.lifecycle_state()
                        .map(|s| s.as_str().to_string())
                        .unwrap_or_default(),
                    i.launch_template()
                        .and_then(|t| t.version())
                        .unwrap_or_default()
                        .to_string(),
                )
            })
            .collect()
    }

    /// Polls `cond` until it holds; panics with `what` at the deadline.
    pub async fn wait_for<F, Fut>(&self, what: &str, limit: Duration, mut cond: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = Instant::now() + limit;
        loop {
            if cond().await {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {limit:?} waiting for {what}\n--- moto log\n{}",
                self.moto.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A server answering Prometheus's `/api/v1/query` with the value `value` holds (the shape of
/// the documented instant-query answer); what the roll's gate reads. Not a stand-in for a
/// client: the production HTTP client talks to it over loopback.
pub async fn prometheus(value: Arc<std::sync::Mutex<f64>>) -> String {
    use axum::routing::get;
    let app = axum::Router::new().route(
        "/api/v1/query",
        get(move || {
            let v = *value.lock().unwrap();
            async move {
                axum::Json(json!({
                    "status": "success",
                    "data": {"resultType": "vector", "result": [{"metric": {}, "value": [0, v.to_string()]}]}
                }))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}
