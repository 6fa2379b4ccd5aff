//! Errors as the API server reports them: a `Status` object with the real code, reason and
//! message, so clients (kubectl, kube-rs) react to the sandbox exactly as to a real server.
//! Messages follow `k8s.io/apimachinery/pkg/api/errors` (NewNotFound, NewAlreadyExists,
//! NewConflict, ...), checked against kube-apiserver v1.20 by the testbed's differential probes.

use serde_json::{Value, json};

/// `schema.GroupResource.String()`: `pods`, `deployments.apps`.
fn qualified(group: &str, plural: &str) -> String {
    if group.is_empty() {
        plural.to_string()
    } else {
        format!("{plural}.{group}")
    }
}

/// One failed request, carrying everything the `Status` body and headers need.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// HTTP status code.
    pub code: u16,
    /// `Status.reason`; empty for a plain internal error, as upstream leaves it.
    pub reason: &'static str,
    /// `Status.message`.
    pub message: String,
    /// `Status.details`, when the error names an object.
    pub details: Option<Value>,
    /// Seconds for a `Retry-After` header.
    pub retry_after: Option<u64>,
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
            retry_after: None,
        }
    }

    fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    /// 404 for a named object: `pods "x" not found`.
    pub fn not_found(group: &str, plural: &str, name: &str) -> Self {
        let qualified = qualified(group, plural);
        Self::new(404, "NotFound", format!("{qualified} \"{name}\" not found"))
            .with_details(json!({"name": name, "group": group, "kind": plural}))
    }

    /// 404 for a path that names no resource.
    pub fn no_such_resource() -> Self {
        Self::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
    }

    /// 409 on create of an existing name.
    pub fn already_exists(group: &str, plural: &str, name: &str) -> Self {
        let qualified = qualified(group, plural);
        Self::new(
            409,
            "AlreadyExists",
            format!("{qualified} \"{name}\" already exists"),
        )
        .with_details(json!({"name": name, "group": group, "kind": plural}))
    }

    /// 409 on an update with a stale resourceVersion.
    pub fn stale(group: &str, plural: &str, name: &str) -> Self {
        let qualified = qualified(group, plural);
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {qualified} \"{name}\": the object has been modified; please apply your changes to the latest version and try again"
            ),
        )
        .with_details(json!({"name": name, "group": group, "kind": plural}))
    }

    /// 409 when a delete or eviction precondition names another UID.
    pub fn uid_precondition(kind: &str, name: &str, wanted: &str, actual: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {kind} \"{name}\": the UID in the precondition ({wanted}) does not match the UID in record ({actual}). The object might have been deleted and then recreated"
            ),
        )
    }

    /// 409 when a delete precondition names another resourceVersion.
    pub fn rv_precondition(kind: &str, name: &str, wanted: &str, actual: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {kind} \"{name}\": the ResourceVersion in the precondition ({wanted}) does not match the ResourceVersion in record ({actual}). The object might have been modified"
            ),
        )
    }

    /// 403 for a create in a namespace being deleted (upstream's NamespaceLifecycle
    /// admission plugin).
    pub fn namespace_terminating(group: &str, plural: &str, name: &str, ns: &str) -> Self {
        let qualified = qualified(group, plural);
        Self::new(
            403,
            "Forbidden",
            format!(
                "{qualified} \"{name}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated"
            ),
        )
        .with_details(json!({"name": name, "group": group, "kind": plural, "causes": [
            {"reason": "NamespaceTerminating", "message": format!("namespace {ns} is being terminated"), "field": "metadata.namespace"}
        ]}))
    }

    /// 400 for a request the server cannot parse.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    /// 422 for an object that fails validation.
    pub fn invalid(kind: &str, name: &str, field: &str, detail: &str) -> Self {
        Self::new(
            422,
            "Invalid",
            format!("{kind} \"{name}\" is invalid: {field}: {detail}"),
        )
        .with_details(json!({"name": name, "kind": kind, "causes": [
            {"reason": "FieldValueRequired", "message": detail, "field": field}
        ]}))
    }

    /// 409 for a server-side apply that would change fields other managers own
    /// (`errors.NewApplyConflict`: reason Conflict, the causes and no object named).
    pub fn apply_conflict(message: String, details: Value) -> Self {
        Self::new(409, "Conflict", message).with_details(details)
    }

    /// 422 for request options that fail validation (`PatchOptions`): upstream's
    /// `errors.NewInvalid` on the `meta.k8s.io` kind, which names no object.
    pub fn invalid_options(kind: &str, field: &str, reason: &str, detail: &str) -> Self {
        Self::new(
            422,
            "Invalid",
            format!("{kind}.meta.k8s.io \"\" is invalid: {field}: {detail}"),
        )
        .with_details(json!({"group": "meta.k8s.io", "kind": kind, "causes": [
            {"reason": reason, "message": detail, "field": field}
        ]}))
    }

    /// 405 for a verb the resource does not support.
    pub fn method_not_allowed(method: &str, path: &str) -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            format!(
                "the server does not allow this method on the requested resource ({method} {path})"
            ),
        )
    }

    /// 410 for a watch from a resourceVersion older than the kept history.
    pub fn expired(rv: u64, oldest: u64) -> Self {
        Self::new(
            410,
            "Expired",
            format!("too old resource version: {rv} ({oldest})"),
        )
    }

    /// 415 for a patch type the server does not know.
    pub fn unsupported_media_type(content_type: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {content_type:?})"
            ),
        )
    }

    /// 429 as `errors.NewTooManyRequests` builds it: a positive `retry_after` goes into
    /// `details.retryAfterSeconds` and the `Retry-After` header (upstream's `ErrorNegotiated`
    /// sets the header only for a positive value), a zero one into neither.
    pub fn too_many_requests(message: impl Into<String>, retry_after: u64, causes: Value) -> Self {
        let mut err = Self::new(429, "TooManyRequests", message);
        let mut details = json!({"causes": causes});
        if retry_after > 0 {
            details["retryAfterSeconds"] = json!(retry_after);
            err.retry_after = Some(retry_after);
        }
        err.details = Some(details);
        err
    }

    /// 504 as a server whose storage did not answer in time reports it
    /// (`errors.NewTimeoutError`), for injected timeouts.
    pub fn timeout(message: impl Into<String>) -> Self {
        Self::new(
            504,
            "Timeout",
            format!(
                "Timeout: request did not complete within the allotted timeout: {}",
                message.into()
            ),
        )
    }

    /// 500 with upstream's empty reason (a plain Go error turned into a Status).
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "", message)
    }

    /// 500 with reason `InternalError`, as injected faults look to clients.
    pub fn internal_error(message: impl Into<String>) -> Self {
        Self::new(
            500,
            "InternalError",
            format!("Internal error occurred: {}", message.into()),
        )
    }

    /// The `Status` object for the response body.
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "code": self.code,
        });
        if !self.reason.is_empty() {
            status["reason"] = json!(self.reason);
        }
        if let Some(details) = &self.details {
            status["details"] = details.clone();
        }
        status
    }
}

/// The `Status` a successful eviction or delete returns.
pub fn success() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201})
}
