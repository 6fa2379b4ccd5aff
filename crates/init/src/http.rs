//! The least HTTP that readiness and the on-drain call need: HTTP/1.0 requests over
//! `std::net` with a deadline, and the status line of the answer. No TLS (URLs are validated
//! as http:// when parsed).

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// Sends `method url` and returns the response's status code.
pub fn request(method: &str, url: &str, timeout: Duration) -> Result<u16, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url}: not an http:// URL"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let with_port = if authority.contains(':') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let addr = with_port
        .to_socket_addrs()
        .map_err(|e| format!("{url}: {e}"))?
        .next()
        .ok_or_else(|| format!("{url}: no address"))?;
    let mut stream =
        TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("{url}: {e}"))?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    stream
        .set_write_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    let head = format!(
        "{method} {path} HTTP/1.0\r\nHost: {authority}\r\nContent-Length: 0\r\nUser-Agent: quiesce-init\r\n\r\n"
    );
    stream
        .write_all(head.as_bytes())
        .map_err(|e| format!("{url}: {e}"))?;
    let mut buf = [0u8; 64];
    let mut got = 0;
    while got < 12 {
        let n = stream
            .read(&mut buf[got..])
            .map_err(|e| format!("{url}: {e}"))?;
        if n == 0 {
            break;
        }
        got += n;
    }
    let line = String::from_utf8_lossy(&buf[..got]);
    line.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("{url}: not an HTTP response: {line:?}"))
}
