//! The preStop handshake over a Unix socket. `quiesce-init prestop` (exec'd by the kubelet as
//! the preStop hook, in the same container) sends `drain`; PID 1 starts draining as on SIGTERM
//! and answers `done` once the drain delay has passed, so the hook returns — and the kubelet
//! sends SIGTERM — only after endpoints had time to drop the pod.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
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

/// Listens on `path` (replacing a stale socket) and forwards requests to `to`, waking the
/// supervisor's poll with `wake`.
pub fn listen(path: &Path, to: Sender<Request>, wake: Waker) -> std::io::Result<()> {
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path)?;
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
    Ok(())
}

/// Tells a waiting prestop hook that the delay is over.
pub fn release(mut stream: UnixStream) {
    let _ = stream.write_all(b"done\n");
}

/// The client side: asks PID 1 to drain and waits for `done`, at most `timeout`.
pub fn request_drain(path: &Path, timeout: Duration) -> Result<Duration, String> {
    let started = Instant::now();
    let mut stream = UnixStream::connect(path)
        .map_err(|e| format!("cannot reach quiesce-init at {}: {e} (is PID 1 quiesce-init with the same --control-socket?)", path.display()))?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    stream
        .write_all(b"drain\n")
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).map_err(|e| {
        format!(
            "no answer from quiesce-init within {}: {e}",
            humantime::format_duration(timeout)
        )
    })?;
    if line.trim() == "done" {
        Ok(started.elapsed())
    } else {
        Err(format!("quiesce-init answered {line:?} instead of done"))
    }
}
