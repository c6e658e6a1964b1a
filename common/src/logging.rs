//! tracing subscriber setup shared by both binaries: text or JSON lines on stderr, filter from
//! `RUST_LOG` or the configured level.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. Calling it twice is harmless (the second call is ignored),
/// which keeps in-process tests that start several components simple.
pub fn init(level: &str, json: bool) {
    let spec = std::env::var("RUST_LOG").unwrap_or_else(|_| level.to_owned());
    // rmcp logs every MCP session at INFO (four lines per probe): keep that out of the agent's
    // log unless asked for by name.
    let spec = if spec.contains("rmcp") {
        spec
    } else {
        format!("{spec},rmcp=warn")
    };
    let filter = EnvFilter::try_new(&spec).unwrap_or_else(|_| EnvFilter::new("info,rmcp=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only for a terminal: logs in files and journald stay greppable.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
