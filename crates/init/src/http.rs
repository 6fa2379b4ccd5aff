//! The least HTTP that readiness and the on-drain call need: HTTP/1.0 requests over
//! `std::net` with a deadline, and the status line of the answer. No TLS (URLs are validated
//! as http:// when parsed).

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// Why a request got no status code; each names the URL.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The URL is not `http://…`.
    #[error("{0}: not an http:// URL")]
    NotHttp(String),
    /// The host did not resolve to an address.
    #[error("{url}: no address for the host")]
    NoAddress {
        /// The URL.
        url: String,
    },
    /// Resolving, connecting, writing or reading failed.
    #[error("{url}: {source}")]
    Io {
        /// The URL.
        url: String,
        /// The error.
        source: std::io::Error,
    },
    /// The answer did not start with an HTTP status line.
    #[error("{url}: not an HTTP response: {head:?}")]
    NotAResponse {
        /// The URL.
        url: String,
        /// What came back.
        head: String,
    },
}

/// Sends `method url` and returns the response's status code.
pub fn request(method: &str, url: &str, timeout: Duration) -> Result<u16, HttpError> {
    let io = |source| HttpError::Io {
        url: url.to_string(),
        source,
    };
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| HttpError::NotHttp(url.to_string()))?;
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
        .map_err(io)?
        .next()
        .ok_or_else(|| HttpError::NoAddress {
            url: url.to_string(),
        })?;
    let mut stream = TcpStream::connect_timeout(&addr, timeout).map_err(io)?;
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    stream.set_write_timeout(Some(timeout)).map_err(io)?;
    let head = format!(
        "{method} {path} HTTP/1.0\r\nHost: {authority}\r\nContent-Length: 0\r\nUser-Agent: quiesce-init\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).map_err(io)?;
    let mut buf = [0u8; 64];
    let mut got = 0;
    while got < 12 {
        let n = stream.read(&mut buf[got..]).map_err(io)?;
        if n == 0 {
            break;
        }
        got += n;
    }
    let line = String::from_utf8_lossy(&buf[..got]);
    line.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| HttpError::NotAResponse {
            url: url.to_string(),
            head: line.to_string(),
        })
}
