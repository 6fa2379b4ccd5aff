//! A lifecycle-hook test bed: moto (with quiesce's lifecycle-hook extension) for Auto Scaling
//! and SQS, and the sandbox for Kubernetes, with one Node per instance of the group.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_autoscaling::types::RetentionAction;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, PostParams};
use quiesce_aws::hooks::AutoScaling;
use quiesce_aws::queue::Sqs;
use quiesce_aws::record::{ANNOTATION, InFlight};
use quiesce_aws::sdk::{AwsOptions, sdk_config};
use quiesce_drainer::metrics::Metrics;
use quiesce_drainer::nodes::NodeIndex;
use quiesce_drainer::{Handler, Settings, WorkerSettings};
use quiesce_sandbox::{Sandbox, SandboxOptions, scenario::Scenario};
use quiesce_testbed::aws::{queue, queue_arn, with_test_credentials};
use quiesce_testbed::moto::Moto;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::time::Instant;

pub const GROUP: &str = "workers";
pub const HOOK: &str = "quiesce-drain";

/// Workloads that drain in seconds: short grace periods and startups.
const WORKLOADS: &str = r#"
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
  - apiVersion: apps/v1
    kind: DaemonSet
    metadata: {name: log-agent, namespace: kube-system}
    spec:
      selector: {matchLabels: {app: log-agent}}
      template:
        metadata: {labels: {app: log-agent}}
        spec:
          containers: [{name: agent, image: agent:1, resources: {requests: {cpu: 10m, memory: 16Mi}}}]
"#;

/// A budget that allows nothing while its pods are not Ready (startup of an hour) and that
/// can allow later: the drain waits, heartbeating, until the workload-derived deadline.
pub const BLOCKER: &str = r#"
objects:
  - apiVersion: apps/v1
    kind: Deployment
    metadata: {name: warming, namespace: default}
    spec:
      replicas: 3
      selector: {matchLabels: {app: warming}}
      template:
        metadata: {labels: {app: warming}, annotations: {sandbox.quiesce.io/startup-delay: 1h}}
        spec:
          terminationGracePeriodSeconds: 2
          containers: [{name: w, image: w:1, resources: {requests: {cpu: 10m, memory: 16Mi}}}]
  - apiVersion: policy/v1
    kind: PodDisruptionBudget
    metadata: {name: warming, namespace: default}
    spec: {minAvailable: 2, selector: {matchLabels: {app: warming}}}
"#;

pub struct Bed {
    pub moto: Moto,
    pub sandbox: Sandbox,
    pub aws: aws_config::SdkConfig,
    pub asg: aws_sdk_autoscaling::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub queue_url: String,
    /// Instances that have a Node, in node order (`node-1` is the first).
    pub instances: Vec<String>,
    /// Instances of the group with no Node in the cluster.
    pub strangers: Vec<String>,
}

/// `nodes` instances with Nodes, `strangers` more without; a terminate hook with
/// `heartbeat_timeout` seconds targeting the queue.
pub async fn bed(nodes: usize, strangers: usize, heartbeat_timeout: i32, extra: &str) -> Bed {
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
    asg.create_launch_configuration()
        .launch_configuration_name("workers")
        .image_id("ami-12c6146b")
        .instance_type("t3.medium")
        .send()
        .await
        .unwrap();
    let total = (nodes + strangers) as i32;
    asg.create_auto_scaling_group()
        .auto_scaling_group_name(GROUP)
        .launch_configuration_name("workers")
        .min_size(0)
        .max_size(total + 2)
        .desired_capacity(total)
        .availability_zones("us-east-1a")
        // As the deploy templates set it: an abandoned terminate keeps the instance.
        .instance_lifecycle_policy(quiesce_testbed::aws::on_abandon(RetentionAction::Retain))
        .send()
        .await
        .unwrap();
    asg.put_lifecycle_hook()
        .auto_scaling_group_name(GROUP)
        .lifecycle_hook_name(HOOK)
        .lifecycle_transition("autoscaling:EC2_INSTANCE_TERMINATING")
        .heartbeat_timeout(heartbeat_timeout)
        .default_result("ABANDON")
        .notification_target_arn(&queue_arn)
        .role_arn("arn:aws:iam::123456789012:role/lifecycle")
        .send()
        .await
        .unwrap();
    let group = asg
        .describe_auto_scaling_groups()
        .auto_scaling_group_names(GROUP)
        .send()
        .await
        .unwrap();
    let mut all: Vec<String> = group.auto_scaling_groups()[0]
        .instances()
        .iter()
        .filter_map(|i| i.instance_id().map(str::to_string))
        .collect();
    assert_eq!(all.len(), nodes + strangers, "moto launched the group");
    let strangers = all.split_off(nodes);
    let mut scenario = Scenario::from_yaml(WORKLOADS, "drainer test").unwrap();
    if !extra.is_empty() {
        scenario
            .objects
            .extend(Scenario::from_yaml(extra, "extra").unwrap().objects);
    }
    let sandbox = Sandbox::start(SandboxOptions {
        scenario,
        ..SandboxOptions::default()
    })
    .await
    .unwrap();
    let node_api: Api<Node> = Api::all(sandbox.client());
    for (i, instance) in all.iter().enumerate() {
        let node: Node = serde_json::from_value(json!({
            "metadata": {"name": format!("node-{}", i + 1), "labels": {"kubernetes.io/hostname": format!("node-{}", i + 1)}},
            "spec": {"providerID": format!("aws:///us-east-1a/{instance}")},
        }))
        .unwrap();
        node_api
            .create(&PostParams::default(), &node)
            .await
            .unwrap();
    }
    let bed = Bed {
        moto,
        sandbox,
        aws,
        asg,
        sqs,
        queue_url,
        instances: all,
        strangers,
    };
    bed.wait_for("every web pod Ready", Duration::from_secs(30), || async {
        ready_pods(&bed.sandbox, "app=web").await == 3
    })
    .await;
    bed
}

/// The ARN of the queue at `url`, for hook targets and EventBridge rules.
/// A terminate notification in the documented direct Auto Scaling → SQS shape, for a message
/// sent again by hand (a duplicate, a stale one).
pub fn notification(instance: &str, token: &Value) -> String {
    json!({
        "Origin": "AutoScalingGroup", "Destination": "EC2", "Service": "AWS Auto Scaling",
        "AccountId": "123456789012", "RequestId": "by-hand", "Time": "2026-11-23T10:00:00.000Z",
        "AutoScalingGroupName": GROUP, "LifecycleHookName": HOOK, "EC2InstanceId": instance,
        "LifecycleActionToken": token, "LifecycleTransition": "autoscaling:EC2_INSTANCE_TERMINATING",
    })
    .to_string()
}

/// The value of a Prometheus sample `name{labels}` in `text` (0 when absent).
pub fn metric(text: &str, name_and_labels: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name_and_labels)?.trim().parse().ok())
        .unwrap_or(0)
}

/// `GET path` on a loopback port (the drainer's HTTP endpoints): the status and the whole
/// response. Plain std I/O: no HTTP client crate for a test's probe.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, text))
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
    pub fn settings(&self) -> Settings {
        Settings {
            drain_margin: Duration::from_secs(5),
            replacement_startup: Duration::from_secs(2),
            // A drainer killed mid-drain is taken over after this.
            claim_hold: Duration::from_secs(3),
            ..Settings::default()
        }
    }

    pub fn handler(&self, settings: Settings) -> Arc<Handler<AutoScaling>> {
        Arc::new(Handler::new(
            self.sandbox.client(),
            NodeIndex::listed(self.sandbox.client()),
            AutoScaling::new(&self.aws),
            settings,
            Arc::new(Metrics::default()),
        ))
    }

    pub fn sandbox_kubeconfig(&self) -> kube::config::Kubeconfig {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kubeconfig");
        self.sandbox.write_kubeconfig(&path).unwrap();
        kube::config::Kubeconfig::read_from(&path).unwrap()
    }

    pub fn queue(&self) -> Arc<Sqs> {
        Arc::new(Sqs::new(&self.aws, &self.queue_url))
    }

    /// Runs the production queue loop until the returned sender says stop.
    pub fn run_worker(
        &self,
        handler: Arc<Handler<AutoScaling>>,
        visibility: Duration,
    ) -> (watch::Sender<bool>, tokio::task::JoinHandle<()>) {
        let (stop, rx) = watch::channel(false);
        let settings = WorkerSettings {
            visibility,
            wait: Duration::from_secs(1),
            retry_after: Duration::from_secs(1),
            ..WorkerSettings::default()
        };
        let task = tokio::spawn(quiesce_drainer::worker::run(
            self.queue(),
            handler,
            settings,
            rx,
        ));
        (stop, task)
    }

    /// An EventBridge rule sending the group's lifecycle events to the queue, as the
    /// CloudFormation stack in deploy/ sets up. aws-sdk-eventbridge is not a dependency for
    /// this one setup call: moto takes the JSON protocol request unsigned.
    pub fn route_eventbridge_to_queue(&self, queue_arn: &str) {
        let pattern = serde_json::json!({
            "source": ["aws.autoscaling"],
            "detail-type": ["EC2 Instance-terminate Lifecycle Action", "EC2 Instance-launch Lifecycle Action"],
            "detail": {"AutoScalingGroupName": [GROUP]}
        });
        self.events_call(
            "PutRule",
            serde_json::json!({"Name": "lifecycle", "EventPattern": pattern.to_string()}),
        );
        self.events_call(
            "PutTargets",
            serde_json::json!({"Rule": "lifecycle", "Targets": [{"Id": "queue", "Arn": queue_arn}]}),
        );
    }

    /// Arms moto's fault injector: the next `count` calls of the AWS API `action` fail with
    /// `status` and error `code` (tests/moto/quiesce_moto.py, `/_quiesce/faults`).
    pub fn inject_aws(&self, action: &str, count: u32, status: u16, code: &str) {
        let body = json!({"action": action, "count": count, "status": status, "code": code});
        let answer = self.moto_http("POST", "/_quiesce/faults", &body.to_string());
        assert!(answer.contains(" 200 "), "arming {action}: {answer}");
    }

    /// The faults still armed in moto.
    pub fn aws_faults_left(&self) -> Vec<Value> {
        let answer = self.moto_http("GET", "/_quiesce/faults", "");
        let body = answer.split("\r\n\r\n").nth(1).unwrap_or("[]");
        serde_json::from_str(body).unwrap()
    }

    fn moto_http(&self, method: &str, path: &str, body: &str) -> String {
        use std::io::{Read, Write};
        let addr = self.moto.url().trim_start_matches("http://").to_string();
        let mut stream = std::net::TcpStream::connect(&addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        answer
    }

    fn events_call(&self, target: &str, body: Value) {
        use std::io::{Read, Write};
        let addr = self.moto.url().trim_start_matches("http://").to_string();
        let body = body.to_string();
        let mut stream = std::net::TcpStream::connect(&addr).unwrap();
        write!(
            stream,
            "POST / HTTP/1.1\r\nHost: {addr}\r\nX-Amz-Target: AWSEvents.{target}\r\n\
             Content-Type: application/x-amz-json-1.1\r\n\
             Authorization: AWS4-HMAC-SHA256 Credential=testing/20261123/us-east-1/events/aws4_request, SignedHeaders=host, Signature=0\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        assert!(
            answer.starts_with("HTTP/1.1 200") || answer.starts_with("HTTP/1.0 200"),
            "{target}: {answer}"
        );
    }

    /// Takes the group's `TerminateHookAbandon: retain` away: an ABANDON then terminates the
    /// instance, as on a group without the instance lifecycle policy.
    pub async fn without_retention(&self) {
        self.asg
            .update_auto_scaling_group()
            .auto_scaling_group_name(GROUP)
            .instance_lifecycle_policy(quiesce_testbed::aws::on_abandon(RetentionAction::Terminate))
            .send()
            .await
            .unwrap();
    }

    /// Starts the instance's terminate hook, as a scale-in or instance refresh does.
    pub async fn terminate(&self, instance: &str) {
        self.asg
            .terminate_instance_in_auto_scaling_group()
            .instance_id(instance)
            .should_decrement_desired_capacity(true)
            .send()
            .await
            .unwrap();
    }

    /// moto's record of every lifecycle action.
    pub async fn actions(&self) -> Vec<Value> {
        let url = self.moto.url().to_string();
        let _ = url;
        // The introspection call is blocking std I/O.
        let moto = &self.moto;
        tokio::task::block_in_place(|| moto.lifecycle_actions().unwrap())
    }

    pub async fn action_for(&self, instance: &str) -> Option<Value> {
        self.actions()
            .await
            .into_iter()
            .find(|a| a["instanceId"] == instance)
    }

    /// Waits until moto records `result` (CONTINUE or ABANDON) for the instance's action.
    pub async fn wait_result(&self, instance: &str, result: &str, limit: Duration) {
        self.wait_for(&format!("{result} for {instance}"), limit, || async {
            self.action_for(instance)
                .await
                .is_some_and(|a| a["result"] == result)
        })
        .await;
    }

    pub async fn queue_arn(&self) -> String {
        queue_arn(&self.sqs, &self.queue_url).await
    }

    pub async fn node(&self, name: &str) -> Node {
        Api::<Node>::all(self.sandbox.client())
            .get(name)
            .await
            .unwrap()
    }

    pub async fn record(&self, name: &str) -> Option<InFlight> {
        let node = self.node(name).await;
        node.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(ANNOTATION))
            .map(|v| InFlight::from_annotation(v).unwrap())
    }

    /// The messages of the Events saying on `node` that its terminate hook was abandoned.
    pub async fn abandoned_events(&self, node: &str) -> Vec<String> {
        let events: Api<k8s_openapi::api::core::v1::Event> =
            Api::namespaced(self.sandbox.client(), "default");
        let events = events.list(&Default::default()).await.unwrap();
        events
            .items
            .into_iter()
            .filter(|e| {
                e.reason.as_deref() == Some("LifecycleAbandoned")
                    && e.involved_object.name.as_deref() == Some(node)
            })
            .map(|e| e.message.unwrap_or_default())
            .collect()
    }

    pub async fn send(&self, body: &str) {
        self.sqs
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(body)
            .send()
            .await
            .unwrap();
    }

    /// Messages currently visible (each is made visible again at once).
    pub async fn visible_bodies(&self) -> Vec<String> {
        let out = self
            .sqs
            .receive_message()
            .queue_url(&self.queue_url)
            .max_number_of_messages(10)
            .visibility_timeout(0)
            .wait_time_seconds(0)
            .send()
            .await
            .unwrap();
        out.messages()
            .iter()
            .filter_map(|m| m.body().map(str::to_string))
            .collect()
    }

    /// The body of the queued lifecycle message for `instance` (left visible), once it
    /// arrived.
    pub async fn message_for(&self, instance: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(body) = self
                .visible_bodies()
                .await
                .into_iter()
                .find(|b| b.contains(instance) && b.contains("LifecycleActionToken"))
            {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "no lifecycle message for {instance} arrived\n--- moto log\n{}",
                self.moto.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Puts `record` (any JSON) on the node as the lifecycle record, as another drainer would.
    pub async fn put_record(&self, node: &str, record: &Value) {
        Api::<Node>::all(self.sandbox.client())
            .patch(
                node,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(
                    json!({"metadata": {"annotations": {ANNOTATION: record.to_string()}}}),
                ),
            )
            .await
            .unwrap();
    }

    /// The node running a pod of [`BLOCKER`]'s budget (once one is scheduled), and its
    /// instance: draining it blocks on the budget.
    pub async fn blocked_instance(&self) -> (String, String) {
        let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::all(self.sandbox.client());
        let node_of_a_warming_pod = || async {
            pods.list(&kube::api::ListParams::default().labels("app=warming"))
                .await
                .unwrap()
                .items
                .iter()
                .find_map(|p| p.spec.as_ref()?.node_name.clone())
        };
        self.wait_for(
            "a warming pod scheduled",
            Duration::from_secs(20),
            || async { node_of_a_warming_pod().await.is_some() },
        )
        .await;
        let node = node_of_a_warming_pod().await.unwrap();
        let index: usize = node.trim_start_matches("node-").parse::<usize>().unwrap() - 1;
        let instance = self.instances[index].clone();
        (node, instance)
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
