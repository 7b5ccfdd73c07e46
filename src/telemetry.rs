//! Logging setup: tracing-subscriber as text or JSON on stderr, filtered by `RUST_LOG`
//! when set, else by the configured level. Secrets are never logged: the signer redacts
//! itself and marks auth headers sensitive; request headers are not logged wholesale.

use crate::config::LogFormat;
use tracing_subscriber::EnvFilter;

/// Install the global subscriber. Idempotent: later calls (e.g. from tests) do nothing.
pub fn init(format: LogFormat, level: &str) {
    let env = std::env::var(EnvFilter::DEFAULT_ENV).ok();
    let filter = EnvFilter::try_new(directives(env.as_deref(), level))
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

/// The filter: `RUST_LOG` when set, else the configured level; rustls's own messages only
/// from `error` unless the filter names rustls itself (its "Illegal SNI extension: ignoring
/// IP address" is a warning for every SDK that connects by IP address: normal, not a fault).
fn directives(env: Option<&str>, level: &str) -> String {
    let base = match env {
        Some(e) if !e.trim().is_empty() => e.trim(),
        _ => level,
    };
    if base.contains("rustls") {
        base.to_owned()
    } else {
        format!("{base},rustls=error")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rustls_below_warning_unless_asked_for() {
        assert_eq!(directives(None, "info"), "info,rustls=error");
        assert_eq!(directives(Some("debug"), "info"), "debug,rustls=error");
        assert_eq!(directives(Some(""), "warn"), "warn,rustls=error");
        assert_eq!(
            directives(Some("info,rustls=debug"), "info"),
            "info,rustls=debug"
        );
        let f = EnvFilter::try_new(directives(None, "info")).unwrap();
        assert!(f.to_string().contains("rustls=error"), "{f}");
    }

    #[test]
    fn init_twice_is_harmless() {
        init(LogFormat::Json, "info");
        init(LogFormat::Text, "not a [valid filter");
        tracing::info!("still logging");
    }
}
