//! tracing subscriber setup shared by both binaries: text or JSON lines on stderr, filter from
//! `RUST_LOG` or the configured level (`target=level` directives, see [`init`]).

use std::str::FromStr;

use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Installs the global subscriber. Calling it twice is harmless (the second call is ignored),
/// which keeps in-process tests that start several components simple.
///
/// The filter is a list of `target=level` directives with an optional bare default level
/// (`info,mcpwatch_agent::gateway=debug`), read by `filter::Targets`: the `RUST_LOG` syntax
/// without span and field filters. Those need tracing-subscriber's `env-filter` and with it a
/// regex engine, whose code the agent would page in for nothing.
pub fn init(level: &str, json: bool) {
    let spec = std::env::var("RUST_LOG").unwrap_or_else(|_| level.to_owned());
    // rmcp logs every MCP session at INFO (four lines per probe): keep that out of the agent's
    // log unless asked for by name.
    let spec = if spec.contains("rmcp") {
        spec
    } else {
        format!("{spec},rmcp=warn")
    };
    let filter = Targets::from_str(&spec).unwrap_or_else(|error| {
        eprintln!("log filter {spec:?} not understood ({error}); using info");
        Targets::new()
            .with_default(tracing::Level::INFO)
            .with_target("rmcp", tracing::Level::WARN)
    });
    // Colour codes only for a terminal: logs in files and journald stay greppable.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let registry = tracing_subscriber::registry().with(filter);
    let _ = if json {
        registry.with(layer.json()).try_init()
    } else {
        registry.with(layer).try_init()
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::Level;
    use tracing_subscriber::filter::LevelFilter;

    #[test]
    fn directives_read_as_before() {
        let targets = Targets::from_str("info,mcpwatch_collector::api=debug,rmcp=warn").unwrap();
        assert!(targets.would_enable("mcpwatch_collector::api::users", &Level::DEBUG));
        assert!(!targets.would_enable("mcpwatch_collector::store", &Level::DEBUG));
        assert!(targets.would_enable("mcpwatch_collector::store", &Level::INFO));
        assert!(!targets.would_enable("rmcp::service", &Level::INFO));
        assert_eq!(targets.default_level(), Some(LevelFilter::INFO));
    }
}
