//! Logging setup: tracing-subscriber as text or JSON on stderr, filtered by `RUST_LOG`
//! when set, else by the configured level. Secrets are never logged: the signer redacts
//! itself and marks auth headers sensitive; request headers are not logged wholesale.

use crate::config::LogFormat;
use tracing_subscriber::EnvFilter;

/// Install the global subscriber. Idempotent: later calls (e.g. from tests) do nothing.
pub fn init(format: LogFormat, level: &str) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _already_set = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_twice_is_harmless() {
        init(LogFormat::Json, "info");
        init(LogFormat::Text, "not a [valid filter");
        tracing::info!("still logging");
    }
}
