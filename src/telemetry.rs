//! Logging with `tracing`: human-readable lines by default, JSON lines when configured.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, LogSettings};

/// Installs the global subscriber; `RUST_LOG` overrides the configured level. A second call
/// (several servers in one test process) keeps the first subscriber.
pub fn init(log: &LogSettings) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&log.level));
    let ansi = std::io::stdout().is_terminal();
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi);
    let _ = match log.format {
        LogFormat::Human => builder.with_target(false).try_init(),
        LogFormat::Json => builder.json().with_current_span(false).try_init(),
    };
}
