//! Drain until quiet: counts the new inbound connections to the app's ports after the trigger,
//! so the drain ends when traffic has actually stopped arriving (endpoint removal has reached
//! every client) instead of after a guessed delay.
//!
//! A connection is new when it was not open at the trigger; it counts when its local port is a
//! traffic port and its peer is not an ignored address (the kubelet probes from the node's
//! address every period, so a pod would never be quiet). Every connection is seen, however
//! short (see `sockdiag`); it counts once, at the moment it is first seen, which is never
//! earlier than when it was accepted, so the quiet period is never cut short.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use crate::config::Ports;
use crate::sockdiag::{Diag, EventsError, LISTEN, Socket};

/// How often the live table is dumped; destroy notifications wake the watcher at once.
const DUMP_EVERY: Duration = Duration::from_millis(50);

/// What the watcher has seen since the trigger.
#[derive(Debug, Clone, Default)]
pub struct Seen {
    /// When the latest new connection was seen.
    pub last: Option<Instant>,
    /// New connections seen.
    pub count: u64,
    /// A problem the supervisor should log once (notifications lost, dumps failing); each
    /// one also counts as traffic, so it can only make the drain longer.
    pub trouble: Option<String>,
}

/// A running watcher; dropping it stops the thread.
pub struct Watch {
    seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
}

impl Watch {
    /// Starts watching the namespace's TCP sockets. `own_port` (the readiness endpoint) is never
    /// a traffic port.
    pub fn start(
        ports: Ports,
        ignore_from: Vec<IpAddr>,
        own_port: Option<u16>,
    ) -> nix::Result<Watch> {
        let mut diag = Diag::open()?;
        let mut counter = Counter::new(ports, ignore_from, own_port);
        let mut live = Vec::new();
        diag.dump(&mut live)?;
        counter.baseline(&live);
        // Sockets freed between the subscription and the end of that dump were open at the
        // trigger (or opened and closed within these few milliseconds, before the drain's
        // clock starts, where they could not change when it ends): not new.
        let mut early = Vec::new();
        let _ = diag.read_events(&mut early);
        counter.forget(&early);
        let seen = Arc::new(Mutex::new(Seen::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, halt) = (seen.clone(), stop.clone());
        std::thread::spawn(move || watch(diag, counter, &s, &halt));
        Ok(Watch { seen, stop })
    }

    /// A copy of what has been seen so far.
    pub fn seen(&self) -> Seen {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn watch(mut diag: Diag, mut counter: Counter, seen: &Mutex<Seen>, stop: &AtomicBool) {
    let mut sockets = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        let mut fds = [PollFd::new(diag.events_fd(), PollFlags::POLLIN)];
        let _ = poll(&mut fds, PollTimeout::from(DUMP_EVERY.as_millis() as u16));
        sockets.clear();
        let mut trouble = match diag.read_events(&mut sockets) {
            Ok(()) => None,
            Err(EventsError::Lost) => Some("connection notifications were lost".to_string()),
            Err(EventsError::Io(e)) => Some(format!("reading connection notifications: {e}")),
        };
        let mut new = counter.gone(&sockets, Instant::now());
        sockets.clear();
        match diag.dump(&mut sockets) {
            Ok(()) => new += counter.live(&sockets),
            Err(e) => trouble = Some(format!("listing connections: {e}")),
        }
        if new > 0 || trouble.is_some() {
            let mut s = seen.lock().unwrap_or_else(PoisonError::into_inner);
            s.last = Some(Instant::now());
            s.count += new;
            if trouble.is_some() {
                s.trouble = trouble;
            }
        }
    }
}

/// Decides which sockets are new traffic; kept apart from the kernel so it can be tested.
struct Counter {
    ports: Ports,
    ignore_from: Vec<IpAddr>,
    own_port: Option<u16>,
    /// When watching started (just after the trigger).
    started: Instant,
    /// Ports seen listening (for [`Ports::Listening`]).
    listening: HashSet<u16>,
    /// Connections open at the trigger: not new.
    before: HashSet<u64>,
    /// New connections counted and still open, so a later dump does not count them again.
    counted: HashSet<u64>,
}

impl Counter {
    fn new(ports: Ports, ignore_from: Vec<IpAddr>, own_port: Option<u16>) -> Counter {
        Counter {
            started: Instant::now(),
            ports,
            ignore_from,
            own_port,
            listening: HashSet::new(),
            before: HashSet::new(),
            counted: HashSet::new(),
        }
    }

    fn note_listeners(&mut self, live: &[Socket]) {
        self.listening.extend(
            live.iter()
                .filter(|s| s.state == LISTEN)
                .map(|s| s.local_port),
        );
    }

    fn is_traffic(&self, s: &Socket) -> bool {
        let port_counts = match &self.ports {
            Ports::Listed(ports) => ports.contains(&s.local_port),
            Ports::Listening => {
                self.listening.contains(&s.local_port) && Some(s.local_port) != self.own_port
            }
        };
        s.state != LISTEN
            && s.remote_port != 0
            && port_counts
            && !self.ignore_from.contains(&s.remote)
    }

    /// The first dump: what is open at the trigger is not new.
    fn baseline(&mut self, live: &[Socket]) {
        self.note_listeners(live);
        let before: Vec<u64> = live
            .iter()
            .filter(|s| self.is_traffic(s))
            .map(|s| s.cookie)
            .collect();
        self.before.extend(before);
    }

    /// Sockets that are not to count, nor to be looked for again.
    fn forget(&mut self, gone: &[Socket]) {
        for s in gone {
            self.before.remove(&s.cookie);
        }
    }

    /// A later dump; returns how many new connections it shows.
    fn live(&mut self, live: &[Socket]) -> u64 {
        self.note_listeners(live);
        let mut new = 0;
        for s in live {
            if self.is_traffic(s)
                && !self.before.contains(&s.cookie)
                && self.counted.insert(s.cookie)
            {
                new += 1;
            }
        }
        new
    }

    /// Whether a socket reported gone at `now` last received data before the watch started:
    /// a connection from before the trigger whose notification came late (the kernel sends
    /// them from a work queue, which can lag the socket's removal from the table under load).
    fn predates(&self, s: &Socket, now: Instant) -> bool {
        s.idle_ms.is_some_and(|ms| {
            now.checked_sub(Duration::from_millis(ms.into()))
                .is_some_and(|last| last < self.started)
        })
    }

    /// Destroy notifications seen at `now`; returns how many were connections never seen
    /// alive.
    fn gone(&mut self, gone: &[Socket], now: Instant) -> u64 {
        let mut new = 0;
        for s in gone {
            let known = self.before.remove(&s.cookie) | self.counted.remove(&s.cookie);
            if !known && self.is_traffic(s) && !self.predates(s, now) {
                new += 1;
            }
        }
        new
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn sock(state: u8, local: u16, remote: [u8; 4], remote_port: u16, cookie: u64) -> Socket {
        Socket {
            state,
            local_port: local,
            remote_port,
            remote: IpAddr::V4(Ipv4Addr::from(remote)),
            cookie,
            idle_ms: None,
        }
    }

    #[test]
    fn counts_each_new_connection_once_and_leaves_out_probes_and_old_ones() {
        let node = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
        let mut c = Counter::new(Ports::Listening, vec![node], Some(8086));
        let listen = sock(LISTEN, 8080, [0, 0, 0, 0], 0, 1);
        let readiness = sock(LISTEN, 8086, [0, 0, 0, 0], 0, 2);
        let old = sock(1, 8080, [10, 0, 1, 5], 40000, 3);
        c.baseline(&[listen, readiness, old]);
        let new = sock(1, 8080, [10, 0, 1, 6], 40001, 4);
        let probe = sock(1, 8080, [10, 0, 0, 1], 40002, 5);
        let to_readiness = sock(1, 8086, [10, 0, 1, 7], 40003, 6);
        let outbound = sock(1, 51000, [10, 0, 9, 9], 8080, 7);
        assert_eq!(
            c.live(&[listen, old, new, probe, to_readiness, outbound]),
            1
        );
        assert_eq!(c.live(&[listen, old, new]), 0, "counted once while open");
        assert_eq!(
            c.gone(&[old, new], Instant::now()),
            0,
            "known ones closing are not new"
        );
        let short = sock(7, 8080, [10, 0, 1, 8], 40004, 8);
        assert_eq!(
            c.gone(&[short, probe], Instant::now()),
            1,
            "a connection never seen alive counts"
        );
        let late = Socket {
            idle_ms: Some(60_000),
            ..sock(7, 8080, [10, 0, 1, 9], 40005, 9)
        };
        assert_eq!(
            c.gone(&[late], Instant::now() + Duration::from_millis(10)),
            0,
            "a late notification of a connection idle since before the watch"
        );
        let fresh = Socket {
            idle_ms: Some(0),
            ..sock(7, 8080, [10, 0, 1, 9], 40006, 10)
        };
        assert_eq!(c.gone(&[fresh], Instant::now()), 1);
        let closed_listener = sock(7, 8080, [0, 0, 0, 0], 0, 1);
        assert_eq!(c.gone(&[closed_listener], Instant::now()), 0);
    }

    #[test]
    fn listed_ports_replace_the_listening_ones() {
        let mut c = Counter::new(Ports::Listed(vec![15006]), Vec::new(), None);
        c.baseline(&[sock(LISTEN, 8080, [0; 4], 0, 1)]);
        assert_eq!(
            c.live(&[
                sock(1, 8080, [127, 0, 0, 6], 40000, 2),
                sock(1, 15006, [10, 0, 1, 6], 40001, 3),
            ]),
            1,
            "the sidecar's inbound port, not the app's pooled loopback connections"
        );
    }
}
