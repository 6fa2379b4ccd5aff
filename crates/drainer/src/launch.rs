//! The launch hook: CONTINUE once the new instance is a Ready node with its DaemonSet pods
//! Ready, so the group does not count capacity that cannot take pods yet.

use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use quiesce_aws::event::LifecycleAction;
use quiesce_aws::hooks::{HookResult, LifecycleHooks};
use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::handler::{Disposition, Done, Handler, lock};
use crate::nodes;

impl<H: LifecycleHooks> Handler<H> {
    /// A launching instance: CONTINUE once its node is registered and Ready with its
    /// DaemonSet pods Ready; ABANDON (the instance is replaced) after the launch timeout.
    pub(crate) async fn launch(
        &self,
        action: &LifecycleAction,
        slice_end: Option<Instant>,
    ) -> Result<Disposition> {
        let timing = self.hooks.timing(action).await?;
        let first = *lock(&self.launches)
            .entry(action.token.clone())
            .or_insert_with(Instant::now);
        let give_up = first + self.settings.launch_timeout;
        let stop = slice_end.map_or(give_up, |s| s.min(give_up));
        let beating = self
            .heartbeating(action, timing, self.until_launched(action, stop))
            .await;
        let ready = match beating {
            Ok(ready) => ready,
            // Completed before (a duplicate, or a redelivery after a lost delete) or timed
            // out: nothing is left to do, and the message must go, not come back until the
            // dead-letter queue takes it.
            Err(Error::HookGone { .. }) => {
                tracing::info!("the launch hook is no longer active");
                lock(&self.launches).remove(&action.token);
                return Ok(Disposition::Done(Done::Expired));
            }
            Err(err) => return Err(err),
        };
        if ready {
            self.complete(action, HookResult::Continue).await?;
            lock(&self.launches).remove(&action.token);
            return Ok(Disposition::Done(Done::Continued));
        }
        if Instant::now() >= give_up {
            self.complete(action, HookResult::Abandon).await?;
            lock(&self.launches).remove(&action.token);
            return Ok(Disposition::Done(Done::Abandoned));
        }
        Ok(Disposition::Later(format!(
            "instance {} is not a Ready node yet",
            action.instance_id
        )))
    }

    /// Waits, watching, until the instance is a Ready node whose DaemonSet pods are Ready
    /// (true), or `stop` (false). Watches instead of listing every second: a launch of a
    /// hundred instances at once would otherwise read a hundred lists a second.
    async fn until_launched(&self, action: &LifecycleAction, stop: Instant) -> bool {
        let wait = async {
            let name = self.registered(action).await;
            self.ready_with_daemons(&name).await
        };
        tokio::time::timeout_at(stop, wait).await.is_ok()
    }

    /// The name of the instance's node, once it has registered: looked up once, then on every
    /// change of a node that may be it (its providerID names the instance, or it has no AWS
    /// providerID and the EC2 fallback may match it by PrivateDnsName).
    async fn registered(&self, action: &LifecycleAction) -> String {
        let instance = action.instance_id.as_str();
        let mut changes = watcher(
            Api::<Node>::all(self.client.clone()),
            watcher::Config::default(),
        )
        .default_backoff()
        .applied_objects()
        .boxed();
        let mut candidate = true;
        loop {
            if candidate {
                match self.nodes.find(instance).await {
                    Ok(Some(node)) => return node.name_any(),
                    Ok(None) => {}
                    Err(err) => tracing::warn!(%err, "looking for the new node"),
                }
            }
            candidate = match changes.next().await {
                Some(Ok(node)) => nodes::may_be(&node, instance),
                Some(Err(err)) => {
                    tracing::warn!(%err, "watching for the new node; retrying");
                    false
                }
                // A watcher with a backoff does not end; should it, look once more.
                None => true,
            };
        }
    }

    /// Returns once node `name` is Ready and its DaemonSet pods are: both watched (the node by
    /// name, its pods by `spec.nodeName`) and judged again on every change.
    async fn ready_with_daemons(&self, name: &str) {
        let (node, node_changes) = self.reflected::<Node>(&format!("metadata.name={name}"));
        let (pods, pod_changes) = self.reflected::<Pod>(&format!("spec.nodeName={name}"));
        let mut changes = futures::stream::select(node_changes, pod_changes);
        while let Some(change) = changes.next().await {
            if let Err(err) = change {
                tracing::warn!(%err, "watching the new node; retrying");
                continue;
            }
            let listed = node.wait_until_ready().now_or_never().is_some()
                && pods.wait_until_ready().now_or_never().is_some();
            if listed
                && node.state().iter().any(|n| nodes::is_ready(n))
                && pods
                    .state()
                    .iter()
                    .filter(|p| {
                        p.owner_references()
                            .iter()
                            .any(|o| o.kind == "DaemonSet" && o.controller == Some(true))
                    })
                    .all(|p| quiesce_core::gate::is_ready(p))
            {
                return;
            }
        }
    }

    /// A store of the objects `fields` selects, and the stream of changes that keeps it
    /// (poll it), each change only a signal to judge again.
    fn reflected<K>(
        &self,
        fields: &str,
    ) -> (
        reflector::Store<K>,
        BoxStream<'static, Result<(), watcher::Error>>,
    )
    where
        K: kube::Resource<DynamicType = ()>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug
            + Send
            + Sync
            + 'static,
    {
        let (store, writer) = reflector::store::<K>();
        let changes = watcher(
            Api::<K>::all(self.client.clone()),
            watcher::Config::default().fields(fields),
        )
        .default_backoff()
        .reflect(writer)
        .map(|e| e.map(|_| ()))
        .boxed();
        (store, changes)
    }
}
