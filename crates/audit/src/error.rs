use std::path::PathBuf;

/// Why an input could not be audited; every variant names the input.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file or directory could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The input.
        path: PathBuf,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// The YAML or JSON does not parse, or breaks the parser's budget (alias bombs, depth).
    #[error("{path}:{line}: not valid YAML/JSON: {message}")]
    Parse {
        /// The input.
        path: PathBuf,
        /// 1-based line of the problem (0 when the parser gives none).
        line: u64,
        /// The parser's reason.
        message: String,
    },
    /// The input is bigger than we are willing to hold in memory.
    #[error("{path}: {size} bytes is larger than the {limit}-byte limit per file")]
    TooLarge {
        /// The input.
        path: PathBuf,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// The live cluster could not be listed.
    #[error("listing {what} from the cluster: {source}")]
    Cluster {
        /// The resource being listed.
        what: String,
        /// kube-rs's reason.
        source: kube::Error,
    },
    /// The cluster serves none of the versions we read a kind at.
    #[error("the cluster serves {kind} at none of the versions {versions}")]
    NotServed {
        /// The kind.
        kind: String,
        /// The versions tried.
        versions: String,
    },
}
