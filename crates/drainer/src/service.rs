//! The in-cluster drainer: health and metrics endpoints, and the queue loop run only by the
//! replica holding the Lease.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use quiesce_aws::hooks::LifecycleHooks;
use quiesce_aws::queue::Queue;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::handler::Handler;
use crate::lease::LeaseLock;
use crate::worker::{self, WorkerSettings};

/// Serves `/healthz` (the process answers and none of its loops is stuck), `/readyz` (the node index has synced, so lookups
/// can be trusted) and `/metrics` on `listen` until `stop`.
pub async fn serve_http<H: LifecycleHooks + 'static>(
    listen: SocketAddr,
    handler: Arc<Handler<H>>,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/healthz", get(healthz::<H>))
        .route("/readyz", get(readyz::<H>))
        .route("/metrics", get(metrics::<H>))
        .with_state(handler);
    let listener = tokio::net::TcpListener::bind(listen).await?;
    tracing::info!(%listen, "serving /healthz, /readyz, /metrics");
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await
}

async fn healthz<H: LifecycleHooks>(State(h): State<Arc<Handler<H>>>) -> (StatusCode, String) {
    let stuck = h.liveness().stuck();
    if stuck.is_empty() {
        return (StatusCode::OK, "ok\n".into());
    }
    let text: Vec<String> = stuck
        .iter()
        .map(|(name, late)| {
            format!(
                "the {name} loop is {} overdue",
                humantime::format_duration(Duration::from_secs(late.as_secs().max(1)))
            )
        })
        .collect();
    tracing::error!(stuck = ?text, "failing /healthz");
    (StatusCode::SERVICE_UNAVAILABLE, text.join("\n") + "\n")
}

async fn readyz<H: LifecycleHooks>(State(h): State<Arc<Handler<H>>>) -> (StatusCode, &'static str) {
    if h.ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "node index not synced yet\n",
        )
    }
}

async fn metrics<H: LifecycleHooks>(
    State(h): State<Arc<Handler<H>>>,
) -> ([(axum::http::HeaderName, &'static str); 1], String) {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        h.metrics().encode(),
    )
}

/// Reads the queue while holding the lease (see [`crate::lease`] for the semantics). The work
/// in hand stops at once when no renewal succeeded within the renew deadline — before any
/// standby can take the Lease over — or when another holder shows up: every action's state is
/// on its Node, and its message reappears for whoever leads next. On `stop` the Lease is
/// released so the standby takes over at once.
pub async fn lead<Q, H>(
    lock: LeaseLock,
    queue: Arc<Q>,
    handler: Arc<Handler<H>>,
    settings: WorkerSettings,
    mut stop: watch::Receiver<bool>,
) where
    Q: Queue + 'static,
    H: LifecycleHooks + 'static,
{
    let timing = lock.timing();
    let live = handler.liveness().clone();
    // A round of the loop takes at most one retry period of sleep plus one bounded call.
    let promise = timing.retry_period + timing.renew_deadline + Duration::from_secs(5);
    while !*stop.borrow() {
        live.beat("lease", promise);
        match lock.try_acquire(timing.retry_period).await {
            Ok(true) => {}
            Ok(false) => {
                pause(timing.retry_period, &mut stop).await;
                continue;
            }
            Err(err) => {
                tracing::warn!(%err, "could not take the lease");
                pause(timing.retry_period, &mut stop).await;
                continue;
            }
        }
        tracing::info!("acquired the lease; reading the queue");
        let (_keep, never) = watch::channel(false);
        let (q, h, s) = (queue.clone(), handler.clone(), settings.clone());
        // Aborted when this loop ends or is dropped: a leader whose `lead` is cancelled must
        // not leave its queue loop acting on its own.
        let mut working = AbortOnDrop(tokio::spawn(async move {
            let _keep = _keep;
            worker::run(q, h, s, never).await
        }));
        let mut renewed = Instant::now();
        let why = loop {
            live.beat("lease", promise);
            if pause(timing.retry_period, &mut stop).await {
                break "stopping";
            }
            // A renewal may take until the renew deadline, and no longer.
            let left = (renewed + timing.renew_deadline).saturating_duration_since(Instant::now());
            match lock.try_acquire(left.max(Duration::from_millis(1))).await {
                Ok(true) => renewed = Instant::now(),
                Ok(false) => break "another replica holds the lease",
                Err(err) => tracing::warn!(%err, "renewing the lease failed; retrying"),
            }
            if renewed.elapsed() >= timing.renew_deadline {
                break "no renewal succeeded within the renew deadline";
            }
        };
        working.0.abort();
        let _ = (&mut working.0).await;
        live.forget("queue");
        tracing::warn!(why, "stopped reading the queue");
    }
    if let Err(err) = lock.release(timing.retry_period).await {
        tracing::warn!(%err, "could not release the lease; the standby waits for it to expire");
    }
}

/// A task aborted when its handle is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Sleeps `period`; `true` if `stop` turned true meanwhile (or already was).
async fn pause(period: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(period) => {}
        _ = stop.wait_for(|s| *s) => {}
    }
    *stop.borrow()
}
