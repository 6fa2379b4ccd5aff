//! Leader election on a `coordination.k8s.io` Lease, so two replicas never read the queue at
//! once (client-go's leaderelection semantics: hold the lease by renewing it; take it over only
//! once it has gone unrenewed for its whole duration; every write is conditional on the
//! resourceVersion read, so two candidates cannot both win).

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Client;
use kube::api::{Api, PostParams};
use serde_json::json;

/// One candidate for the lease.
pub struct LeaseLock {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
}

impl LeaseLock {
    /// Candidate `identity` (the pod name) for lease `name` in `namespace`.
    pub fn new(
        client: Client,
        namespace: &str,
        name: &str,
        identity: &str,
        duration: Duration,
    ) -> LeaseLock {
        LeaseLock {
            api: Api::namespaced(client, namespace),
            name: name.to_string(),
            identity: identity.to_string(),
            duration,
        }
    }

    /// How often a leader renews: a third of the duration, so one failed renewal is survivable.
    pub fn renew_every(&self) -> Duration {
        self.duration / 3
    }

    /// Takes or renews the lease; `Ok(true)` while we hold it.
    pub async fn try_acquire(&self) -> Result<bool, kube::Error> {
        let now = Timestamp::now();
        let Some(current) = self.api.get_opt(&self.name).await? else {
            let lease: Lease = serde_json::from_value(json!({
                "metadata": {"name": self.name},
                "spec": self.spec(now, now, 0),
            }))
            .expect("a valid Lease");
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = current.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.as_deref();
        let ours = holder == Some(self.identity.as_str());
        let renewed = spec
            .renew_time
            .as_ref()
            .map(|t| t.0)
            .unwrap_or(Timestamp::UNIX_EPOCH);
        let held_for =
            SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(0)));
        let expired = renewed
            .checked_add(held_for)
            .map_or(true, |until| until < now);
        if !ours && holder.is_some() && !expired {
            return Ok(false);
        }
        let acquired = if ours {
            spec.acquire_time.map(|t| t.0).unwrap_or(now)
        } else {
            now
        };
        let transitions = spec.lease_transitions.unwrap_or(0) + i32::from(!ours);
        let mut lease = current;
        lease.spec = Some(
            serde_json::from_value(self.spec(now, acquired, transitions)).expect("a valid spec"),
        );
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn spec(&self, now: Timestamp, acquired: Timestamp, transitions: i32) -> serde_json::Value {
        json!({
            "holderIdentity": self.identity,
            "leaseDurationSeconds": self.duration.as_secs(),
            "acquireTime": MicroTime(acquired),
            "renewTime": MicroTime(now),
            "leaseTransitions": transitions,
        })
    }
}
