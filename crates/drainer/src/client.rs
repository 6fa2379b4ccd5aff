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
//! Every request also waits for the client's rate limit ([`Rate`]) before it is sent, as
//! client-go's clients do, so that many actions at once (a spot reclaim) cannot flood the API
//! server; the wait is not counted against the operation timeout.

use std::future::Future;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use kube::client::ClientBuilder;
use tower::util::MapFutureLayer;
use tower::{BoxError, Layer, Service};

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

/// The client-side rate limit: `qps` requests a second on average, `burst` at once after a
/// quiet spell — client-go's `rest.Config` `QPS` and `Burst`, which are a token bucket
/// (`golang.org/x/time/rate`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Sustained requests per second (more than 0).
    pub qps: f64,
    /// Requests that may go at once.
    pub burst: NonZeroU32,
}

impl Default for Rate {
    /// 50 QPS, burst 100: kube-scheduler's defaults (`--kube-api-qps 50 --kube-api-burst
    /// 100`), a controller that acts on many nodes at once; client-go's own 5/10 would hold a
    /// spot reclaim of a hundred nodes back by tens of seconds before the first cordon.
    fn default() -> Self {
        Rate {
            qps: 50.0,
            burst: NonZeroU32::new(100).expect("100 is not zero"),
        }
    }
}

impl Rate {
    fn quota(self) -> Quota {
        // One cell every 1/qps seconds; a qps beyond the nanosecond clock is no limit at all.
        let period = Duration::from_secs_f64(1.0 / self.qps.max(f64::MIN_POSITIVE))
            .max(Duration::from_nanos(1));
        Quota::with_period(period)
            .expect("the period is at least a nanosecond")
            .allow_burst(self.burst)
    }
}

/// A tower layer that makes every request wait for a permit of one shared token bucket.
///
/// The bucket is `governor`'s (GCRA, equivalent to a token bucket of `burst` tokens refilled
/// at `qps`): tower's own `RateLimitLayer` counts fixed windows, which lets twice the limit
/// through around a window's edge and has no separate burst. The wait happens in
/// `poll_ready`, before the request is handed to the connection, and kube's `Buffer` in front
/// of the stack queues the callers meanwhile (first come, first served).
#[derive(Clone)]
pub struct RateLimitLayer {
    limiter: Arc<DefaultDirectRateLimiter>,
}

impl RateLimitLayer {
    /// A layer for `rate`; every service it wraps shares the one bucket.
    pub fn new(rate: Rate) -> Self {
        RateLimitLayer {
            limiter: Arc::new(RateLimiter::direct(rate.quota())),
        }
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimited<S>;

    fn layer(&self, inner: S) -> RateLimited<S> {
        RateLimited {
            inner,
            limiter: self.limiter.clone(),
            waiting: None,
            permitted: false,
        }
    }
}

/// The service [`RateLimitLayer`] makes.
pub struct RateLimited<S> {
    inner: S,
    limiter: Arc<DefaultDirectRateLimiter>,
    waiting: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    permitted: bool,
}

impl<S, R> Service<R> for RateLimited<S>
where
    S: Service<R>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        if !self.permitted {
            let limiter = self.limiter.clone();
            let wait = self
                .waiting
                .get_or_insert_with(|| Box::pin(async move { limiter.until_ready().await }));
            if wait.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            self.waiting = None;
            self.permitted = true;
        }
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: R) -> S::Future {
        // The permit is spent on this request; the next one waits for its own.
        self.permitted = false;
        self.inner.call(request)
    }
}

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
