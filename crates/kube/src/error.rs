//! The one error type of this crate.

/// Why a drain step could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API server refused or failed a request in a way retrying will not fix.
    #[error("Kubernetes API: {0}")]
    Kube(kube::Error),
    /// The API server was overloaded or failed (429, 5xx other than 501), or the connection
    /// did (refused, reset, timed out): the same request may well succeed later. Callers decide
    /// from this, not from kube-rs internals, whether to retry or hand the work back.
    #[error("Kubernetes API (transient): {0}")]
    Transient(kube::Error),
    /// A watch could not be (re)established.
    #[error("watch: {0}")]
    Watch(#[from] kube::runtime::watcher::Error),
    /// The drain deadline passed while the engine was waiting for something.
    #[error("deadline passed while {0}")]
    Deadline(String),
    /// After the cordon, the fresh read found what stops the drain (a pod stuck terminating,
    /// pods that keep arriving, a blocker that appeared); the report names each.
    #[error("blocked: {0}")]
    Blocked(String),
    /// The cluster does not have an object the plan relies on.
    #[error("{0} not found")]
    NotFound(String),
    /// An object from the API server lacked a field the engine needs.
    #[error("{what} has no {field}")]
    Incomplete {
        /// The object.
        what: String,
        /// The missing field.
        field: &'static str,
    },
    /// The Node's drain record could not be read or written consistently.
    #[error("drain record on node {node}: {why}")]
    Record {
        /// The node.
        node: String,
        /// What was wrong with it.
        why: String,
    },
    /// A conditional write of the Node (the fence, the record) kept meeting conflicts.
    #[error("node {node}: {why}")]
    Contended {
        /// The node.
        node: String,
        /// How often it was tried.
        why: String,
    },
}

impl Error {
    /// Whether trying again later may succeed (the drainer keeps the work instead of failing
    /// it). Deadlines are not transient: the time given is spent.
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Transient(_))
    }
}

impl From<kube::Error> for Error {
    /// Sorts client errors into transient and permanent once, here, so no caller needs to
    /// know kube-rs's variants.
    fn from(err: kube::Error) -> Self {
        if transient(&err) {
            Error::Transient(err)
        } else {
            Error::Kube(err)
        }
    }
}

/// Errors worth retrying: the server was overloaded or failed, or the connection did. Public
/// so that callers making their own requests (the drainer's Node record) judge them the same way.
pub fn transient(err: &kube::Error) -> bool {
    match err {
        kube::Error::Api(status) => {
            status.code == 429 || (status.code >= 500 && status.code != 501)
        }
        kube::Error::HyperError(_) | kube::Error::Service(_) | kube::Error::ReadEvents(_) => true,
        _ => false,
    }
}

/// Shorthand for this crate's results.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16) -> kube::Error {
        kube::Error::Api(Box::new(
            kube::core::Status::failure("x", "y").with_code(code),
        ))
    }

    #[test]
    fn overload_and_server_failures_are_transient_and_client_errors_are_not() {
        for code in [429, 500, 502, 503, 504] {
            assert!(Error::from(status(code)).is_transient(), "{code}");
        }
        for code in [400, 403, 404, 409, 422, 501] {
            assert!(!Error::from(status(code)).is_transient(), "{code}");
        }
        assert!(!Error::Deadline("x".into()).is_transient());
    }
}
