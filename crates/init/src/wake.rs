//! Wakes the supervisor's poll from another thread (the control socket, the on-drain call):
//! one end of a socket pair is polled, the other written to.

use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;

/// The writing end; cheap to clone.
#[derive(Clone)]
pub struct Waker(Arc<UnixStream>);

/// The polled end.
pub struct Woken(UnixStream);

/// A connected pair.
pub fn pair() -> std::io::Result<(Waker, Woken)> {
    let (tx, rx) = UnixStream::pair()?;
    tx.set_nonblocking(true)?;
    rx.set_nonblocking(true)?;
    Ok((Waker(Arc::new(tx)), Woken(rx)))
}

impl Waker {
    /// Makes the next poll return. A full buffer already means a wake-up is pending.
    pub fn wake(&self) {
        let _ = (&*self.0).write(b"x");
    }
}

impl Woken {
    /// Empties the pipe after a wake-up.
    pub fn clear(&self) {
        let mut buf = [0u8; 64];
        while matches!((&self.0).read(&mut buf), Ok(n) if n > 0) {}
    }
}

impl AsFd for Woken {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}
