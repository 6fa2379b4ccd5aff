//! The client-side rate limit of the drainer's Kubernetes client, with a lane for the writes
//! that protect a node.
//!
//! Every request waits for a permit of one token bucket (`governor`'s GCRA, equivalent to a
//! token bucket of `burst` tokens refilled at `qps`), as client-go's clients do
//! (`rest.Config` `QPS` and `Burst`, a `golang.org/x/time/rate` bucket), so that many actions
//! at once (a spot reclaim) cannot flood the API server. tower's own `RateLimitLayer` counts
//! fixed windows, which lets twice the limit through around a window's edge and has no
//! separate burst.
//!
//! Permits are handed out in order, writes to a Node first ([`is_urgent`]): the write that
//! claims a node's lifecycle action cordons and fences it, and with five hundred actions
//! received at once the cordons must not queue behind the reads of drains already under way
//! (a spot reclaim leaves two minutes in all; every node is to be cordoned within seconds of
//! its message). Neither governor nor kube-rs orders waiters, hence [`Lanes`]; API Priority
//! and Fairness does the same on the server side, by flow schema.

use std::collections::VecDeque;
use std::future::Future;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::sync::oneshot;
use tower::{Layer, Service};

/// The client-side rate limit: `qps` requests a second on average, `burst` at once after a
/// quiet spell.
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

/// Whether `request` goes in the urgent lane: a write (PATCH or PUT) of a Node itself, not of
/// a subresource — the claim that cordons, the record, the fence, the uncordon.
pub fn is_urgent<B>(request: &http::Request<B>) -> bool {
    let writes = matches!(*request.method(), http::Method::PATCH | http::Method::PUT);
    writes
        && request
            .uri()
            .path()
            .strip_prefix("/api/v1/nodes/")
            .is_some_and(|name| !name.is_empty() && !name.contains('/'))
}

/// The waiters for permits, urgent first, then in arrival order.
#[derive(Default)]
struct Waiting {
    urgent: VecDeque<oneshot::Sender<()>>,
    normal: VecDeque<oneshot::Sender<()>>,
}

/// One bucket and its ordered waiters. Whoever holds `dispensing` takes permits from the
/// bucket and hands each to the first waiter still waiting, until it has its own: no task of
/// its own to spawn (a client may outlive the runtime that built it), and a waiter that is
/// dropped hands the duty on.
pub struct Lanes {
    bucket: DefaultDirectRateLimiter,
    waiting: Mutex<Waiting>,
    dispensing: tokio::sync::Mutex<()>,
}

impl Lanes {
    /// Lanes in front of a bucket of `rate`.
    pub fn new(rate: Rate) -> Lanes {
        Lanes {
            bucket: RateLimiter::direct(rate.quota()),
            waiting: Mutex::default(),
            dispensing: tokio::sync::Mutex::new(()),
        }
    }

    /// Waits for a permit: before every normal waiter if `urgent`.
    pub async fn permit(&self, urgent: bool) {
        let (tx, mut granted) = oneshot::channel();
        {
            let mut waiting = self.lock();
            if urgent {
                waiting.urgent.push_back(tx);
            } else {
                waiting.normal.push_back(tx);
            }
        }
        tokio::select! {
            biased;
            _ = &mut granted => {}
            _guard = self.dispensing.lock() => loop {
                if granted.try_recv().is_ok() {
                    return;
                }
                self.bucket.until_ready().await;
                self.grant_next();
            },
        }
    }

    /// Hands one permit to the first waiter still waiting (urgent ones first).
    fn grant_next(&self) {
        let mut waiting = self.lock();
        while let Some(next) = waiting
            .urgent
            .pop_front()
            .or_else(|| waiting.normal.pop_front())
        {
            if next.send(()).is_ok() {
                return;
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Waiting> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A tower layer that makes every request wait for a permit of one shared [`Lanes`].
#[derive(Clone)]
pub struct RateLimitLayer {
    lanes: Arc<Lanes>,
}

impl RateLimitLayer {
    /// A layer for `rate`; every service it wraps shares the one bucket.
    pub fn new(rate: Rate) -> Self {
        RateLimitLayer {
            lanes: Arc::new(Lanes::new(rate)),
        }
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimited<S>;

    fn layer(&self, inner: S) -> RateLimited<S> {
        RateLimited {
            inner,
            lanes: self.lanes.clone(),
        }
    }
}

/// The service [`RateLimitLayer`] makes. The wait is in the response future, where the
/// request is known (readiness cannot see which lane a request belongs to): the inner call
/// is made at once and polled only once the permit is there, so nothing is sent before it.
/// kube's `Buffer` in front of the stack hands requests on without waiting.
pub struct RateLimited<S> {
    inner: S,
    lanes: Arc<Lanes>,
}

impl<S, B> Service<http::Request<B>> for RateLimited<S>
where
    S: Service<http::Request<B>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let urgent = is_urgent(&request);
        let lanes = self.lanes.clone();
        let call = self.inner.call(request);
        Box::pin(async move {
            lanes.permit(urgent).await;
            call.await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: http::Method, path: &str) -> http::Request<()> {
        http::Request::builder()
            .method(method)
            .uri(path)
            .body(())
            .unwrap()
    }

    #[test]
    fn node_writes_are_urgent_and_nothing_else() {
        use http::Method;
        assert!(is_urgent(&request(Method::PATCH, "/api/v1/nodes/node-1")));
        assert!(is_urgent(&request(
            Method::PUT,
            "/api/v1/nodes/node-1?fieldManager=q"
        )));
        assert!(!is_urgent(&request(Method::GET, "/api/v1/nodes/node-1")));
        assert!(!is_urgent(&request(
            Method::PATCH,
            "/api/v1/nodes/node-1/status"
        )));
        assert!(!is_urgent(&request(
            Method::PATCH,
            "/api/v1/namespaces/a/pods/p"
        )));
        assert!(!is_urgent(&request(Method::POST, "/api/v1/nodes/")));
    }

    #[tokio::test]
    async fn urgent_waiters_go_before_normal_ones_that_came_first() {
        let lanes = Arc::new(Lanes::new(Rate {
            qps: 100.0,
            burst: NonZeroU32::new(1).unwrap(),
        }));
        // The bucket's one token goes at once; every waiter below waits for a refill.
        lanes.permit(false).await;
        let order = Arc::new(Mutex::new(Vec::new()));
        // `join_all` polls its futures in this order, so they queue in this order.
        let waiters =
            [(0, false), (1, false), (2, false), (3, true), (4, true)].map(|(i, urgent)| {
                let (lanes, order) = (lanes.clone(), order.clone());
                Box::pin(async move {
                    lanes.permit(urgent).await;
                    order.lock().unwrap().push(i);
                })
            });
        futures::future::join_all(waiters).await;
        assert_eq!(*order.lock().unwrap(), [3, 4, 0, 1, 2]);
    }

    #[tokio::test]
    async fn a_waiter_dropped_while_dispensing_hands_the_duty_on() {
        let lanes = Arc::new(Lanes::new(Rate {
            qps: 100.0,
            burst: NonZeroU32::new(1).unwrap(),
        }));
        lanes.permit(false).await;
        let mut first = Box::pin(lanes.permit(false));
        assert!(
            futures::poll!(&mut first).is_pending(),
            "no token left: it dispenses and waits"
        );
        let second = lanes.permit(true);
        drop(first);
        tokio::time::timeout(Duration::from_secs(10), second)
            .await
            .expect("the second waiter is served after the first one is dropped");
    }
}
