//! Failure injection, so clients of the sandbox (the drain engine, the lifecycle drainer) can be
//! tested against what a real control plane does under load or during an upgrade: 500s, slow
//! answers, requests that never get an answer, API Priority and Fairness throttling, a server
//! that is unavailable for a moment (503), watch streams cut mid-way and resumed watches
//! answered with 410.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde_json::json;
use tokio::time::Instant;

use super::status::ApiError;

/// How long a hung request waits at most before the server gives up on it itself; far longer
/// than any client's timeout, so the client is the one that gives up.
const HANG_LIMIT: Duration = Duration::from_secs(600);

/// What an injected fault does to the request it hits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// Answer 500 InternalError without touching the store.
    InternalError,
    /// Wait this long, then serve the request normally.
    Delay(Duration),
    /// Wait this long, then answer 504 Timeout without touching the store, as a server whose
    /// storage stalled does.
    Timeout(Duration),
    /// Never answer: the request waits until the client gives up and closes the connection
    /// (or the server shuts down), as behind a stalled load balancer or a wedged apiserver.
    Hang,
    /// 429 as API Priority and Fairness rejects a request it has no seat for: a `Retry-After`
    /// header of this many seconds and a plain-text body (upstream `tooManyRequests` in
    /// `k8s.io/apiserver/pkg/server/filters/maxinflight.go`, which APF reuses), not a Status.
    TooManyRequests {
        /// Seconds in the `Retry-After` header.
        retry_after: u64,
    },
    /// 503 ServiceUnavailable with a `Status` body and a `Retry-After` header of this many
    /// seconds (none for 0), as a kube-apiserver answers while it shuts down (upstream
    /// `waitGroupWriteRetryAfterToResponse` in `k8s.io/apiserver/pkg/server/filters/waitgroup.go`:
    /// `Retry-After: 1` and `errors.NewServiceUnavailable("apiserver is shutting down")`), or
    /// while its watch cache is not ready (`k8s.io/apiserver/pkg/storage/cacher`'s
    /// `NewServiceUnavailable`); the kube-aggregator answers 503 too for an unavailable
    /// APIService (`handler_proxy.go`). Nothing is served.
    ServiceUnavailable {
        /// Seconds in the `Retry-After` header (0: no header).
        retry_after: u64,
    },
    /// Serve a watch, then end its stream this long after it started, as an apiserver
    /// restart or a load balancer's idle timeout does. Hits watch requests only.
    CutWatch(Duration),
    /// Answer a watch that resumes from a resourceVersion with the ERROR event carrying 410
    /// Expired (what upstream sends once that version left the watch cache); the client must
    /// relist. Hits watch requests with a resourceVersion only.
    Gone,
}

impl FaultKind {
    /// Whether the fault applies to watch requests only (and only to those).
    fn watch_only(self) -> bool {
        matches!(self, FaultKind::CutWatch(_) | FaultKind::Gone)
    }
}

#[derive(Debug)]
struct Rule {
    /// Prefix of the [`super::AUDIT_HEADER`] value a request must carry (`None`: any request).
    caller: Option<String>,
    method: Option<String>,
    plural: Option<String>,
    remaining: usize,
    until: Option<Instant>,
    kind: FaultKind,
}

/// Shared handle for arming faults; clones control the same server.
#[derive(Debug, Clone, Default)]
pub struct FaultInjector {
    rules: Arc<Mutex<Vec<Rule>>>,
}

/// What the HTTP layer does with a request after the faults had their say.
pub(crate) enum Applied {
    /// Answer with this instead of serving the request.
    Respond(Response),
    /// Serve the request; a watch's stream is cut after the duration, if any.
    Serve(Option<Duration>),
}

impl FaultInjector {
    /// Makes the next `count` requests with this HTTP method (`None`: any) to this resource
    /// (plural such as `pods`; `None`: any) fail or slow down as `kind` says.
    pub fn inject(
        &self,
        method: Option<&str>,
        plural: Option<&str>,
        count: usize,
        kind: FaultKind,
    ) {
        self.push(None, method, plural, count, None, kind);
    }

    /// Like [`FaultInjector::inject`], for every matching request during `period` from now
    /// (an outage of a given length rather than a number of failed calls).
    pub fn inject_for(
        &self,
        method: Option<&str>,
        plural: Option<&str>,
        period: Duration,
        kind: FaultKind,
    ) {
        self.push(
            None,
            method,
            plural,
            usize::MAX,
            Some(Instant::now() + period),
            kind,
        );
    }

    /// Like [`FaultInjector::inject`], for requests whose [`super::AUDIT_HEADER`] starts with
    /// `caller` only: a test aims faults at the client under test and spares the rest (the
    /// simulated controllers, the test's own observers), and the audit log tells which of
    /// that client's requests each fault hit.
    pub fn inject_for_caller(
        &self,
        caller: &str,
        method: Option<&str>,
        plural: Option<&str>,
        count: usize,
        kind: FaultKind,
    ) {
        self.push(Some(caller), method, plural, count, None, kind);
    }

    fn push(
        &self,
        caller: Option<&str>,
        method: Option<&str>,
        plural: Option<&str>,
        remaining: usize,
        until: Option<Instant>,
        kind: FaultKind,
    ) {
        self.lock().push(Rule {
            caller: caller.map(String::from),
            method: method.map(str::to_ascii_uppercase),
            plural: plural.map(String::from),
            remaining,
            until,
            kind,
        });
    }

    /// Disarms every pending fault.
    pub fn clear(&self) {
        self.lock().clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Rule>> {
        self.rules.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The fault a request hits, consuming one use of the first matching rule.
    fn take(
        &self,
        caller: Option<&str>,
        method: &str,
        plural: &str,
        watch: bool,
        resumes: bool,
    ) -> Option<FaultKind> {
        let mut rules = self.lock();
        let now = Instant::now();
        rules.retain(|r| r.until.is_none_or(|u| u > now));
        let i = rules.iter().position(|r| {
            r.remaining > 0
                && r.caller
                    .as_deref()
                    .is_none_or(|c| caller.is_some_and(|k| k.starts_with(c)))
                && r.method.as_deref().is_none_or(|m| m == method)
                && r.plural.as_deref().is_none_or(|p| p == plural)
                && (!r.kind.watch_only() || watch)
                && (r.kind != FaultKind::Gone || resumes)
        })?;
        rules[i].remaining -= 1;
        let kind = rules[i].kind;
        if rules[i].remaining == 0 {
            rules.remove(i);
        }
        Some(kind)
    }

    /// Applies the fault (if any) a request from `caller` hits: waits, answers in its place,
    /// or marks a watch to be cut; `hit` hears which fault before it takes effect. `shutdown`
    /// ends a hung request when the server stops.
    pub(crate) async fn apply(
        &self,
        caller: Option<&str>,
        hit: impl FnOnce(FaultKind),
        method: &str,
        plural: &str,
        params: &HashMap<String, String>,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Applied {
        let flag = |k: &str| params.get(k).is_some_and(|v| v == "true" || v == "1");
        let watch = flag("watch");
        let resumes = params
            .get("resourceVersion")
            .is_some_and(|rv| !rv.is_empty() && rv != "0");
        let Some(fault) = self.take(caller, method, plural, watch, resumes) else {
            return Applied::Serve(None);
        };
        hit(fault);
        match fault {
            FaultKind::InternalError => {
                Applied::Respond(status(&ApiError::internal_error("injected fault")))
            }
            FaultKind::Delay(delay) => {
                tokio::time::sleep(delay).await;
                Applied::Serve(None)
            }
            FaultKind::Timeout(delay) => {
                tokio::time::sleep(delay).await;
                Applied::Respond(status(&ApiError::timeout("injected fault")))
            }
            FaultKind::Hang => {
                // The handler's future is dropped when the client closes the connection.
                tokio::select! {
                    _ = tokio::time::sleep(HANG_LIMIT) => {}
                    _ = shutdown.wait_for(|s| *s) => {}
                }
                Applied::Respond(status(&ApiError::timeout("injected hang")))
            }
            FaultKind::TooManyRequests { retry_after } => Applied::Respond(
                (
                    StatusCode::TOO_MANY_REQUESTS,
                    [
                        (
                            header::CONTENT_TYPE,
                            "text/plain; charset=utf-8".to_string(),
                        ),
                        (header::RETRY_AFTER, retry_after.to_string()),
                    ],
                    "Too many requests, please try again later.\n",
                )
                    .into_response(),
            ),
            FaultKind::ServiceUnavailable { retry_after } => {
                Applied::Respond(unavailable(retry_after))
            }
            FaultKind::CutWatch(after) => Applied::Serve(Some(after)),
            FaultKind::Gone => {
                let rv = params
                    .get("resourceVersion")
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or_default();
                let line =
                    json!({"type": "ERROR", "object": ApiError::expired(rv, rv + 1).to_status()});
                Applied::Respond(
                    (
                        StatusCode::OK,
                        [(header::CONTENT_TYPE, "application/json")],
                        format!("{line}\n"),
                    )
                        .into_response(),
                )
            }
        }
    }
}

/// Ends `response`'s body `after` from now (for [`FaultKind::CutWatch`]).
pub(crate) fn cut(response: Response, after: Option<Duration>) -> Response {
    let Some(after) = after else {
        return response;
    };
    response.map(|body| {
        let stream = body
            .into_data_stream()
            .take_until(tokio::time::sleep(after));
        Body::from_stream(stream)
    })
}

/// The 503 of [`FaultKind::ServiceUnavailable`]: upstream's Status (`kind: Status`, reason
/// `ServiceUnavailable`, no details) with the header only when there is a delay to give.
fn unavailable(retry_after: u64) -> Response {
    let body = ApiError {
        code: 503,
        reason: "ServiceUnavailable",
        message: "apiserver is shutting down".into(),
        details: None,
        retry_after: None,
    }
    .to_status()
    .to_string();
    let mut response = (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response();
    if retry_after > 0 {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, retry_after.into());
    }
    response
}

fn status(err: &ApiError) -> Response {
    (
        StatusCode::from_u16(err.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        [(header::CONTENT_TYPE, "application/json")],
        err.to_status().to_string(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn answer(faults: &FaultInjector) -> Response {
        let (_keep, shutdown) = tokio::sync::watch::channel(false);
        match faults
            .apply(None, |_| {}, "GET", "pods", &HashMap::new(), shutdown)
            .await
        {
            Applied::Respond(response) => response,
            Applied::Serve(_) => panic!("the fault did not answer in the request's place"),
        }
    }

    async fn body(response: Response) -> serde_json::Value {
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn service_unavailable_is_a_503_status_with_its_retry_after() {
        let faults = FaultInjector::default();
        faults.inject(
            None,
            None,
            1,
            FaultKind::ServiceUnavailable { retry_after: 1 },
        );
        faults.inject(
            None,
            None,
            1,
            FaultKind::ServiceUnavailable { retry_after: 0 },
        );
        let first = answer(&faults).await;
        assert_eq!(first.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(first.headers()[header::RETRY_AFTER], "1");
        let status = body(first).await;
        assert_eq!(status["kind"], "Status");
        assert_eq!(status["status"], "Failure");
        assert_eq!(status["code"], 503);
        assert_eq!(status["reason"], "ServiceUnavailable");
        assert_eq!(status["message"], "apiserver is shutting down");
        let second = answer(&faults).await;
        assert_eq!(second.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            !second.headers().contains_key(header::RETRY_AFTER),
            "no header without a delay"
        );
    }
}
