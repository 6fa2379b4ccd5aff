//! The kubelet's HTTP readiness probe.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::spec::Probe;

/// One HTTP GET of the probe's path on the app's address: passes on a 2xx or 3xx status, as
/// the kubelet's HTTP probe does.
pub(super) async fn passes(addr: SocketAddr, probe: &Probe) -> bool {
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: kube-probe/lab\r\nConnection: close\r\n\r\n",
            probe.path
        );
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).await.ok()?;
        let status: u16 = std::str::from_utf8(&head[9..12]).ok()?.parse().ok()?;
        Some((200..400).contains(&status))
    };
    tokio::time::timeout(probe.timeout, attempt)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}
