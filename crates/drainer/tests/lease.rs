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
