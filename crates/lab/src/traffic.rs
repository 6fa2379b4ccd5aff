//! The lab's clients: a bounded, paced request loop per worker, each worker holding one
//! keep-alive connection the way a real client pool does, and an exact account of what every
//! failed request saw. No retries, since the point is to count what a simple client suffers —
//! with the one exception Go's net/http makes by itself, counted apart (see [`send`]).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{Instant, MissedTickBehavior};

use crate::dataplane::{Balancer, Pick};
use crate::timeline::Timeline;

/// Why a request failed: the classes a client and its operator tell apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Cause {
    /// The connection was refused: the pod's listener was closed, or the Service had no
    /// endpoints (kube-proxy's REJECT rule).
    Refused,
    /// The connection broke before a complete response: ECONNRESET, EOF, broken pipe.
    Reset,
    /// The server answered 5xx.
    Status5xx,
    /// No complete response within the request timeout.
    Timeout,
}

impl Cause {
    /// The name in the stats and the timeline: `refused`, `reset`, `5xx`, `timeout`.
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::Refused => "refused",
            Cause::Reset => "reset",
            Cause::Status5xx => "5xx",
            Cause::Timeout => "timeout",
        }
    }
}

/// Pace, width and bounds of the traffic.
#[derive(Debug, Clone, Copy)]
pub struct TrafficOptions {
    /// Requests per second over all targets together, spread evenly over them.
    pub rps: f64,
    /// Workers (each one keep-alive connection) over all targets; at least one per target.
    pub concurrency: usize,
    /// A request with no complete response by then counts as `timeout`.
    pub request_timeout: Duration,
    /// A connection is closed after this many requests and the next request dials anew (0:
    /// never), as clients and proxies recycle keep-alive connections (nginx's
    /// `keepalive_requests`, connection max-age in client pools). New connections are where a
    /// stale endpoint list bites; pinned ones only move when their pod goes.
    pub requests_per_connection: u32,
    /// The traffic stops by itself after this long, whether or not [`Traffic::stop`] came: no
    /// request loop runs unbounded. The request count is capped at `rps` × this.
    pub max_duration: Duration,
}

impl Default for TrafficOptions {
    fn default() -> Self {
        TrafficOptions {
            rps: 100.0,
            concurrency: 16,
            request_timeout: Duration::from_secs(2),
            requests_per_connection: 50,
            max_duration: Duration::from_secs(600),
        }
    }
}

/// Outcome counts of one Service.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct ServiceStats {
    /// Requests attempted (a client retry is not counted twice).
    pub sent: u64,
    /// Requests the client sent a second time on a new connection, as Go's net/http does by
    /// itself: its reused keep-alive connection closed before any byte of the response came.
    pub retries: u64,
    /// Requests answered below 500.
    pub ok: u64,
    /// Requests that failed.
    pub failed: u64,
    /// Failures by [`Cause::as_str`].
    pub by_cause: BTreeMap<String, u64>,
}

impl ServiceStats {
    fn count(&mut self, failure: Option<Cause>, retried: bool) {
        self.sent += 1;
        self.retries += u64::from(retried);
        match failure {
            None => self.ok += 1,
            Some(cause) => {
                self.failed += 1;
                *self.by_cause.entry(cause.as_str().to_string()).or_default() += 1;
            }
        }
    }
}

/// What the traffic saw: the lab's verdict.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct TrafficStats {
    /// Requests attempted.
    pub sent: u64,
    /// Requests retried by the client on a new connection (see [`ServiceStats::retries`]):
    /// the keep-alive races of pods closing idle connections, which a Go client never sees.
    pub retries: u64,
    /// TCP connections opened (each one a connect the data plane balanced).
    pub connections: u64,
    /// Requests answered below 500.
    pub ok: u64,
    /// Requests that failed.
    pub failed: u64,
    /// Failures by cause, over all Services.
    pub by_cause: BTreeMap<String, u64>,
    /// The same per Service.
    pub by_service: BTreeMap<String, ServiceStats>,
}

impl TrafficStats {
    fn count(&mut self, service: &str, failure: Option<Cause>, retried: bool) {
        self.sent += 1;
        self.retries += u64::from(retried);
        match failure {
            None => self.ok += 1,
            Some(cause) => {
                self.failed += 1;
                *self.by_cause.entry(cause.as_str().to_string()).or_default() += 1;
            }
        }
        self.by_service
            .entry(service.to_string())
            .or_default()
            .count(failure, retried);
    }
}

/// How a client reaches a Service.
#[derive(Debug, Clone)]
pub enum Route {
    /// Dial the pod the userspace balancer picks.
    Balancer(Balancer),
    /// Dial the Service's virtual IP; the kernel's rules pick the pod.
    Vip(SocketAddr),
}

impl Route {
    /// Where a new connection goes; `None` when the balancer has nowhere to send it (refused).
    fn destination(&self) -> Option<SocketAddr> {
        match self {
            Route::Balancer(b) => match b.pick() {
                Pick::Endpoint { addr, .. } => Some(addr),
                Pick::NoEndpoints | Pick::NoServer { .. } => None,
            },
            Route::Vip(addr) => Some(*addr),
        }
    }
}

/// Running traffic; [`Traffic::stop`] ends it and returns the counts.
#[derive(Debug)]
pub struct Traffic {
    stop: watch::Sender<bool>,
    workers: JoinSet<()>,
    stats: Arc<Mutex<TrafficStats>>,
}

impl Traffic {
    /// Starts `opts.concurrency` workers spread over the targets (Service name, its route),
    /// each sending at its share of `opts.rps` on its own keep-alive connection. A worker's
    /// pace is a fixed schedule; a slow request delays only that worker, whose missed slots are
    /// skipped, as a client with a fixed pool would.
    pub fn start(
        targets: Vec<(String, Route)>,
        opts: TrafficOptions,
        timeline: Timeline,
    ) -> Traffic {
        let (stop, stop_rx) = watch::channel(false);
        let stats = Arc::new(Mutex::new(TrafficStats::default()));
        let mut workers = JoinSet::new();
        let n_targets = targets.len().max(1);
        let per_target = (opts.concurrency / n_targets).max(1);
        let rps_per_worker = (opts.rps / (n_targets * per_target) as f64).max(0.001);
        let period = Duration::from_secs_f64(1.0 / rps_per_worker);
        let cap = (rps_per_worker * opts.max_duration.as_secs_f64()).ceil() as u64 + 1;
        let start = Instant::now();
        let total = n_targets * per_target;
        for (t, (service, route)) in targets.into_iter().enumerate() {
            for w in 0..per_target {
                // Stagger the workers over one period, so the load is even, not in bursts.
                let slot = (t * per_target + w) as f64 / total as f64;
                let first = start + period.mul_f64(slot);
                workers.spawn(worker(Worker {
                    service: service.clone(),
                    route: route.clone(),
                    first,
                    period,
                    cap,
                    deadline: start + opts.max_duration,
                    timeout: opts.request_timeout,
                    per_connection: opts.requests_per_connection,
                    stop: stop_rx.clone(),
                    stats: stats.clone(),
                    timeline: timeline.clone(),
                }));
            }
        }
        Traffic {
            stop,
            workers,
            stats,
        }
    }

    /// The counts so far (for a progress display).
    pub fn snapshot(&self) -> TrafficStats {
        self.stats.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Stops sending, lets the requests in flight finish (each bounded by the request
    /// timeout), and returns the counts.
    pub async fn stop(mut self) -> TrafficStats {
        self.stop.send_replace(true);
        while self.workers.join_next().await.is_some() {}
        self.snapshot()
    }
}

struct Worker {
    service: String,
    route: Route,
    first: Instant,
    period: Duration,
    cap: u64,
    deadline: Instant,
    timeout: Duration,
    per_connection: u32,
    stop: watch::Receiver<bool>,
    stats: Arc<Mutex<TrafficStats>>,
    timeline: Timeline,
}

/// One keep-alive connection and the pod it is pinned to. Dropping it closes the socket.
struct Conn {
    sender: SendRequest<Empty<Bytes>>,
    task: JoinHandle<()>,
    /// Requests sent on it so far.
    used: u32,
    /// Bytes the server has sent on it so far: whether a failed request saw any of its
    /// response.
    received: Arc<AtomicU64>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn worker(mut w: Worker) {
    let mut ticks = tokio::time::interval_at(w.first, w.period);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut conn: Option<Conn> = None;
    let mut sent = 0u64;
    while sent < w.cap {
        tokio::select! {
            biased;
            _ = w.stop.wait_for(|s| *s) => break,
            _ = ticks.tick() => {}
        }
        if Instant::now() >= w.deadline {
            break;
        }
        sent += 1;
        let sent_at = std::time::Instant::now();
        let mut retried = false;
        let failure =
            match tokio::time::timeout(w.timeout, request(&mut conn, &w, &mut retried)).await {
                Ok(Ok(())) => None,
                Ok(Err(cause)) => Some(cause),
                Err(_) => Some(Cause::Timeout),
            };
        if failure.is_some() {
            // Whatever broke, a client does not reuse that connection.
            conn = None;
        }
        w.stats
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .count(&w.service, failure, retried);
        w.timeline
            .count_request(&w.service, sent_at, failure.map(Cause::as_str));
    }
}

fn get(service: &str) -> Request<Empty<Bytes>> {
    Request::get("/")
        .header("host", service)
        .body(Empty::new())
        .expect("static request")
}

/// A new connection to the endpoint the balancer (or the kernel) picks: the only moment a pod
/// is chosen.
async fn dial(w: &Worker) -> Result<Conn, Cause> {
    let addr = w.route.destination().ok_or(Cause::Refused)?;
    let stream = TcpStream::connect(addr).await.map_err(|e| io_cause(&e))?;
    w.stats
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .connections += 1;
    let _ = stream.set_nodelay(true);
    let received = Arc::new(AtomicU64::new(0));
    let stream = Counted {
        inner: stream,
        received: received.clone(),
    };
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| hyper_cause(&e))?;
    let task = tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(Conn {
        sender,
        task,
        used: 0,
        received,
    })
}

/// A TCP stream that counts the bytes read from it.
struct Counted {
    inner: TcpStream,
    received: Arc<AtomicU64>,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = (buf.filled().len() - before) as u64;
        self.received.fetch_add(n, Ordering::Relaxed);
        polled
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// One request, on the pinned connection or a new one.
async fn request(conn: &mut Option<Conn>, w: &Worker, retried: &mut bool) -> Result<(), Cause> {
    // An idle connection the server has closed (its FIN arrived): nothing is sent on it, so
    // dialing anew is not a retry.
    if conn.as_ref().is_some_and(|c| c.sender.is_closed()) {
        *conn = None;
    }
    let response = send(conn, w, retried).await?;
    let closing = response
        .headers()
        .get(hyper::header::CONNECTION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("close"));
    let status = response.status();
    let body = response.into_body().collect().await;
    let recycle = conn.as_mut().is_some_and(|c| {
        c.used += 1;
        w.per_connection > 0 && c.used >= w.per_connection
    });
    if closing || recycle {
        // The server asked us to go: the next request dials, and may land on another pod.
        *conn = None;
    }
    if status >= StatusCode::INTERNAL_SERVER_ERROR {
        return Err(Cause::Status5xx);
    }
    body.map(|_| ()).map_err(|e| hyper_cause(&e))
}

/// Sends the request, and once more on a new connection when Go's net/http would: the
/// connection was a *reused* keep-alive one and it failed before any byte of the response
/// arrived — the server closed it while idle, as a stopping server closes its idle
/// connections, racing the request (upstream `persistConn.shouldRetryRequest` in
/// net/http/transport.go: a reused connection, and either nothing was written or the request is
/// replayable, a GET without a body, and the error came before the first response byte).
/// Anything that failed after a response byte, or on a fresh connection, is a failure.
async fn send(
    conn: &mut Option<Conn>,
    w: &Worker,
    retried: &mut bool,
) -> Result<Response<hyper::body::Incoming>, Cause> {
    let reused = conn.is_some();
    if conn.is_none() {
        *conn = Some(dial(w).await?);
    }
    let c = conn.as_mut().expect("dialed above");
    let before = c.received.load(Ordering::Relaxed);
    let sent = match c.sender.ready().await {
        Ok(()) => c.sender.send_request(get(&w.service)).await,
        Err(e) => Err(e),
    };
    match sent {
        Ok(response) => Ok(response),
        Err(e) if reused && c.received.load(Ordering::Relaxed) == before => {
            tracing::trace!(error = %e, "reused connection closed before a response byte; retrying");
            *retried = true;
            let c = conn.insert(dial(w).await?);
            c.sender.ready().await.map_err(|e| hyper_cause(&e))?;
            c.sender
                .send_request(get(&w.service))
                .await
                .map_err(|e| hyper_cause(&e))
        }
        Err(e) => Err(hyper_cause(&e)),
    }
}

fn io_cause(e: &std::io::Error) -> Cause {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => Cause::Refused,
        std::io::ErrorKind::TimedOut => Cause::Timeout,
        _ => Cause::Reset,
    }
}

/// A hyper error's cause: a refused connect if an io error says so, else the connection
/// broke (reset, EOF before a complete message, broken pipe, closed).
fn hyper_cause(e: &hyper::Error) -> Cause {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return io_cause(io);
        }
        source = s.source();
    }
    if e.is_timeout() {
        return Cause::Timeout;
    }
    Cause::Reset
}
