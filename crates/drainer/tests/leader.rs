//! Leader election under a stalled API server: a leader whose Lease renewal hangs stops acting
//! before its Lease expires, so the standby that takes over then is never a second actor.
//! Checked from the sandbox's audit log of the leader's own requests.

mod support;

use std::sync::Arc;
use std::time::Duration;

use quiesce_aws::hooks::AutoScaling;
use quiesce_drainer::lease::{LeaseLock, LeaseTiming};
use quiesce_drainer::metrics::Metrics;
use quiesce_drainer::nodes::NodeIndex;
use quiesce_drainer::{Handler, WorkerSettings, service};
use quiesce_sandbox::api::{AUDIT_HEADER, FaultKind};
use tokio::time::Instant;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_renewal_hangs_stops_evicting_before_its_lease_expires() {
    let bed = support::bed(3, 0, 30, support::BLOCKER).await;
    let (_, victim) = bed.blocked_instance().await;
    let mut config = kube::Config::new(bed.sandbox.url().parse().unwrap());
    config
        .headers
        .push((AUDIT_HEADER.parse().unwrap(), "leader".parse().unwrap()));
    let client =
        quiesce_drainer::client::build(config, Default::default(), Default::default()).unwrap();
    let mut settings = bed.settings();
    // The drain must outlast the test: it blocks on the budget and retries its evictions.
    settings.drain_margin = Duration::from_secs(600);
    let handler = Arc::new(Handler::new(
        client.clone(),
        NodeIndex::listed(client.clone()),
        AutoScaling::new(&bed.aws),
        settings,
        Arc::new(Metrics::default()),
    ));
    let timing = LeaseTiming {
        duration: Duration::from_secs(6),
        renew_deadline: Duration::from_secs(3),
        retry_period: Duration::from_millis(500),
    }
    .validated()
    .unwrap();
    let lock = LeaseLock::new(client, "kube-system", "quiesce-drainer", "leader", timing);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let workers = WorkerSettings {
        wait: Duration::from_secs(1),
        ..WorkerSettings::default()
    };
    let lead = tokio::spawn(service::lead(lock, bed.queue(), handler, workers, stopped));
    bed.terminate(&victim).await;

    let is_eviction = |a: &quiesce_sandbox::api::Audited| a.path.ends_with("/eviction");
    bed.wait_for(
        "the leader evicting (refused by the budget, retried)",
        Duration::from_secs(60),
        || async {
            bed.sandbox
                .audited()
                .iter()
                .filter(|a| is_eviction(a))
                .count()
                >= 2
        },
    )
    .await;
    // From now on every Lease write hangs until the client gives up.
    let hung_at = Instant::now();
    bed.sandbox.faults().inject_for(
        Some("PUT"),
        Some("leases"),
        Duration::from_secs(120),
        FaultKind::Hang,
    );
    // Watch the audit log for longer than the Lease lives plus the longest eviction backoff
    // (10 s), noting when each request was first seen.
    let mut seen = bed.sandbox.audited().len();
    let mut last_eviction = hung_at;
    let mut evictions_after = 0;
    let watch_until = hung_at + timing.duration + Duration::from_secs(13);
    while Instant::now() < watch_until {
        let audited = bed.sandbox.audited();
        for request in &audited[seen..] {
            if is_eviction(request) {
                last_eviction = Instant::now();
                evictions_after += 1;
            }
        }
        seen = audited.len();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stopped_after = last_eviction - hung_at;
    // The leader may finish the eviction round it is in; it must stop within the renew
    // deadline (plus the poll interval and one bounded call), well before the Lease expires.
    assert!(
        stopped_after < timing.renew_deadline + Duration::from_millis(1500),
        "the leader kept evicting {stopped_after:?} after its renewals hung \
         ({evictions_after} evictions; renew deadline {:?}, lease {:?})",
        timing.renew_deadline,
        timing.duration
    );
    let action = bed.action_for(&victim).await.unwrap();
    assert!(
        action["result"].is_null(),
        "nobody completed the hook: {action}"
    );
    stop.send_replace(true);
    bed.sandbox.faults().clear();
    tokio::time::timeout(Duration::from_secs(30), lead)
        .await
        .expect("the leader stops on request")
        .unwrap();
}
