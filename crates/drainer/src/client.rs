//! The one Kubernetes client builder of the drainer (the Deployment and the Lambda): every
//! call bounded in time. kube-client 5 sets no read timeout by default (it would cut exec and
//! watch streams); a stalled API server then freezes a call forever. Here:
//!
//! - connecting and sending a request have their own timeouts;
//! - every call must have its response *headers* within the operation timeout (a tower layer
//!   around the client's service). A watch answers its headers at once and then streams, so a
//!   long watch is not a hang; kube-runtime's watcher has its own idle timeout for the stream;
//! - a response body that stops flowing is cut by the read timeout, longer than the
//!   watcher's server-side timeout (290 s) so that a quiet watch is not cut by it.
//!
//! Calls that must be quicker (a Lease renewal within the renew deadline) bound themselves
//! further.
//!
//! Every request also waits for the client's rate limit ([`Rate`], see [`crate::rate`]) before
//! it is sent, writes to a Node first; the wait is not counted against the operation timeout.

use std::time::Duration;

use kube::client::ClientBuilder;
use tower::BoxError;
use tower::util::MapFutureLayer;

pub use crate::rate::Rate;
use crate::rate::RateLimitLayer;

/// The timeouts of every Kubernetes call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP and TLS connection set-up.
    pub connect: Duration,
    /// From sending a request to its response headers.
    pub operation: Duration,
    /// Silence in a response body (reset by every write, see kube's `reset_reader_on_write`).
    pub read: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(10),
            operation: Duration::from_secs(30),
            read: Duration::from_secs(330),
        }
    }
}

/// An operation that got no response headers in time.
#[derive(Debug, thiserror::Error)]
#[error("the Kubernetes API server did not answer within {0:?}")]
pub struct OperationTimeout(pub Duration);

/// A client for `config` whose every call is bounded by `timeouts` and waits for `rate`.
/// kube's own retry of 429, 503 and 504 is off: the drain engine must see a budget's 429 to
/// report it, and the drainer retries by its own classification.
pub fn build(
    mut config: kube::Config,
    timeouts: Timeouts,
    rate: Rate,
) -> Result<kube::Client, kube::Error> {
    config.connect_timeout = Some(timeouts.connect);
    config.write_timeout = Some(timeouts.operation);
    config.read_timeout = Some(timeouts.read);
    config.reset_reader_on_write = true;
    config.default_retry = false;
    let limit = timeouts.operation;
    let bounded = MapFutureLayer::new(move |call| async move {
        match tokio::time::timeout(limit, call).await {
            Ok(answer) => answer,
            Err(_) => Err(BoxError::from(OperationTimeout(limit))),
        }
    });
    // Layers wrap what was built before them: the limit is outside the timeout, so a request
    // waiting for its permit is not cut as if the server had stalled.
    Ok(ClientBuilder::try_from(config)?
        .with_layer(&bounded)
        .with_layer(&RateLimitLayer::new(rate))
        .build())
}
