//! The readiness endpoint and file: 200 before the drain (or the app's own answer, with an
//! upstream), 503 from the drain's first instant, so the kubelet's readiness probe — and with
//! it EndpointSlices, kube-proxy and load balancers — stop routing to the pod as early as
//! possible.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::{http, log};

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

    /// Serves readiness on `addr` from a thread.
    pub fn serve(&self, addr: SocketAddr, upstream: Option<String>) -> std::io::Result<SocketAddr> {
        let listener = TcpListener::bind(addr)?;
        let bound = listener.local_addr()?;
        let state = self.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let state = state.clone();
                let upstream = upstream.clone();
                std::thread::spawn(move || answer(stream, &state, upstream.as_deref()));
            }
        });
        Ok(bound)
    }
}

fn answer(mut stream: TcpStream, state: &Readiness, upstream: Option<&str>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut buf = [0u8; 1024];
    let _ = stream.read(&mut buf);
    let (status, body) = if state.draining() {
        ("503 Service Unavailable", "draining\n")
    } else {
        match upstream.map(|url| http::request("GET", url, Duration::from_secs(1))) {
            None | Some(Ok(200..=399)) => ("200 OK", "ready\n"),
            Some(_) => ("503 Service Unavailable", "upstream not ready\n"),
        }
    };
    let reply = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(reply.as_bytes());
}
