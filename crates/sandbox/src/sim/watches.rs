//! Reflector-backed caches plus one "something changed" signal, the event source every
//! workload controller here runs on.
//!
//! Our controllers reconcile *all* their objects on any change (the simulated clusters are
//! small), so instead of kube-runtime's per-object `Controller` queue they need only caches
//! that are complete before the first pass and a coalescing wake-up: a [`Notify`] permit
//! collapses a burst of watch events into one pass, which is what upstream's work queues
//! achieve with de-duplication.

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::Notify;
use tokio::task::JoinSet;

/// The watches one controller runs; dropping it stops them.
pub(crate) struct Watches {
    client: Client,
    tasks: JoinSet<()>,
    changed: Arc<Notify>,
    ready: Vec<BoxFuture<'static, ()>>,
}

impl Watches {
    /// Watches against the API `client` talks to.
    pub(crate) fn new(client: Client) -> Self {
        Watches {
            client,
            tasks: JoinSet::new(),
            changed: Arc::new(Notify::new()),
            ready: Vec::new(),
        }
    }

    /// A cache of every `K` in the cluster, kept current by a watch that also wakes the
    /// controller on each event.
    pub(crate) fn store<K>(&mut self) -> Store<K>
    where
        K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    {
        let (store, writer) = reflector::store();
        let stream = watcher(
            Api::<K>::all(self.client.clone()),
            watcher::Config::default(),
        )
        .default_backoff()
        .reflect(writer);
        let changed = self.changed.clone();
        self.tasks.spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(event) = stream.next().await {
                if let Err(error) = event {
                    tracing::warn!(kind = %K::kind(&()), %error, "watch failed; retrying with backoff");
                }
                changed.notify_one();
            }
        });
        let ready = store.clone();
        self.ready.push(Box::pin(async move {
            // The writer lives as long as the watch task, which lives as long as `self`.
            let _ = ready.wait_until_ready().await;
        }));
        store
    }

    /// Waits until every cache has its initial list, so a first pass never acts on a
    /// partial view (creating pods that already exist, say).
    pub(crate) async fn ready(&mut self) {
        futures::future::join_all(self.ready.drain(..)).await;
    }

    /// Waits for the next change, or until `wake_after` passes (for time-based transitions
    /// such as minReadySeconds, which no watch event announces).
    pub(crate) async fn changed(&mut self, wake_after: Option<Duration>) {
        match wake_after {
            Some(after) => {
                let _ = tokio::time::timeout(after, self.changed.notified()).await;
            }
            None => self.changed.notified().await,
        }
    }
}

/// The earlier of two optional wake-ups.
pub(crate) fn earliest(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}
