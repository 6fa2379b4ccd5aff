//! Structured logs on stderr, so stdout stays free for reports and machine-readable output.

use tracing_subscriber::EnvFilter;

/// How log lines are rendered.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Format {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log pipelines.
    Json,
}

/// Installs the global subscriber; an unparsable filter falls back to `info` rather than
/// silencing everything.
pub fn init(filter: &str, format: Format) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        Format::Text => builder.init(),
        Format::Json => builder.json().init(),
    }
}
