//! Wait until watched sets of objects satisfy a condition.
//!
//! kube-runtime's `await_condition` follows one named object; the drain waits on sets (the
//! node's pods, a namespace's pods and workloads, the node's VolumeAttachments). The watcher
//! relists after any error with its default backoff, so a flaky API server delays the answer
//! but never makes us lose track of an object; each set is rebuilt from each relist (`Init` …
//! `InitDone`). The condition is also re-checked every [`TICK`] without an event, because some
//! answers change with time alone (a pod passing minReadySeconds, one getting stuck).

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::ControlFlow;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event, watcher};
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::time::Instant;

use crate::error::{Error, Result};

/// How often a condition is re-checked when nothing changes.
pub const TICK: Duration = Duration::from_secs(2);

/// One watched set, keyed by UID.
#[derive(Debug)]
pub struct Tracked<K> {
    objects: BTreeMap<String, K>,
    pending: BTreeMap<String, K>,
    listing: bool,
}

impl<K> Default for Tracked<K> {
    fn default() -> Self {
        Tracked {
            objects: BTreeMap::new(),
            pending: BTreeMap::new(),
            listing: true,
        }
    }
}

impl<K: Resource> Tracked<K> {
    /// Applies one watch event.
    pub fn apply(&mut self, event: Event<K>) {
        match event {
            Event::Init => {
                self.pending.clear();
                self.listing = true;
            }
            Event::InitApply(obj) => {
                self.pending.insert(uid(&obj), obj);
            }
            Event::InitDone => {
                self.objects = std::mem::take(&mut self.pending);
                self.listing = false;
            }
            Event::Apply(obj) => {
                self.objects.insert(uid(&obj), obj);
            }
            Event::Delete(obj) => {
                self.objects.remove(&uid(&obj));
            }
        }
    }

    /// Whether the initial list is complete, so the set means something.
    pub fn listed(&self) -> bool {
        !self.listing
    }

    /// The objects by UID.
    pub fn objects(&self) -> &BTreeMap<String, K> {
        &self.objects
    }

    /// The objects, cloned (the pure gate takes slices).
    pub fn to_vec(&self) -> Vec<K>
    where
        K: Clone,
    {
        self.objects.values().cloned().collect()
    }
}

/// A watch of `api` as a stream of events, relisting after errors.
pub fn watch<K>(
    api: Api<K>,
    config: watcher::Config,
) -> BoxStream<'static, watcher::Result<Event<K>>>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    watcher(api, config).default_backoff().boxed()
}

/// Feeds `stream` into `step` (an event, or `None` at each quiet [`TICK`]) until `step`
/// breaks with a result, or `deadline` passes.
pub async fn drive<E>(
    mut stream: BoxStream<'static, watcher::Result<E>>,
    deadline: Instant,
    what: &str,
    mut step: impl FnMut(Option<E>) -> ControlFlow<Result<()>>,
) -> Result<()> {
    loop {
        let wake = deadline.min(Instant::now() + TICK);
        let event = match tokio::time::timeout_at(wake, stream.next()).await {
            Err(_) if Instant::now() >= deadline => return Err(Error::Deadline(what.to_string())),
            Err(_) => None,
            Ok(None) => return Err(Error::Deadline(format!("{what} (watch ended)"))),
            Ok(Some(Err(err))) => {
                tracing::warn!(%err, what, "watch failed; the watcher relists after a backoff");
                continue;
            }
            Ok(Some(Ok(event))) => Some(event),
        };
        if let ControlFlow::Break(result) = step(event) {
            return result;
        }
    }
}

/// Watches `api` with `config` until `done` breaks for the current set, or `deadline` passes.
///
/// `done` sees the objects keyed by UID after every change (and every [`TICK`]) once the
/// initial list is complete.
pub async fn wait_until<K>(
    api: Api<K>,
    config: watcher::Config,
    deadline: Instant,
    what: &str,
    mut done: impl FnMut(&BTreeMap<String, K>) -> ControlFlow<Result<()>>,
) -> Result<()>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    let mut set = Tracked::default();
    drive(watch(api, config), deadline, what, |event| {
        if let Some(event) = event {
            set.apply(event);
        }
        if set.listed() {
            done(set.objects())
        } else {
            ControlFlow::Continue(())
        }
    })
    .await
}

fn uid<K: Resource>(obj: &K) -> String {
    obj.uid().unwrap_or_else(|| obj.name_any())
}
