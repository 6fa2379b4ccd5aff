//! Routing and encoding: turns HTTP requests into store operations and answers in the wire
//! format of the real API server (JSON objects and lists, Tables for kubectl, newline-delimited
//! watch events, `Status` errors).

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;

use super::Shared;
use super::eviction;
use super::faults;
use super::fields::{self, Writer};
use super::openapi;
use super::page::{self, Page};
use super::patch::{self, PatchType};
use super::protobuf;
use super::resources::{self, Resource, lookup};
use super::review;
use super::scale;
use super::selector::{FieldSelector, LabelSelector};
use super::status::ApiError;
use super::store::{Change, Part, Store};
use super::table;
use super::validation::{self, FieldValidation};

type Params = HashMap<String, String>;

/// Upstream's default watch timeout is randomised between 30 and 60 minutes; a client's own
/// `timeoutSeconds` wins.
const DEFAULT_WATCH_TIMEOUT: Duration = Duration::from_secs(1800);

fn json_response(code: u16, body: &Value) -> Response {
    (
        StatusCode::from_u16(code).unwrap_or(StatusCode::OK),
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// A `<Kind>List`, written straight from the store's shared objects: a list of 30,000 pods
/// is serialised once, never deep-copied.
fn list_response(r: &Resource, page: &Page) -> Response {
    let mut metadata = json!({"resourceVersion": page.rv.to_string()});
    if let Some(next) = &page.next {
        metadata["continue"] = json!(next);
        metadata["remainingItemCount"] = json!(page.remaining);
    }
    let mut out = format!(
        r#"{{"kind":"{}List","apiVersion":"{}","metadata":{metadata},"items":["#,
        r.kind,
        r.api_version()
    )
    .into_bytes();
    for (i, item) in page.items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        serde_json::to_writer(&mut out, &**item).expect("a JSON value serialises");
    }
    out.extend_from_slice(b"]}");
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        out,
    )
        .into_response()
}

fn error_response(err: &ApiError) -> Response {
    let mut resp = json_response(err.code, &err.to_status());
    if let Some(secs) = err.retry_after {
        resp.headers_mut().insert(
            header::RETRY_AFTER,
            secs.to_string().parse().expect("digits are a valid header"),
        );
    }
    resp
}

/// What a request addresses.
struct Target {
    resource: &'static Resource,
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<String>,
}

fn parse_target(
    store: &Store,
    group: &str,
    version: &str,
    rest: &[&str],
) -> Result<Target, ApiError> {
    let find = |plural: &str| {
        lookup(group, version, plural).or_else(|| store.custom(group, version, plural))
    };
    let namespaced =
        rest.len() >= 3 && rest[0] == "namespaces" && find(rest[2]).is_some_and(|r| r.namespaced);
    let (namespace, rest) = if namespaced {
        (Some(rest[1].to_string()), &rest[2..])
    } else {
        (None, rest)
    };
    let resource = find(rest[0]).ok_or_else(ApiError::no_such_resource)?;
    if rest.len() > 3
        || (rest.len() == 3
            && !matches!(
                rest[2],
                "status" | "eviction" | "binding" | "scale" | "finalize" | "log"
            ))
    {
        return Err(ApiError::no_such_resource());
    }
    Ok(Target {
        resource,
        namespace,
        name: rest.get(1).map(|s| s.to_string()),
        subresource: rest.get(2).map(|s| s.to_string()),
    })
}

/// The single entry point: every request of the API.
pub async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    shared.requests.fetch_add(1, Ordering::Relaxed);
    let caller = headers
        .get(super::AUDIT_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let index = caller.as_ref().map(|caller| {
        let mut log = shared.audited.lock().unwrap_or_else(|p| p.into_inner());
        log.push(super::Audited {
            caller: caller.clone(),
            method: method.to_string(),
            path: uri.path().to_string(),
            query: uri.query().unwrap_or_default().to_string(),
            revision: shared.store.resource_version(),
            status: None,
            fault: None,
            at: std::time::Instant::now(),
        });
        log.len() - 1
    });
    let entry = AuditEntry {
        shared: &shared,
        index,
    };
    let response = answer(
        &shared,
        method,
        &uri,
        &headers,
        body,
        caller.as_deref(),
        &entry,
    )
    .await;
    entry.amend(|a| a.status = Some(response.status().as_u16()));
    response
}

/// A request's entry in the audit log (none when it carried no audit header).
struct AuditEntry<'a> {
    shared: &'a Shared,
    index: Option<usize>,
}

impl AuditEntry<'_> {
    fn amend(&self, f: impl FnOnce(&mut super::Audited)) {
        if let Some(i) = self.index {
            f(&mut self
                .shared
                .audited
                .lock()
                .unwrap_or_else(|p| p.into_inner())[i]);
        }
    }
}

/// Serves one request after the audit log noted it in `entry`.
async fn answer(
    shared: &Arc<Shared>,
    method: Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Bytes,
    caller: Option<&str>,
    entry: &AuditEntry<'_>,
) -> Response {
    let path = uri.path().trim_matches('/').to_string();
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let params: Params = Query::try_from_uri(uri).map(|q| q.0).unwrap_or_default();
    let plural = match segments.as_slice() {
        ["api", "v1", rest @ ..] | ["apis", _, _, rest @ ..] if !rest.is_empty() => rest
            .iter()
            .rev()
            .find(|s| lookup_any(s))
            .copied()
            .unwrap_or_default(),
        _ => "",
    };
    let cut = match shared
        .faults
        .apply(
            caller,
            |fault| entry.amend(|a| a.fault = Some(fault)),
            method.as_str(),
            plural,
            &params,
            shared.shutdown.subscribe(),
        )
        .await
    {
        faults::Applied::Respond(response) => return response,
        faults::Applied::Serve(cut) => cut,
    };
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_string();
    let user_agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let wire = Wire {
        accept: &accept,
        content_type: &content_type,
        user_agent: &user_agent,
    };
    let result = match segments.as_slice() {
        [] => Ok(json_response(
            200,
            &json!({"paths": ["/api", "/api/v1", "/apis", "/version"]}),
        )),
        ["version"] => Ok(json_response(200, &resources::version())),
        ["healthz" | "readyz" | "livez"] => Ok((StatusCode::OK, "ok").into_response()),
        ["openapi", "v3"] => Ok(json_response(
            200,
            &openapi::root(&shared.store.custom_schemas()),
        )),
        ["openapi", "v3", gv @ ..] => {
            openapi::group_version(&gv.join("/"), &shared.store.custom_schemas())
                .map(|doc| {
                    (
                        StatusCode::OK,
                        [(header::CONTENT_TYPE, "application/json")],
                        doc.into_owned(),
                    )
                        .into_response()
                })
                .ok_or_else(ApiError::no_such_resource)
        }
        ["api"] => Ok(json_response(200, &resources::core_versions())),
        ["apis"] => Ok(json_response(
            200,
            &resources::group_list(&shared.store.custom_resources()),
        )),
        ["apis", group] => resources::group(group, &shared.store.custom_resources())
            .map(|g| json_response(200, &g))
            .ok_or_else(ApiError::no_such_resource),
        ["api", "v1"] => resources::resource_list("", "v1", &[])
            .map(|l| json_response(200, &l))
            .ok_or_else(ApiError::no_such_resource),
        ["apis", group, version] => {
            resources::resource_list(group, version, &shared.store.custom_resources())
                .map(|l| json_response(200, &l))
                .ok_or_else(ApiError::no_such_resource)
        }
        ["api", "v1", rest @ ..] => match parse_target(&shared.store, "", "v1", rest) {
            Ok(t) => serve(shared, &method, t, &params, &wire, body).await,
            Err(e) => Err(e),
        },
        ["apis", group, version, rest @ ..] => {
            match parse_target(&shared.store, group, version, rest) {
                Ok(t) => serve(shared, &method, t, &params, &wire, body).await,
                Err(e) => Err(e),
            }
        }
        _ => Err(ApiError::no_such_resource()),
    };
    faults::cut(result.unwrap_or_else(|e| error_response(&e)), cut)
}

/// The headers a request's answer depends on.
struct Wire<'a> {
    accept: &'a str,
    content_type: &'a str,
    user_agent: &'a str,
}

fn lookup_any(plural: &str) -> bool {
    resources::RESOURCES.iter().any(|r| r.plural == plural)
}

/// Decodes a JSON or protobuf body; a malformed JSON one gets upstream's
/// `transformDecodeError` message (`handlers/rest.go`): the expected kind, the parser's
/// complaint (Go's wording for a truncated body) and the start of the body.
fn parse_body(body: &[u8], kind: &str, content_type: &str) -> Result<Value, ApiError> {
    if content_type.starts_with(protobuf::CONTENT_TYPE) {
        return protobuf::decode(body).map_err(|e| {
            ApiError::bad_request(format!(
                "the object provided is unrecognized (must be of type {kind}): {e}"
            ))
        });
    }
    serde_json::from_slice(body).map_err(|e| {
        let complaint = if e.is_eof() {
            "unexpected end of JSON input".to_string()
        } else {
            e.to_string()
        };
        let text = String::from_utf8_lossy(body);
        let shown: String = text.chars().take(MAX_BODY_SHOWN).collect();
        ApiError::bad_request(format!(
            "the object provided is unrecognized (must be of type {kind}): couldn't get version/kind; json parse error: {complaint} ({shown})"
        ))
    })
}

/// How much of a malformed body an error message quotes.
const MAX_BODY_SHOWN: usize = 70;

fn field_validation(params: &Params) -> Result<FieldValidation, ApiError> {
    FieldValidation::parse(params.get("fieldValidation").map(String::as_str))
}

/// Adds one `Warning` header per warning, in upstream's `299 - "<text>"` form, which kubectl
/// prints as `Warning: <text>`.
fn with_warnings(mut resp: Response, warnings: &[String]) -> Response {
    for warning in warnings {
        let quoted = serde_json::to_string(warning).expect("a string serialises");
        if let Ok(value) = format!("299 - {quoted}").parse() {
            resp.headers_mut().append(header::WARNING, value);
        }
    }
    resp
}

fn flag(params: &Params, key: &str) -> bool {
    params.get(key).is_some_and(|v| v == "true" || v == "1")
}

fn selectors(params: &Params, r: &Resource) -> Result<(LabelSelector, FieldSelector), ApiError> {
    let labels = LabelSelector::parse(params.get("labelSelector").map_or("", String::as_str))?;
    let fields = FieldSelector::parse(
        params.get("fieldSelector").map_or("", String::as_str),
        r.plural,
    )?;
    Ok((labels, fields))
}

/// The options of a patch: an apply must name its manager and only an apply may force
/// (upstream `ValidatePatchOptions`).
fn patch_options(params: &Params, kind: PatchType) -> Result<bool, ApiError> {
    let force = params.contains_key("force");
    let manager = params.get("fieldManager").map_or("", String::as_str);
    match kind {
        PatchType::Apply if manager.is_empty() => Err(ApiError::invalid_options(
            "PatchOptions",
            "fieldManager",
            "FieldValueRequired",
            "Required value: is required for apply patch",
        )),
        PatchType::Apply => Ok(flag(params, "force")),
        _ if force => Err(ApiError::invalid_options(
            "PatchOptions",
            "force",
            "FieldValueForbidden",
            "Forbidden: may not be specified for non-apply patch",
        )),
        _ => Ok(false),
    }
}

async fn serve(
    shared: &Arc<Shared>,
    method: &Method,
    t: Target,
    params: &Params,
    wire: &Wire<'_>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let (accept, content_type) = (wire.accept, wire.content_type);
    let r = t.resource;
    let store = &shared.store;
    let ns = t.namespace.clone().unwrap_or_default();
    let dry_run = params.contains_key("dryRun");
    let part = if t.subresource.as_deref() == Some("status") {
        Part::Status
    } else {
        Part::Main
    };
    let manager = fields::manager_of(
        params.get("fieldManager").map(String::as_str),
        wire.user_agent,
    );
    let writer = Writer {
        manager: &manager,
        part,
    };
    match (method.as_str(), t.name.as_deref(), t.subresource.as_deref()) {
        ("GET", None, None) => {
            let (labels, fields) = selectors(params, r)?;
            if flag(params, "watch") {
                return watch(shared, r, t.namespace, labels, fields, params, accept);
            }
            let (items, rv) = store.list(r, t.namespace.as_deref(), &labels, &fields);
            let page = page::page(
                items,
                rv,
                params.get("limit").map(String::as_str),
                params.get("continue").map(String::as_str),
            )?;
            if table::wants_table(accept) {
                let rows = page.items.iter().map(|o| &**o);
                let mut table = table::table(r, rows, page.rv);
                // kubectl reads a large list 500 rows at a time (`--chunk-size`) and asks for
                // the next page by the Table's own continue token.
                if let Some(next) = &page.next {
                    table["metadata"]["continue"] = json!(next);
                    table["metadata"]["remainingItemCount"] = json!(page.remaining);
                }
                return Ok(json_response(200, &table));
            }
            Ok(list_response(r, &page))
        }
        ("GET", Some(name), None | Some("status")) => {
            let obj = store.get(r, &ns, name)?;
            if table::wants_table(accept) {
                return Ok(json_response(
                    200,
                    &table::table(r, [&obj], store.resource_version()),
                ));
            }
            Ok(json_response(200, &obj))
        }
        ("POST", None, None) if r.review => {
            let obj = parse_body(&body, r.kind, content_type)?;
            Ok(json_response(201, &review::answer(r, obj)))
        }
        (_, _, _) if r.review => Err(ApiError::method_not_allowed(method.as_str(), r.plural)),
        ("POST", None, None) => {
            let mut obj = parse_body(&body, r.kind, content_type)?;
            let warnings = validation::check(r, &mut obj, field_validation(params)?)?;
            fields::record_update(r, None, &mut obj, &writer);
            let created = store.create_checked(r, &ns, obj, dry_run)?;
            Ok(with_warnings(json_response(201, &created), &warnings))
        }
        ("POST", Some(name), Some("eviction")) if r.plural == "pods" => {
            let eviction = parse_body(&body, "Eviction", content_type)?;
            Ok(json_response(
                201,
                &eviction::evict(store, &ns, name, &eviction, dry_run)?,
            ))
        }
        ("POST", Some(name), Some("binding")) if r.plural == "pods" => {
            let binding = parse_body(&body, "Binding", content_type)?;
            let node = binding["target"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            store.modify(r, &ns, name, Part::Main, |pod| {
                if pod["spec"]["nodeName"]
                    .as_str()
                    .is_some_and(|n| !n.is_empty())
                {
                    return Err(ApiError::stale("", "pods", name));
                }
                let mut next = pod.clone();
                next["spec"]["nodeName"] = json!(node);
                Ok(next)
            })?;
            Ok(json_response(201, &super::status::success()))
        }
        // Simulated pods run no containers: `kubectl logs` gets one line that says so (after
        // the same 404 a real server gives for a pod that does not exist).
        ("GET", Some(name), Some("log")) if r.plural == "pods" => {
            let pod = store.get(r, &ns, name)?;
            let line = format!(
                "quiesce sandbox: pod {name} is simulated ({} on {}); it runs no containers and writes no logs\n",
                pod["status"]["phase"].as_str().unwrap_or("Pending"),
                pod["spec"]["nodeName"].as_str().unwrap_or("no node"),
            );
            Ok((StatusCode::OK, [(header::CONTENT_TYPE, "text/plain")], line).into_response())
        }
        ("GET", Some(name), Some("scale")) if scale::scalable(r) => {
            Ok(json_response(200, &scale::get(store, r, &ns, name)?))
        }
        ("PUT", Some(name), Some("scale")) if scale::scalable(r) => {
            let body = parse_body(&body, "Scale", content_type)?;
            let written = scale::write(store, r, &ns, name, body, None)?;
            Ok(json_response(200, &written))
        }
        ("PATCH", Some(name), Some("scale")) if scale::scalable(r) => {
            let kind = PatchType::from_content_type(content_type)?;
            let written = scale::write(store, r, &ns, name, Value::Null, Some((kind, &body)))?;
            Ok(json_response(200, &written))
        }
        ("PUT", Some(name), Some("finalize")) if r.kind == "Namespace" => {
            let body = parse_body(&body, r.kind, content_type)?;
            let finalizers = body["spec"]["finalizers"].clone();
            let written = store.modify(r, "", name, Part::Main, |current| {
                let mut next = current.clone();
                next["spec"]["finalizers"] = finalizers;
                Ok(next)
            })?;
            Ok(json_response(200, &written))
        }
        ("PUT", Some(name), None | Some("status")) => {
            let mut obj = parse_body(&body, r.kind, content_type)?;
            let warnings = validation::check(r, &mut obj, field_validation(params)?)?;
            let updated = store.modify_checked(r, &ns, name, part, |current| {
                fields::record_update(r, Some(current), &mut obj, &writer);
                Ok(obj)
            })?;
            Ok(with_warnings(json_response(200, &updated), &warnings))
        }
        ("PATCH", Some(name), None | Some("status")) => {
            let kind = PatchType::from_content_type(content_type)?;
            let force = patch_options(params, kind)?;
            let mode = field_validation(params)?;
            let mut warnings = Vec::new();
            if kind == PatchType::Apply {
                let config = patch::applied_object(&body)?;
                // Server-side apply creates what does not exist yet (upstream's patcher
                // `applyPatch` on a missing object).
                if part == Part::Main && store.get(r, &ns, name).is_err_and(|e| e.code == 404) {
                    let mut obj = fields::apply(r, &json!({}), &config, &writer, force)?;
                    if obj["metadata"]["name"].is_null() {
                        obj["metadata"]["name"] = json!(name);
                    }
                    let warnings = validation::check(r, &mut obj, mode)?;
                    let created = store.create_checked(r, &ns, obj, dry_run)?;
                    return Ok(with_warnings(json_response(201, &created), &warnings));
                }
                let applied = store.modify_checked(r, &ns, name, part, |current| {
                    let mut live = current.clone();
                    if let Some(m) = live["metadata"].as_object_mut() {
                        m.remove("resourceVersion");
                    }
                    let mut next = fields::apply(r, &live, &config, &writer, force)?;
                    warnings = validation::check(r, &mut next, mode)?;
                    Ok(next)
                })?;
                return Ok(with_warnings(json_response(200, &applied), &warnings));
            }
            let patched = store.modify_checked(r, &ns, name, part, |current| {
                let mut next = current.clone();
                if let Some(m) = next["metadata"].as_object_mut() {
                    m.remove("resourceVersion");
                }
                if kind == PatchType::Merge {
                    // Only the patch can bring an unknown field: the stored object has none.
                    let mut document = patch::merge_document(&body)?;
                    warnings = validation::check_merge_patch(r, &mut document, mode)?;
                    patch::merge(&mut next, &document);
                } else {
                    patch::apply(&mut next, kind, &body)?;
                    warnings = validation::check(r, &mut next, mode)?;
                }
                fields::record_update(r, Some(current), &mut next, &writer);
                Ok(next)
            })?;
            Ok(with_warnings(json_response(200, &patched), &warnings))
        }
        ("DELETE", Some(name), None) => {
            let body_opts: Value = if body.is_empty() {
                json!({})
            } else if content_type.starts_with(protobuf::CONTENT_TYPE) {
                parse_body(&body, "DeleteOptions", content_type)?
            } else {
                serde_json::from_slice(&body)
                    .map_err(|e| ApiError::bad_request(format!("invalid DeleteOptions: {e}")))?
            };
            let mut opts = eviction::delete_options(&json!({"deleteOptions": body_opts}), dry_run);
            if let Some(g) = params.get("gracePeriodSeconds") {
                opts.grace_period_seconds = Some(g.parse().map_err(|_| {
                    ApiError::bad_request(format!(
                        "gracePeriodSeconds must be an integer, got {g:?}"
                    ))
                })?);
            }
            Ok(json_response(200, &store.delete(r, &ns, name, &opts)?))
        }
        _ => Err(ApiError::method_not_allowed(method.as_str(), r.plural)),
    }
}

fn event_line(kind: &str, object: Value) -> Bytes {
    let mut line = json!({"type": kind, "object": object}).to_string();
    line.push('\n');
    Bytes::from(line)
}

/// Bookmark cadence: upstream's watch cache sends one roughly every minute
/// (`staging/src/k8s.io/apiserver/pkg/storage/cacher`, bookmarkFrequency).
const BOOKMARK_INTERVAL: Duration = Duration::from_secs(60);

/// What a watch request asked for, from its query.
struct WatchOptions {
    since: Option<u64>,
    timeout: Duration,
    bookmarks: bool,
    initial_events: bool,
}

impl WatchOptions {
    fn parse(params: &Params) -> Result<Self, ApiError> {
        let initial_events = flag(params, "sendInitialEvents");
        let since = match params.get("resourceVersion").map(String::as_str) {
            _ if initial_events => None,
            None | Some("") | Some("0") => None,
            Some(rv) => Some(rv.parse::<u64>().map_err(|_| {
                ApiError::bad_request(format!(
                    "invalid resourceVersion {rv:?}: expected an integer"
                ))
            })?),
        };
        let timeout = match params.get("timeoutSeconds") {
            None => DEFAULT_WATCH_TIMEOUT,
            Some(t) => Duration::from_secs(t.parse().map_err(|_| {
                ApiError::bad_request(format!(
                    "invalid timeoutSeconds {t:?}: expected a whole number of seconds"
                ))
            })?),
        };
        Ok(WatchOptions {
            since,
            timeout,
            bookmarks: flag(params, "allowWatchBookmarks"),
            initial_events,
        })
    }
}

/// A BOOKMARK event: an object of the watched kind carrying only a resourceVersion the client
/// may resume from; after the initial events of `sendInitialEvents` it carries upstream's
/// `k8s.io/initial-events-end` annotation.
fn bookmark(r: &Resource, rv: u64, initial_events_end: bool) -> Bytes {
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    if initial_events_end {
        metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    event_line(
        "BOOKMARK",
        json!({"kind": r.kind, "apiVersion": r.api_version(), "metadata": metadata}),
    )
}

fn watch(
    shared: &Arc<Shared>,
    r: &'static Resource,
    namespace: Option<String>,
    labels: LabelSelector,
    fields: FieldSelector,
    params: &Params,
    accept: &str,
) -> Result<Response, ApiError> {
    let options = WatchOptions::parse(params)?;
    let as_table = table::wants_table(accept);
    let idx = shared.store.index_of(r);
    let matches = move |c: &Change| {
        c.resource == idx
            && namespace
                .as_deref()
                .is_none_or(|ns| c.object["metadata"]["namespace"].as_str() == Some(ns))
            && labels.matches(&c.object["metadata"]["labels"])
            && fields.matches(&c.object)
    };
    let encode = move |c: &Change| {
        let object = if as_table {
            table::table(r, [&*c.object], c.rv)
        } else {
            Value::clone(&c.object)
        };
        event_line(c.kind.as_str(), object)
    };
    let start = match shared.store.watch(r, options.since) {
        Ok(w) => w,
        // Upstream answers an expired resourceVersion with 200 and one ERROR event carrying
        // the 410 Status; clients (kube-rs' watcher, client-go's reflector) relist on it.
        Err(e) if e.code == 410 => {
            let line = event_line("ERROR", e.to_status());
            return Ok(stream_response(futures::stream::iter([
                Ok::<_, Infallible>(line),
            ])));
        }
        Err(e) => return Err(e),
    };
    let mut shutdown = shared.shutdown.subscribe();
    let (tx, out) = tokio::sync::mpsc::channel::<Result<Bytes, Infallible>>(256);
    tokio::spawn(async move {
        let mut rx = start.receiver;
        let mut last_rv = start.rv;
        let deadline = tokio::time::sleep(options.timeout);
        tokio::pin!(deadline);
        let mut ticks = tokio::time::interval_at(
            tokio::time::Instant::now() + BOOKMARK_INTERVAL,
            BOOKMARK_INTERVAL,
        );
        for change in start.backlog.iter().filter(|c| matches(c)) {
            if tx.send(Ok(encode(change))).await.is_err() {
                return;
            }
        }
        if options.bookmarks
            && tx
                .send(Ok(bookmark(r, last_rv, options.initial_events)))
                .await
                .is_err()
        {
            return;
        }
        loop {
            let line = tokio::select! {
                _ = &mut deadline => return,
                _ = shutdown.changed() => return,
                _ = ticks.tick(), if options.bookmarks => bookmark(r, last_rv, false),
                received = rx.recv() => match received {
                    Ok(change) => {
                        last_rv = change.rv;
                        if !matches(&change) {
                            continue;
                        }
                        encode(&change)
                    }
                    // A watcher that fell behind the broadcast buffer ends its stream, as
                    // upstream's cacher closes an unresponsive watcher ("Forcing watcher close
                    // due to unresponsiveness"); the client resumes from its last
                    // resourceVersion, as after any timeout.
                    Err(RecvError::Lagged(_)) | Err(RecvError::Closed) => return,
                },
            };
            if tx.send(Ok(line)).await.is_err() {
                return;
            }
        }
    });
    Ok(stream_response(
        tokio_stream::wrappers::ReceiverStream::new(out),
    ))
}

fn stream_response<S>(stream: S) -> Response
where
    S: futures::Stream<Item = Result<Bytes, Infallible>> + Send + 'static,
{
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-cache, private"),
        ],
        Body::from_stream(stream),
    )
        .into_response()
}
