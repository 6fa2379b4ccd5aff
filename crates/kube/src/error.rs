//! The one error type of this crate.

/// Why a drain step could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API server refused or failed a request (after retries where retrying made sense).
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// A watch could not be (re)established.
    #[error("watch: {0}")]
    Watch(#[from] kube::runtime::watcher::Error),
    /// The drain deadline passed while the engine was waiting for something.
    #[error("deadline passed while {0}")]
    Deadline(String),
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
}

/// Shorthand for this crate's results.
pub type Result<T, E = Error> = std::result::Result<T, E>;
