//! The in-cluster drainer: health and metrics endpoints, and the queue loop run only by the
//! replica holding the Lease.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use quiesce_aws::hooks::LifecycleHooks;
use quiesce_aws::queue::Queue;
use tokio::sync::watch;

use crate::handler::Handler;
use crate::lease::LeaseLock;
use crate::worker::{self, WorkerSettings};

/// Serves `/healthz` (the process answers), `/readyz` (the node index has synced, so lookups
/// can be trusted) and `/metrics` on `listen` until `stop`.
pub async fn serve_http<H: LifecycleHooks + 'static>(
    listen: SocketAddr,
    handler: Arc<Handler<H>>,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
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

/// Reads the queue while holding the lease. Losing the lease (or `stop`) aborts the work in
/// hand at once: every action's state is on its Node, and its message reappears after the
/// visibility timeout for whoever leads next.
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
    let mut working: Option<tokio::task::JoinHandle<()>> = None;
    while !*stop.borrow() {
        let leading = match lock.try_acquire().await {
            Ok(leading) => leading,
            Err(err) => {
                tracing::warn!(%err, "lease update failed");
                false
            }
        };
        match (leading, working.is_some()) {
            (true, false) => {
                tracing::info!("acquired the lease; reading the queue");
                let (_keep, never) = watch::channel(false);
                let (q, h, s) = (queue.clone(), handler.clone(), settings.clone());
                working = Some(tokio::spawn(async move {
                    let _keep = _keep;
                    worker::run(q, h, s, never).await
                }));
            }
            (false, true) => {
                tracing::warn!("lost the lease; stopping");
                if let Some(task) = working.take() {
                    task.abort();
                }
            }
            _ => {}
        }
        tokio::select! {
            _ = tokio::time::sleep(lock.renew_every()) => {}
            _ = stop.changed() => {}
        }
    }
    if let Some(task) = working {
        task.abort();
    }
}
