//! Leader election on the sandbox's Lease objects, whose writes are conditional on the
//! resourceVersion as the real API server's are: one holder at a time, and a takeover only
//! once the holder stopped renewing for the whole lease duration.

use std::time::Duration;

use quiesce_drainer::lease::{LeaseLock, LeaseTiming};
use quiesce_sandbox::{Sandbox, SandboxOptions};
use tokio::time::Instant;

#[tokio::test]
async fn one_holder_at_a_time_and_takeover_after_expiry() {
    let sandbox = Sandbox::start(SandboxOptions::default()).await.unwrap();
    let duration = Duration::from_secs(2);
    let timing = LeaseTiming::for_duration(duration).unwrap();
    let lock = |id: &str| {
        LeaseLock::new(
            sandbox.client(),
            "kube-system",
            "quiesce-drainer",
            id,
            timing,
        )
    };
    let call = Duration::from_secs(5);
    let (a, b) = (lock("drainer-a"), lock("drainer-b"));

    assert!(
        a.try_acquire(call).await.unwrap(),
        "the first candidate creates the lease"
    );
    assert!(
        !b.try_acquire(call).await.unwrap(),
        "a held lease is not taken"
    );
    assert!(a.try_acquire(call).await.unwrap(), "the holder renews");
    assert!(!b.try_acquire(call).await.unwrap());

    // a stops renewing (its process died); b takes over once the lease has expired.
    let deadline = Instant::now() + duration * 5;
    let took_over_after = Instant::now();
    loop {
        if b.try_acquire(call).await.unwrap() {
            break;
        }
        assert!(Instant::now() < deadline, "b never took the expired lease");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        took_over_after.elapsed() >= duration - Duration::from_millis(500),
        "not before the lease expired"
    );
    assert!(
        !a.try_acquire(call).await.unwrap(),
        "the old holder lost it"
    );
    let lease: k8s_openapi::api::coordination::v1::Lease =
        kube::Api::namespaced(sandbox.client(), "kube-system")
            .get("quiesce-drainer")
            .await
            .unwrap();
    let spec = lease.spec.unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some("drainer-b"));
    assert_eq!(spec.lease_transitions, Some(1));
}

#[tokio::test]
async fn expiry_is_judged_by_when_this_candidate_saw_the_record_not_by_the_holders_clock() {
    let sandbox = Sandbox::start(SandboxOptions::default()).await.unwrap();
    // The holder's clock is an hour behind: by the record alone its lease expired long ago.
    let an_hour_ago = k8s_openapi::jiff::Timestamp::now()
        .checked_sub(k8s_openapi::jiff::SignedDuration::from_secs(3600))
        .unwrap();
    let lease: k8s_openapi::api::coordination::v1::Lease = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "quiesce-drainer"},
        "spec": {"holderIdentity": "skewed", "leaseDurationSeconds": 2,
                 "renewTime": k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(an_hour_ago),
                 "acquireTime": k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(an_hour_ago)},
    }))
    .unwrap();
    kube::Api::namespaced(sandbox.client(), "kube-system")
        .create(&Default::default(), &lease)
        .await
        .unwrap();
    let timing = LeaseTiming::for_duration(Duration::from_secs(2)).unwrap();
    let b = LeaseLock::new(
        sandbox.client(),
        "kube-system",
        "quiesce-drainer",
        "drainer-b",
        timing,
    );
    let call = Duration::from_secs(5);
    let first_seen = Instant::now();
    assert!(
        !b.try_acquire(call).await.unwrap(),
        "a record just seen is not expired, whatever its renewTime says"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !b.try_acquire(call).await.unwrap() {
        assert!(
            Instant::now() < deadline,
            "b never took the unrenewed lease"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        first_seen.elapsed() >= Duration::from_secs(2),
        "taken only after the lease duration of unchanged observation"
    );
}

#[tokio::test]
async fn a_released_lease_is_taken_at_once() {
    let sandbox = Sandbox::start(SandboxOptions::default()).await.unwrap();
    let timing = LeaseTiming::for_duration(Duration::from_secs(30)).unwrap();
    let lock = |id: &str| {
        LeaseLock::new(
            sandbox.client(),
            "kube-system",
            "quiesce-drainer",
            id,
            timing,
        )
    };
    let (a, b) = (lock("drainer-a"), lock("drainer-b"));
    let call = Duration::from_secs(5);
    assert!(a.try_acquire(call).await.unwrap());
    assert!(!b.try_acquire(call).await.unwrap());
    a.release(call).await.unwrap();
    assert!(
        b.try_acquire(call).await.unwrap(),
        "no 30 s wait after a SIGTERM'd leader released the lease"
    );
}

#[test]
fn timing_that_cannot_work_is_refused_with_the_reason() {
    let err = LeaseTiming::for_duration(Duration::from_millis(500)).unwrap_err();
    assert!(err.to_string().contains("under 1s"), "{err}");
    let err = LeaseTiming {
        duration: Duration::from_secs(10),
        renew_deadline: Duration::from_secs(10),
        retry_period: Duration::from_secs(2),
    }
    .validated()
    .unwrap_err();
    assert!(
        err.to_string().contains("shorter than the lease duration"),
        "{err}"
    );
    let ok = LeaseTiming::for_duration(Duration::from_secs(15)).unwrap();
    assert_eq!(ok.renew_deadline, Duration::from_secs(10));
    assert_eq!(ok.retry_period, Duration::from_secs(2));
}
