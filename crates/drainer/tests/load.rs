//! The drainer under load, seen from the API server's side (the sandbox's request audit log):
//! the client's rate limit holds, and a drain reads what it needs a page at a time instead
//! of every pod of the cluster in one response (#20 item 7).

mod support;

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Node;
use kube::api::Api;
use quiesce_drainer::client::{self, Rate, Timeouts};
use quiesce_drainer::metrics::Metrics;
use quiesce_drainer::nodes::NodeIndex;
use quiesce_drainer::{Handler, Settings};
use quiesce_sandbox::api::{AUDIT_HEADER, Audited};
use quiesce_sandbox::{Sandbox, SandboxOptions};

fn audited_client(url: &str, caller: &str, rate: Rate) -> kube::Client {
    let mut config = kube::Config::new(url.parse().unwrap());
    config
        .headers
        .push((AUDIT_HEADER.parse().unwrap(), caller.parse().unwrap()));
    client::build(config, Timeouts::default(), rate).unwrap()
}

/// Runs the production queue loop with a handler on `client` and `nodes` until node-1's
/// instance, terminated, has its hook completed with CONTINUE.
async fn drain_node_1(
    bed: &support::Bed,
    client: kube::Client,
    nodes: NodeIndex,
    settings: Settings,
) {
    let handler = std::sync::Arc::new(Handler::new(
        client,
        nodes,
        quiesce_aws::hooks::AutoScaling::new(&bed.aws),
        settings,
        std::sync::Arc::new(Metrics::default()),
    ));
    let victim = bed.instances[0].clone();
    let (stop, worker) = bed.run_worker(handler, Duration::from_secs(30));
    bed.terminate(&victim).await;
    bed.wait_result(&victim, "CONTINUE", Duration::from_secs(90))
        .await;
    stop.send_replace(true);
    worker.await.unwrap();
}

/// The most requests of `log` that arrived within any `window`.
fn peak(log: &[Audited], window: Duration) -> usize {
    let mut times: Vec<Instant> = log.iter().map(|a| a.at).collect();
    times.sort();
    let mut start = 0;
    let mut most = 0;
    for end in 0..times.len() {
        while times[end].duration_since(times[start]) >= window {
            start += 1;
        }
        most = most.max(end - start + 1);
    }
    most
}

#[tokio::test]
async fn the_clients_rate_limit_holds_from_the_servers_side() {
    let sandbox = Sandbox::start(SandboxOptions::default()).await.unwrap();
    let rate = Rate {
        qps: 20.0,
        burst: 5.try_into().unwrap(),
    };
    let nodes: Api<Node> = Api::all(audited_client(sandbox.url(), "limited", rate));
    // Sixty requests at once, as sixty actions arriving together would send them.
    let calls = (0..60).map(|i| {
        let nodes = nodes.clone();
        async move { nodes.get_opt(&format!("node-{i}")).await.unwrap() }
    });
    futures::future::join_all(calls).await;
    let log: Vec<Audited> = sandbox
        .audited()
        .into_iter()
        .filter(|a| a.caller == "limited")
        .collect();
    assert_eq!(log.len(), 60, "every request reached the server");
    // A token bucket lets `burst` through at once and `qps` a second after: in any second at
    // most burst + qps (one more for the edges of the window). Without the limit all sixty
    // arrive within milliseconds.
    let most = peak(&log, Duration::from_secs(1));
    assert!(
        most <= 5 + 20 + 1,
        "{most} requests reached the server within one second; the limit is 20/s, burst 5"
    );
    let half = peak(&log, Duration::from_millis(500));
    assert!(half <= 5 + 10 + 1, "{half} requests within half a second");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_reads_the_nodes_pods_by_field_selector_and_every_list_by_pages() {
    let bed = support::bed(3, 0, 60, "").await;
    let client = audited_client(bed.sandbox.url(), "drainer", Rate::default());
    let settings = Settings {
        max_retry_pause: Duration::from_secs(1),
        ..bed.settings()
    };
    drain_node_1(&bed, client.clone(), NodeIndex::listed(client), settings).await;

    let log: Vec<Audited> = bed
        .sandbox
        .audited()
        .into_iter()
        .filter(|a| a.caller == "drainer")
        .collect();
    let lists: Vec<&Audited> = log
        .iter()
        .filter(|a| a.method == "GET" && is_collection(&a.path) && !a.query.contains("watch="))
        .collect();
    assert!(!lists.is_empty(), "the drain listed nothing: {log:#?}");
    let unpaged: Vec<&&Audited> = lists
        .iter()
        .filter(|a| !a.query.contains("limit="))
        .collect();
    assert!(
        unpaged.is_empty(),
        "lists without limit (one response for the whole collection): {unpaged:#?}"
    );
    let node_pods = lists
        .iter()
        .filter(|a| a.path == "/api/v1/pods" && a.query.contains("spec.nodeName%3Dnode-1"))
        .count();
    assert!(
        node_pods >= 2,
        "the node's pods are read by field selector (deadline and plan): {lists:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_request_for_a_terminating_node_is_the_write_that_claims_cordons_and_fences_it() {
    let bed = support::bed(3, 0, 60, "").await;
    // Every version of node-1 the API server makes, from the outside.
    let versions = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Node>::new()));
    let history = {
        let versions = versions.clone();
        let config = kube::runtime::watcher::Config::default().fields("metadata.name=node-1");
        let nodes = kube::runtime::watcher(Api::<Node>::all(bed.sandbox.client()), config);
        tokio::spawn(async move {
            use futures::StreamExt;
            let mut nodes = std::pin::pin!(kube::runtime::WatchStreamExt::applied_objects(nodes));
            while let Some(node) = nodes.next().await {
                if let Ok(node) = node {
                    versions.lock().unwrap().push(node);
                }
            }
        })
    };
    let client = audited_client(bed.sandbox.url(), "drainer", Rate::default());
    let (index, keep_index) = NodeIndex::watched(client.clone());
    let keeping = tokio::spawn(keep_index);
    bed.wait_for("the node index listed", Duration::from_secs(30), || {
        let ready = index.ready();
        async move { ready }
    })
    .await;
    let mut settings = bed.settings();
    settings.cordon.exclude_from_load_balancers = true;
    settings.cordon.fence_taint = true;
    drain_node_1(&bed, client, index, settings).await;
    keeping.abort();
    history.abort();

    let for_node: Vec<Audited> = bed
        .sandbox
        .audited()
        .into_iter()
        .filter(|a| a.caller == "drainer" && a.path == "/api/v1/nodes/node-1")
        .collect();
    let first = for_node.first().expect("the drainer wrote node-1");
    assert_eq!(
        (first.method.as_str(), first.status),
        ("PATCH", Some(200)),
        "no read before the first write: {for_node:#?}"
    );
    let versions = versions.lock().unwrap();
    let claimed = versions
        .iter()
        .find(|n| {
            n.metadata
                .annotations
                .as_ref()
                .is_some_and(|a| a.contains_key(quiesce_aws::record::ANNOTATION))
        })
        .expect("a version of node-1 with the record");
    assert_eq!(
        claimed.spec.as_ref().and_then(|s| s.unschedulable),
        Some(true),
        "the version that first carries the record is cordoned: {claimed:#?}"
    );
    assert!(
        quiesce_kube::fence::has_fence_taint(claimed),
        "and fenced: {claimed:#?}"
    );
    assert_eq!(
        claimed.metadata.labels.as_ref().unwrap()[quiesce_kube::fence::EXCLUDE_LB_LABEL],
        quiesce_kube::fence::LABEL_VALUE
    );
}

/// Whether `path` names a collection (`/api/v1/pods`, `/apis/apps/v1/namespaces/ns/deployments`)
/// rather than one object or a subresource.
fn is_collection(path: &str) -> bool {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let rest = match parts.as_slice() {
        ["api", _, rest @ ..] => rest,
        ["apis", _, _, rest @ ..] => rest,
        _ => return false,
    };
    matches!(rest, [_] | ["namespaces", _, _])
}
