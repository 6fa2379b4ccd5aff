//! The launch hook: CONTINUE once the new instance is a Ready node with its DaemonSet pods
//! Ready, so the group does not count capacity that cannot take pods yet.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, ListParams};
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
            .heartbeating(action, timing, async {
                loop {
                    match self.launched(action).await {
                        Ok(true) => return true,
                        Ok(false) => {}
                        Err(err) => tracing::warn!(%err, "checking the new node"),
                    }
                    if Instant::now() >= stop {
                        return false;
                    }
                    tokio::time::sleep(Duration::from_secs(1).min(stop - Instant::now())).await;
                }
            })
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

    async fn launched(&self, action: &LifecycleAction) -> Result<bool> {
        let Some(node) = self.nodes.find(&action.instance_id).await? else {
            return Ok(false);
        };
        if !nodes::is_ready(&node) {
            return Ok(false);
        }
        let pods: Api<Pod> = Api::all(self.client.clone());
        let on_node = pods
            .list(&ListParams::default().fields(&format!("spec.nodeName={}", node.name_any())))
            .await
            .map_err(|e| Error::kube("listing the new node's pods", e))?;
        Ok(on_node
            .items
            .iter()
            .filter(|p| {
                p.owner_references()
                    .iter()
                    .any(|o| o.kind == "DaemonSet" && o.controller == Some(true))
            })
            .all(quiesce_core::gate::is_ready))
    }
}
