//! TCP sockets of this network namespace from the kernel's sock_diag netlink interface: a dump
//! of the live ones, and the destroy notifications (multicast groups
//! `SKNLGRP_INET{,6}_TCP_DESTROY`, Linux ≥ 4.9) that report every socket when it is freed.
//! Together they see every connection, however short: it is either alive at a dump or
//! reported when it goes. Unprivileged processes may do both (the family sets
//! `NL_CFG_F_NONROOT_RECV`; see the kernel's net/core/sock_diag.c and `man 7 sock_diag`).
//!
//! The messages are the kernel's fixed-layout `struct inet_diag_req_v2` / `inet_diag_msg`
//! (include/uapi/linux/inet_diag.h), built and read by hand: a netlink crate would bring a
//! dependency tree into PID 1 for two structs.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use nix::errno::Errno;
use nix::sys::socket::{
    AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, bind, recv, sendto,
    socket,
};

const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_DUMP: u16 = 0x300;
const IPPROTO_TCP: u8 = 6;
const HEADER: usize = 16;
const MSG: usize = 72;
/// Multicast group bits: 1 << (SKNLGRP_INET_TCP_DESTROY - 1) and
/// 1 << (SKNLGRP_INET6_TCP_DESTROY - 1).
const DESTROY_GROUPS: u32 = (1 << 0) | (1 << 2);

/// `idiag_timer` of a TIME_WAIT remnant (inet_twsk_diag_fill in net/ipv4/inet_diag.c); a
/// full socket's is 0, 1, 2 or 4.
const TIMEWAIT_TIMER: u8 = 3;

/// TCP_LISTEN in the kernel's numbering.
pub const LISTEN: u8 = 10;

/// The states a dump asks for: the established side of a connection until it is freed, and
/// listeners. Not SYN_RECV (not yet accepted) nor TIME_WAIT (a freed socket's remains, already
/// reported by its destroy notification). The kernel also lists those remains under
/// FIN_WAIT2 (their substate); they are told apart by their timer (see [`TIMEWAIT_TIMER`]).
const STATES: u32 = (1 << 1) // ESTABLISHED
    | (1 << 4) // FIN_WAIT1
    | (1 << 5) // FIN_WAIT2
    | (1 << 7) // CLOSE
    | (1 << 8) // CLOSE_WAIT
    | (1 << 9) // LAST_ACK
    | (1 << 10) // LISTEN
    | (1 << 11); // CLOSING

/// One TCP socket as the kernel reports it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Socket {
    /// The kernel's state number (1 ESTABLISHED … 10 LISTEN).
    pub state: u8,
    /// The local port.
    pub local_port: u16,
    /// The peer's port (0 for a listener).
    pub remote_port: u16,
    /// The peer's address (an IPv4-mapped IPv6 address as IPv4).
    pub remote: IpAddr,
    /// The kernel's unique id of the socket.
    pub cookie: u64,
    /// Milliseconds since it last received data (`tcpi_last_data_recv`), in destroy
    /// notifications, which carry a `struct tcp_info`. A connection's handshake counts as
    /// received data, so a new connection's is never older than the connection.
    pub idle_ms: Option<u32>,
}

/// Why the destroy notifications could not all be read.
#[derive(Debug)]
pub enum EventsError {
    /// The socket's buffer overflowed: some notifications were lost.
    Lost,
    /// Reading failed.
    Io(Errno),
}

/// A dump socket and a subscription to destroy notifications.
pub struct Diag {
    dump: OwnedFd,
    events: OwnedFd,
    seq: u32,
}

fn netlink() -> nix::Result<OwnedFd> {
    socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        SockProtocol::NetlinkSockDiag,
    )
}

impl Diag {
    /// Subscribes first, so nothing freed between the subscription and the first dump is
    /// missed.
    pub fn open() -> nix::Result<Diag> {
        let events = netlink()?;
        bind(events.as_raw_fd(), &NetlinkAddr::new(0, DESTROY_GROUPS))?;
        // A larger buffer rides out bursts; unprivileged, the kernel caps it at rmem_max.
        let _ =
            nix::sys::socket::setsockopt(&events, nix::sys::socket::sockopt::RcvBuf, &(4 << 20));
        let dump = netlink()?;
        bind(dump.as_raw_fd(), &NetlinkAddr::new(0, 0))?;
        Ok(Diag {
            dump,
            events,
            seq: 0,
        })
    }

    /// The notifications' descriptor, to poll.
    pub fn events_fd(&self) -> BorrowedFd<'_> {
        self.events.as_fd()
    }

    /// Appends every destroy notification waiting to `out`.
    pub fn read_events(&mut self, out: &mut Vec<Socket>) -> Result<(), EventsError> {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match recv(self.events.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT) {
                Ok(n) => {
                    parse(&buf[..n], None, out);
                }
                Err(Errno::EAGAIN) => return Ok(()),
                Err(Errno::EINTR) => {}
                Err(Errno::ENOBUFS) => return Err(EventsError::Lost),
                Err(e) => return Err(EventsError::Io(e)),
            }
        }
    }

    /// Appends every live TCP socket (IPv4 and IPv6) in the asked states to `out`.
    pub fn dump(&mut self, out: &mut Vec<Socket>) -> nix::Result<()> {
        for family in [nix::libc::AF_INET as u8, nix::libc::AF_INET6 as u8] {
            self.seq = self.seq.wrapping_add(1);
            let request = request(family, self.seq);
            sendto(
                self.dump.as_raw_fd(),
                &request,
                &NetlinkAddr::new(0, 0),
                MsgFlags::empty(),
            )?;
            self.receive_dump(out)?;
        }
        Ok(())
    }

    fn receive_dump(&mut self, out: &mut Vec<Socket>) -> nix::Result<()> {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let mut fds = [nix::poll::PollFd::new(
                self.dump.as_fd(),
                nix::poll::PollFlags::POLLIN,
            )];
            // The kernel answers a dump at once; a second is a broken kernel, not a busy one.
            if nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(1000u16))? == 0 {
                return Err(Errno::ETIMEDOUT);
            }
            let n = match recv(self.dump.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT) {
                Ok(n) => n,
                Err(Errno::EAGAIN | Errno::EINTR) => continue,
                Err(e) => return Err(e),
            };
            match parse(&buf[..n], Some(self.seq), out) {
                Parsed::More => {}
                Parsed::Done => return Ok(()),
                Parsed::Error(e) => return Err(e),
            }
        }
    }
}

fn request(family: u8, seq: u32) -> Vec<u8> {
    let len = (HEADER + 56) as u32;
    let mut m = Vec::with_capacity(len as usize);
    m.extend_from_slice(&len.to_ne_bytes());
    m.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    m.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    // inet_diag_req_v2: family, protocol, ext, pad, states, then a zero inet_diag_sockid.
    m.extend_from_slice(&[family, IPPROTO_TCP, 0, 0]);
    m.extend_from_slice(&STATES.to_ne_bytes());
    m.resize(len as usize, 0);
    m
}

enum Parsed {
    More,
    Done,
    Error(Errno),
}

/// Reads the netlink messages in `buf` (those of sequence `seq`, when given) into `out`.
fn parse(buf: &[u8], seq: Option<u32>, out: &mut Vec<Socket>) -> Parsed {
    let mut at = 0;
    while at + HEADER <= buf.len() {
        let h = &buf[at..];
        let len = u32::from_ne_bytes(h[0..4].try_into().unwrap()) as usize;
        let kind = u16::from_ne_bytes(h[4..6].try_into().unwrap());
        let msg_seq = u32::from_ne_bytes(h[8..12].try_into().unwrap());
        if len < HEADER || at + len > buf.len() {
            break;
        }
        let body = &h[HEADER..len];
        if seq.is_none_or(|s| s == msg_seq) {
            match kind {
                NLMSG_DONE => return Parsed::Done,
                NLMSG_ERROR => {
                    let code = body
                        .get(0..4)
                        .map_or(0, |b| i32::from_ne_bytes(b.try_into().unwrap()));
                    return if code == 0 {
                        Parsed::Done
                    } else {
                        Parsed::Error(Errno::from_raw(-code))
                    };
                }
                // Only full sockets: a TIME_WAIT remnant of one already reported would
                // otherwise come back as a new connection with the same cookie.
                SOCK_DIAG_BY_FAMILY if body.get(2) != Some(&TIMEWAIT_TIMER) => {
                    out.extend(socket_of(body))
                }
                _ => {}
            }
        }
        at += (len + 3) & !3;
    }
    Parsed::More
}

/// One `struct inet_diag_msg`.
fn socket_of(m: &[u8]) -> Option<Socket> {
    if m.len() < MSG {
        return None;
    }
    let family = m[0] as i32;
    let remote = if family == nix::libc::AF_INET {
        IpAddr::V4(Ipv4Addr::new(m[24], m[25], m[26], m[27]))
    } else if family == nix::libc::AF_INET6 {
        let v6 = Ipv6Addr::from(<[u8; 16]>::try_from(&m[24..40]).unwrap());
        v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
    } else {
        return None;
    };
    let word = |i: usize| u32::from_ne_bytes(m[i..i + 4].try_into().unwrap()) as u64;
    Some(Socket {
        state: m[1],
        local_port: u16::from_be_bytes([m[4], m[5]]),
        remote_port: u16::from_be_bytes([m[6], m[7]]),
        remote,
        cookie: word(44) | (word(48) << 32),
        idle_ms: tcp_info_idle(&m[MSG..]),
    })
}

/// `tcpi_last_data_recv` from the INET_DIAG_INFO attribute (type 2) among `attrs`.
fn tcp_info_idle(mut attrs: &[u8]) -> Option<u32> {
    const INET_DIAG_INFO: u16 = 2;
    const LAST_DATA_RECV: usize = 52;
    while attrs.len() >= 4 {
        let len = u16::from_ne_bytes([attrs[0], attrs[1]]) as usize;
        let kind = u16::from_ne_bytes([attrs[2], attrs[3]]) & 0x3fff;
        if len < 4 || len > attrs.len() {
            return None;
        }
        let value = &attrs[4..len];
        if kind == INET_DIAG_INFO && value.len() >= LAST_DATA_RECV + 4 {
            let b = &value[LAST_DATA_RECV..LAST_DATA_RECV + 4];
            return Some(u32::from_ne_bytes(b.try_into().unwrap()));
        }
        attrs = &attrs[((len + 3) & !3).min(attrs.len())..];
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};

    /// Waits (bounded) for the destroy notification of `cookie`.
    fn wait_gone(diag: &mut Diag, cookie: u64) -> Socket {
        let mut gone = Vec::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !gone.iter().any(|s: &Socket| s.cookie == cookie) {
            assert!(
                std::time::Instant::now() < deadline,
                "no destroy notification"
            );
            let mut fds = [nix::poll::PollFd::new(
                diag.events_fd(),
                nix::poll::PollFlags::POLLIN,
            )];
            let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(100u16));
            diag.read_events(&mut gone).unwrap();
        }
        gone.into_iter().find(|s| s.cookie == cookie).unwrap()
    }

    fn served_side(diag: &mut Diag, port: u16, client_port: u16) -> Option<Socket> {
        let mut live = Vec::new();
        diag.dump(&mut live).unwrap();
        live.into_iter()
            .find(|s| s.local_port == port && s.remote_port == client_port)
    }

    /// The server closes first and the client not at all: the kernel frees the server's
    /// socket (and says so) but lists its TIME_WAIT remnant under FIN_WAIT2, same cookie.
    #[test]
    fn a_freed_sockets_remnant_is_not_listed_again() {
        let mut diag = Diag::open().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let client = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let (served, _) = listener.accept().unwrap();
        let client_port = client.local_addr().unwrap().port();
        let cookie = served_side(&mut diag, port, client_port)
            .expect("the accepted side is listed")
            .cookie;
        drop(served);
        wait_gone(&mut diag, cookie);
        assert_eq!(
            served_side(&mut diag, port, client_port),
            None,
            "a freed socket is not listed again"
        );
        drop(client);
    }

    #[test]
    fn a_dump_shows_a_listener_and_its_connection_and_a_close_is_reported() {
        let mut diag = Diag::open().expect("sock_diag works unprivileged");
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let client = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let (served, _) = listener.accept().unwrap();
        let client_port = client.local_addr().unwrap().port();
        let mut live = Vec::new();
        diag.dump(&mut live).unwrap();
        assert!(
            live.iter()
                .any(|s| s.local_port == port && s.state == LISTEN && s.remote_port == 0)
        );
        let accepted = live
            .iter()
            .find(|s| s.local_port == port && s.remote_port == client_port)
            .copied()
            .expect("the accepted side is in the dump");
        assert_eq!(accepted.remote, IpAddr::V4(Ipv4Addr::LOCALHOST));
        drop((client, served));
        let gone = wait_gone(&mut diag, accepted.cookie);
        assert!(
            gone.idle_ms.is_some_and(|ms| ms < 60_000),
            "the notification says when it last received data: {gone:?}"
        );
    }
}
