//! Leader election on a `coordination.k8s.io` Lease, so two replicas never read the queue at
//! once. The semantics are client-go's `tools/leaderelection`:
//!
//! - a candidate takes the Lease only once the record it observed has stayed unchanged for the
//!   whole lease duration, measured by *its own* clock from when it observed it (never the
//!   holder's `renewTime` against the local clock: the two clocks may disagree);
//! - the holder renews every retry period; one failed call is retried, and only when no renewal
//!   succeeded for the renew deadline (shorter than the lease duration) does it stop acting —
//!   before any candidate can take over;
//! - every write is conditional on the resourceVersion read, so two candidates cannot both win;
//! - every call is bounded in time (a hung renewal must not freeze the holder's judgement);
//! - on shutdown the holder releases the Lease (empty holder, one-second duration), so the
//!   standby takes over at once instead of after the lease duration.

use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, PostParams};
use tokio::time::Instant;

/// Leader-election timing; client-go's defaults are 15 s / 10 s / 2 s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseTiming {
    /// How long a candidate waits on an unchanged record before taking the Lease over.
    pub duration: Duration,
    /// How long the holder keeps acting without a successful renewal.
    pub renew_deadline: Duration,
    /// How often the holder renews and a candidate retries.
    pub retry_period: Duration,
}

/// Timing that cannot work: it names the setting and what was expected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TimingError {
    /// The Lease API counts whole seconds; a shorter lease would be written as 0.
    #[error("lease duration {0:?} is under 1s: the Lease API counts whole seconds")]
    TooShort(Duration),
    /// The holder must stop before a standby can take over.
    #[error(
        "renew deadline {renew_deadline:?} must be shorter than the lease duration {duration:?}"
    )]
    Deadline {
        /// The lease duration.
        duration: Duration,
        /// The renew deadline.
        renew_deadline: Duration,
    },
    /// Renewals must be able to fail at least once within the deadline.
    #[error(
        "retry period {retry_period:?} must be shorter than the renew deadline {renew_deadline:?}"
    )]
    Retry {
        /// The renew deadline.
        renew_deadline: Duration,
        /// The retry period.
        retry_period: Duration,
    },
}

impl LeaseTiming {
    /// client-go's proportions for a lease `duration`: renew deadline ⅔ of it, retry period
    /// 2/15 of it (15 s → 10 s and 2 s).
    pub fn for_duration(duration: Duration) -> Result<LeaseTiming, TimingError> {
        LeaseTiming {
            duration,
            renew_deadline: duration * 2 / 3,
            retry_period: duration * 2 / 15,
        }
        .validated()
    }

    /// `self`, if it can work.
    pub fn validated(self) -> Result<LeaseTiming, TimingError> {
        if self.duration < Duration::from_secs(1) {
            return Err(TimingError::TooShort(self.duration));
        }
        if self.renew_deadline >= self.duration {
            return Err(TimingError::Deadline {
                duration: self.duration,
                renew_deadline: self.renew_deadline,
            });
        }
        if self.retry_period >= self.renew_deadline || self.retry_period.is_zero() {
            return Err(TimingError::Retry {
                renew_deadline: self.renew_deadline,
                retry_period: self.retry_period,
            });
        }
        Ok(self)
    }
}

/// Why one Lease call failed.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// The API server refused or failed the call.
    #[error("lease {name}: {source}")]
    Kube {
        /// The Lease.
        name: String,
        /// The client's error.
        source: kube::Error,
    },
    /// The call did not complete in time.
    #[error("lease {name}: no answer within {waited:?}")]
    Timeout {
        /// The Lease.
        name: String,
        /// How long it waited.
        waited: Duration,
    },
}

/// The parts of a Lease record whose change proves its holder alive.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Record {
    holder: Option<String>,
    renewed: Option<Timestamp>,
    acquired: Option<Timestamp>,
    duration_secs: Option<i32>,
    transitions: Option<i32>,
}

impl Record {
    fn of(spec: &LeaseSpec) -> Record {
        Record {
            holder: spec.holder_identity.clone().filter(|h| !h.is_empty()),
            renewed: spec.renew_time.as_ref().map(|t| t.0),
            acquired: spec.acquire_time.as_ref().map(|t| t.0),
            duration_secs: spec.lease_duration_seconds,
            transitions: spec.lease_transitions,
        }
    }
}

/// One candidate for the lease.
pub struct LeaseLock {
    api: Api<Lease>,
    name: String,
    identity: String,
    timing: LeaseTiming,
    /// The record last seen and when this process saw it change (client-go's
    /// `observedRecord` / `observedTime`).
    observed: Mutex<Option<(Record, Instant)>>,
}

impl LeaseLock {
    /// Candidate `identity` (the pod name) for lease `name` in `namespace`.
    pub fn new(
        client: Client,
        namespace: &str,
        name: &str,
        identity: &str,
        timing: LeaseTiming,
    ) -> LeaseLock {
        LeaseLock {
            api: Api::namespaced(client, namespace),
            name: name.to_string(),
            identity: identity.to_string(),
            timing,
            observed: Mutex::new(None),
        }
    }

    /// The timing this candidate runs by.
    pub fn timing(&self) -> LeaseTiming {
        self.timing
    }

    /// Takes or renews the lease within `limit`; `Ok(true)` while we hold it.
    pub async fn try_acquire(&self, limit: Duration) -> Result<bool, LeaseError> {
        self.bounded(limit, self.acquire_or_renew()).await
    }

    /// Gives the lease up if we hold it, so a standby need not wait for it to expire.
    pub async fn release(&self, limit: Duration) -> Result<(), LeaseError> {
        self.bounded(limit, async {
            let Some(mut lease) = self.api.get_opt(&self.name).await? else {
                return Ok(());
            };
            let mut spec = lease.spec.clone().unwrap_or_default();
            if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
                return Ok(());
            }
            spec.holder_identity = None;
            spec.lease_duration_seconds = Some(1);
            spec.renew_time = Some(MicroTime(Timestamp::now()));
            lease.spec = Some(spec);
            self.api
                .replace(&self.name, &PostParams::default(), &lease)
                .await?;
            Ok(())
        })
        .await
    }

    async fn bounded<T>(
        &self,
        limit: Duration,
        call: impl Future<Output = Result<T, kube::Error>>,
    ) -> Result<T, LeaseError> {
        match tokio::time::timeout(limit, call).await {
            Ok(result) => result.map_err(|source| LeaseError::Kube {
                name: self.name.clone(),
                source,
            }),
            Err(_) => Err(LeaseError::Timeout {
                name: self.name.clone(),
                waited: limit,
            }),
        }
    }

    async fn acquire_or_renew(&self) -> Result<bool, kube::Error> {
        let now = Timestamp::now();
        let Some(current) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: kube::api::ObjectMeta {
                    name: Some(self.name.clone()),
                    ..Default::default()
                },
                spec: Some(self.spec(now, now, 0)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(created) => {
                    self.observe(&created, true);
                    Ok(true)
                }
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = current.spec.clone().unwrap_or_default();
        let record = Record::of(&spec);
        let ours = record.holder.as_deref() == Some(self.identity.as_str());
        let observed_at = self.observe(&current, false);
        if !ours
            && record.holder.is_some()
            && observed_at.elapsed()
                < Duration::from_secs(record.duration_secs.unwrap_or(0).max(0) as u64)
        {
            return Ok(false);
        }
        let acquired = match (ours, record.acquired) {
            (true, Some(t)) => t,
            _ => now,
        };
        let transitions = spec.lease_transitions.unwrap_or(0) + i32::from(!ours);
        let mut lease = current;
        lease.spec = Some(self.spec(now, acquired, transitions));
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(written) => {
                self.observe(&written, true);
                Ok(true)
            }
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Notes the lease's record; returns when this process first saw it as it is now. A
    /// write of our own counts as observed now.
    fn observe(&self, lease: &Lease, ours: bool) -> Instant {
        let record = Record::of(&lease.spec.clone().unwrap_or_default());
        let mut observed = self.observed.lock().unwrap_or_else(|p| p.into_inner());
        match &*observed {
            Some((seen, at)) if *seen == record && !ours => *at,
            _ => {
                let now = Instant::now();
                *observed = Some((record, now));
                now
            }
        }
    }

    fn spec(&self, now: Timestamp, acquired: Timestamp, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.timing.duration.as_secs() as i32),
            acquire_time: Some(MicroTime(acquired)),
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }
}
