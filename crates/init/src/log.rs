//! One timestamped line per phase on stderr, so `kubectl logs` shows the drain's timeline.

use std::time::SystemTime;

/// Writes `quiesce-init <RFC 3339 time> <message>` to stderr.
pub fn phase(message: &str) {
    let now = humantime::format_rfc3339_millis(SystemTime::now());
    eprintln!("quiesce-init {now} {message}");
}
