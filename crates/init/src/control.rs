//! The preStop handshake over a Unix socket. `quiesce-init prestop` (exec'd by the kubelet as
//! the preStop hook, in the same container) sends `drain`; PID 1 starts draining as on SIGTERM
//! and answers `done` once the drain delay has passed, so the hook returns — and the kubelet
//! sends SIGTERM — only after endpoints had time to drop the pod.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use crate::server::{self, Limits};
use crate::wake::Waker;

/// `drain\n` is the whole protocol: a hook sends it at once, so a second and a few bytes
/// bound what a stuck or hostile client can hold.
const LIMITS: Limits = Limits {
    connections: 64,
    deadline: Duration::from_secs(1),
    size: 64,
};

/// What the control thread tells the supervisor.
pub enum Request {
    /// A prestop hook asks to drain; answer on this stream when the delay is over.
    Drain(UnixStream),
}

/// The bound socket file, removed when quiesce-init is done with it (unless another
/// quiesce-init has replaced it since).
pub struct Bound {
    path: PathBuf,
    inode: u64,
}

impl Drop for Bound {
    fn drop(&mut self) {
        if std::fs::metadata(&self.path).is_ok_and(|m| m.ino() == self.inode) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Listens on `path` (replacing a stale socket) and forwards requests to `to`, waking the
/// supervisor's poll with `wake`.
pub fn listen(path: &Path, to: Sender<Request>, wake: Waker) -> std::io::Result<Bound> {
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path)?;
    let bound = Bound {
        path: path.to_path_buf(),
        inode: std::fs::metadata(path)?.ino(),
    };
    std::thread::spawn(move || {
        server::serve(
            listener,
            LIMITS,
            |r| r.contains(&b'\n'),
            |stream, request| {
                // The stream stays non-blocking: the supervisor's later `done` (the first
                // bytes written to it) fits its buffer, and PID 1 never waits on a client.
                if request.trim_ascii() != b"drain" {
                    return;
                }
                if to.send(Request::Drain(stream)).is_ok() {
                    wake.wake();
                }
            },
        )
    });
    Ok(bound)
}

/// Tells a waiting prestop hook that the delay is over.
pub fn release(mut stream: UnixStream) {
    let _ = stream.write_all(b"done\n");
}

/// Why `quiesce-init prestop` could not complete the handshake.
#[derive(Debug, thiserror::Error)]
pub enum PrestopError {
    /// Nothing listens on the socket.
    #[error(
        "cannot reach quiesce-init at {path}: {source} (is PID 1 quiesce-init with the same --control-socket?)"
    )]
    Unreachable {
        /// The socket.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// Sending the request failed.
    #[error("{path}: {source}")]
    Send {
        /// The socket.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// No `done` within the timeout (or the connection failed while waiting).
    #[error("no answer from quiesce-init within {}: {source}", humantime::format_duration(*.timeout))]
    NoAnswer {
        /// How long the hook waited.
        timeout: Duration,
        /// The error.
        source: std::io::Error,
    },
    /// PID 1 closed the connection or said something else.
    #[error("quiesce-init answered {0:?} instead of done")]
    Unexpected(String),
}

/// The client side: asks PID 1 to drain and waits for `done`, at most `timeout`.
pub fn request_drain(path: &Path, timeout: Duration) -> Result<Duration, PrestopError> {
    let started = Instant::now();
    let shown = || path.display().to_string();
    let mut stream = UnixStream::connect(path).map_err(|source| PrestopError::Unreachable {
        path: shown(),
        source,
    })?;
    let send = |source| PrestopError::Send {
        path: shown(),
        source,
    };
    stream.set_read_timeout(Some(timeout)).map_err(send)?;
    stream.write_all(b"drain\n").map_err(send)?;
    let mut line = String::new();
    BufReader::new(stream)
        .read_line(&mut line)
        .map_err(|source| PrestopError::NoAnswer { timeout, source })?;
    if line.trim() == "done" {
        Ok(started.elapsed())
    } else {
        Err(PrestopError::Unexpected(line))
    }
}
