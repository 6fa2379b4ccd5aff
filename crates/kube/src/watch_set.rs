//! Wait until a watched set of objects satisfies a condition.
//!
//! kube-runtime's `await_condition` follows one named object; the drain waits on sets (the
//! node's pods, a workload's pods, the node's VolumeAttachments). The watcher relists after
//! any error with its default backoff, so a flaky API server delays the answer but never makes
//! us lose track of an object; the set is rebuilt from each relist (`Init` … `InitDone`).

use std::collections::BTreeMap;
use std::fmt::Debug;

use futures::StreamExt;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event, watcher};
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::time::Instant;

use crate::error::{Error, Result};

/// Watches `api` with `config` until `done` holds for the current set, or `deadline` passes.
///
/// `done` sees the objects keyed by UID after every change once the initial list is complete.
pub async fn wait_until<K>(
    api: Api<K>,
    config: watcher::Config,
    deadline: Instant,
    what: &str,
    mut done: impl FnMut(&BTreeMap<String, K>) -> bool,
) -> Result<()>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    let mut stream = watcher(api, config).default_backoff().boxed();
    let mut objects: BTreeMap<String, K> = BTreeMap::new();
    let mut pending: BTreeMap<String, K> = BTreeMap::new();
    let mut listing = true;
    loop {
        let event = match tokio::time::timeout_at(deadline, stream.next()).await {
            Err(_) => return Err(Error::Deadline(what.to_string())),
            Ok(None) => return Err(Error::Deadline(format!("{what} (watch ended)"))),
            Ok(Some(Err(err))) => {
                tracing::warn!(%err, what, "watch failed; the watcher relists after a backoff");
                continue;
            }
            Ok(Some(Ok(event))) => event,
        };
        match event {
            Event::Init => {
                pending.clear();
                listing = true;
            }
            Event::InitApply(obj) => {
                pending.insert(uid(&obj), obj);
            }
            Event::InitDone => {
                objects = std::mem::take(&mut pending);
                listing = false;
            }
            Event::Apply(obj) => {
                objects.insert(uid(&obj), obj);
            }
            Event::Delete(obj) => {
                objects.remove(&uid(&obj));
            }
        }
        if !listing && done(&objects) {
            return Ok(());
        }
    }
}

fn uid<K: Resource>(obj: &K) -> String {
    obj.uid().unwrap_or_else(|| obj.name_any())
}
