//! The readiness endpoint and file: 200 before the drain (or the app's own answer, with an
//! upstream), 503 from the drain's first instant, so the kubelet's readiness probe — and with
//! it EndpointSlices, kube-proxy and load balancers — stop routing to the pod as early as
//! possible.
//!
//! Two threads whatever the load: the bounded server (see `server`) and one that answers.
//! Probes waiting together share one upstream check, so a slow app cannot pile up threads
//! or connections in PID 1.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::Duration;

use crate::server::{self, Limits};
use crate::{http, log};

/// Kubelet probes send one small request at once; 2 s covers a probe's default timeout (1 s)
/// with room, and 256 open connections cover any honest prober many times over.
const LIMITS: Limits = Limits {
    connections: 256,
    deadline: Duration::from_secs(2),
    size: 1024,
};

/// Probes waiting for the answering thread at most; beyond, they are told 503 at once.
const QUEUE: usize = 256;

/// Shared readiness state: flipped once, never back.
#[derive(Debug, Clone, Default)]
pub struct Readiness {
    draining: Arc<AtomicBool>,
}

impl Readiness {
    /// Marks the pod not ready and removes the ready file.
    pub fn start_draining(&self, ready_file: Option<&PathBuf>) {
        self.draining.store(true, Ordering::SeqCst);
        if let Some(path) = ready_file
            && let Err(e) = std::fs::remove_file(path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            log::phase(&format!(
                "could not remove ready file {}: {e}",
                path.display()
            ));
        }
    }

    fn draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Serves readiness on `addr`; returns the bound address.
    pub fn serve(&self, addr: SocketAddr, upstream: Option<String>) -> std::io::Result<SocketAddr> {
        let listener = TcpListener::bind(addr)?;
        let bound = listener.local_addr()?;
        let (to_answer, waiting) = sync_channel::<TcpStream>(QUEUE);
        let state = self.clone();
        std::thread::spawn(move || answer_all(&waiting, &state, upstream.as_deref()));
        std::thread::spawn(move || {
            server::serve(listener, LIMITS, request_complete, |stream, _| {
                hand_over(&to_answer, stream)
            })
        });
        Ok(bound)
    }
}

fn request_complete(request: &[u8]) -> bool {
    request.windows(4).any(|w| w == b"\r\n\r\n") || request.windows(2).any(|w| w == b"\n\n")
}

fn hand_over(to_answer: &SyncSender<TcpStream>, stream: TcpStream) {
    match to_answer.try_send(stream) {
        Ok(()) => {}
        Err(TrySendError::Full(stream) | TrySendError::Disconnected(stream)) => {
            server::reply(stream, &response("503 Service Unavailable", "busy\n"));
        }
    }
}

/// Answers every probe that is waiting with one status: one upstream check per batch.
fn answer_all(waiting: &Receiver<TcpStream>, state: &Readiness, upstream: Option<&str>) {
    while let Ok(first) = waiting.recv() {
        let mut batch = vec![first];
        batch.extend(waiting.try_iter());
        let (status, body) = if state.draining() {
            ("503 Service Unavailable", "draining\n")
        } else {
            match upstream.map(|url| http::request("GET", url, Duration::from_secs(1))) {
                None | Some(Ok(200..=399)) => ("200 OK", "ready\n"),
                Some(_) => ("503 Service Unavailable", "upstream not ready\n"),
            }
        };
        let reply = response(status, body);
        for stream in batch {
            server::reply(stream, &reply);
        }
    }
}

fn response(status: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}
