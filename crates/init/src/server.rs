//! A bounded connection server for the listeners inside PID 1 (readiness, control socket).
//!
//! One thread polls the listener and every open connection: no thread per connection (running
//! out of threads aborts PID 1, and the container with it), a cap on open connections (the
//! oldest is dropped to make room, so a flood of idle connections cannot lock out the next
//! probe), a deadline and a size cap for each request. A complete request is handed to
//! `handle`, which must not block.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

/// A listener this server can run: TCP or Unix.
pub trait Listener: AsFd {
    /// The accepted connection.
    type Stream: Read + Write + AsFd;
    /// Accepts one connection (the listener is non-blocking).
    fn accept_one(&self) -> std::io::Result<Self::Stream>;
    /// Makes the listener non-blocking.
    fn nonblocking(&self) -> std::io::Result<()>;
    /// Makes an accepted connection non-blocking.
    fn stream_nonblocking(stream: &Self::Stream) -> std::io::Result<()>;
}

impl Listener for TcpListener {
    type Stream = TcpStream;
    fn accept_one(&self) -> std::io::Result<TcpStream> {
        self.accept().map(|(s, _)| s)
    }
    fn nonblocking(&self) -> std::io::Result<()> {
        self.set_nonblocking(true)
    }
    fn stream_nonblocking(stream: &TcpStream) -> std::io::Result<()> {
        stream.set_nonblocking(true)
    }
}

impl Listener for UnixListener {
    type Stream = UnixStream;
    fn accept_one(&self) -> std::io::Result<UnixStream> {
        self.accept().map(|(s, _)| s)
    }
    fn nonblocking(&self) -> std::io::Result<()> {
        self.set_nonblocking(true)
    }
    fn stream_nonblocking(stream: &UnixStream) -> std::io::Result<()> {
        stream.set_nonblocking(true)
    }
}

/// What one server accepts.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Open connections at most; a new one beyond closes the oldest.
    pub connections: usize,
    /// A request not complete this long after its connection was accepted is dropped.
    pub deadline: Duration,
    /// A request is at most this many bytes; at the cap it is handed over as it is.
    pub size: usize,
}

struct Pending<S> {
    stream: S,
    deadline: Instant,
    request: Vec<u8>,
}

/// Serves `listener` forever on the calling thread. `complete` says whether the bytes read so
/// far are a whole request; `handle` gets the connection (still non-blocking) and the request.
pub fn serve<L: Listener>(
    listener: L,
    limits: Limits,
    complete: impl Fn(&[u8]) -> bool,
    mut handle: impl FnMut(L::Stream, Vec<u8>),
) {
    if let Err(e) = listener.nonblocking() {
        crate::log::phase(&format!(
            "listener cannot be made non-blocking ({e}); not serving"
        ));
        return;
    }
    let mut open: VecDeque<Pending<L::Stream>> = VecDeque::new();
    loop {
        let now = Instant::now();
        let timeout = open
            .iter()
            .map(|p| p.deadline.saturating_duration_since(now))
            .min()
            .map_or(PollTimeout::NONE, |d| {
                PollTimeout::from(d.as_millis().clamp(1, 60_000) as u16)
            });
        let mut ready = vec![false; open.len()];
        let listener_ready = {
            let mut fds: Vec<PollFd> = Vec::with_capacity(open.len() + 1);
            fds.push(PollFd::new(listener.as_fd(), PollFlags::POLLIN));
            fds.extend(
                open.iter()
                    .map(|p| PollFd::new(borrow(&p.stream), PollFlags::POLLIN)),
            );
            if poll(&mut fds, timeout).is_err() {
                continue;
            }
            for (r, fd) in ready.iter_mut().zip(&fds[1..]) {
                *r = fd.revents().is_some_and(|e| !e.is_empty());
            }
            fds[0].revents().is_some_and(|e| !e.is_empty())
        };
        // Read before accepting, so the indices from poll still match.
        let mut i = 0;
        open.retain_mut(|p| {
            let keep = !ready[i] || read_more(p, limits.size);
            i += 1;
            keep
        });
        let now = Instant::now();
        let mut k = 0;
        while k < open.len() {
            if complete(&open[k].request) || open[k].request.len() >= limits.size {
                let p = open.remove(k).expect("index in range");
                handle(p.stream, p.request);
            } else if open[k].deadline <= now {
                open.remove(k);
            } else {
                k += 1;
            }
        }
        if listener_ready {
            accept_all(&listener, &mut open, limits);
        }
    }
}

fn borrow<S: AsFd>(s: &S) -> BorrowedFd<'_> {
    s.as_fd()
}

/// Reads what is there; false when the connection is finished (closed, failed) without a
/// whole request.
fn read_more<S: Read>(p: &mut Pending<S>, cap: usize) -> bool {
    let mut buf = [0u8; 512];
    let room = cap.saturating_sub(p.request.len()).min(buf.len());
    match p.stream.read(&mut buf[..room]) {
        Ok(0) => false,
        Ok(n) => {
            p.request.extend_from_slice(&buf[..n]);
            true
        }
        Err(e) => matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted),
    }
}

fn accept_all<L: Listener>(listener: &L, open: &mut VecDeque<Pending<L::Stream>>, limits: Limits) {
    loop {
        match listener.accept_one() {
            Ok(stream) => {
                if L::stream_nonblocking(&stream).is_err() {
                    continue;
                }
                if open.len() >= limits.connections {
                    open.pop_front();
                }
                open.push_back(Pending {
                    stream,
                    deadline: Instant::now() + limits.deadline,
                    request: Vec::new(),
                });
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            // Out of descriptors: make room by dropping the oldest, or wait for the next poll.
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(nix::libc::EMFILE | nix::libc::ENFILE)
                ) =>
            {
                if open.pop_front().is_none() {
                    return;
                }
            }
            Err(_) => return,
        }
    }
}

/// Writes a short reply on a non-blocking connection, giving up if its buffer is full.
pub fn reply<S: Write>(mut stream: S, bytes: &[u8]) {
    let _ = stream.write_all(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    fn start(limits: Limits) -> (std::net::SocketAddr, mpsc::Receiver<Vec<u8>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            serve(
                listener,
                limits,
                |r| r.ends_with(b"\n"),
                move |s, r| {
                    reply(s, b"ok\n");
                    let _ = tx.send(r);
                },
            )
        });
        (addr, rx)
    }

    #[test]
    fn the_oldest_connection_makes_room_and_requests_are_capped() {
        let limits = Limits {
            connections: 4,
            deadline: Duration::from_secs(30),
            size: 8,
        };
        let (addr, handled) = start(limits);
        let idle: Vec<TcpStream> = (0..10).map(|_| TcpStream::connect(addr).unwrap()).collect();
        let mut last = TcpStream::connect(addr).unwrap();
        last.write_all(b"hi\n").unwrap();
        assert_eq!(
            handled.recv_timeout(Duration::from_secs(10)).unwrap(),
            b"hi\n",
            "the newest connection is served past the cap"
        );
        let mut first = &idle[0];
        let mut buf = [0u8; 4];
        first
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        assert_eq!(first.read(&mut buf).unwrap(), 0, "the oldest was closed");
        let mut long = TcpStream::connect(addr).unwrap();
        long.write_all(b"0123456789abcdef").unwrap();
        assert_eq!(
            handled.recv_timeout(Duration::from_secs(10)).unwrap(),
            b"01234567",
            "a request stops at the size cap"
        );
    }

    #[test]
    fn an_incomplete_request_is_dropped_at_its_deadline() {
        let limits = Limits {
            connections: 4,
            deadline: Duration::from_millis(100),
            size: 64,
        };
        let (addr, _handled) = start(limits);
        let mut slow = TcpStream::connect(addr).unwrap();
        slow.write_all(b"no newline").unwrap();
        slow.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut buf = [0u8; 4];
        assert!(
            matches!(slow.read(&mut buf), Ok(0) | Err(_)),
            "closed without an answer"
        );
    }
}
