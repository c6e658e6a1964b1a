//! Command line and environment parsing for the fixture: every switch is a flag and an
//! `MCP_FIXTURE_*` variable (so a container's env can set it); a flag wins over the variable.

use std::net::SocketAddr;
use std::time::Duration;

use crate::switches::{Switches, ToolsVariant};

/// How the fixture talks MCP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// JSON-RPC lines on stdin/stdout.
    Stdio,
    /// Streamable HTTP at `http://LISTEN/mcp`.
    Http,
}

/// Everything the binary needs to run.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    pub transport: Transport,
    /// Only an IP:port is accepted: the static binary must never need DNS.
    pub listen: SocketAddr,
    /// Stdio only: stop when stdin reaches EOF (default). Off, the process idles until a
    /// signal, for containers started without an attached stdin.
    pub exit_on_stdin_eof: bool,
    pub switches: Switches,
}

/// Why parsing stopped: a request for help or a message for stderr.
#[derive(Debug, PartialEq, Eq)]
pub enum ParseError {
    Help,
    Invalid(String),
}

pub const USAGE: &str = "\
usage: mcp-fixture [--transport stdio|http] [--listen IP:PORT] [--crash-after SECS]
                   [--hang-after SECS] [--hang-on METHOD] [--slow-ms MS]
                   [--tools-variant a|b|stateful] [--change-tools-after SECS] [--page-size N]
                   [--protocol-version VERSION] [--exit-on-stdin-eof[=true|false]]

Every flag can also come from the environment: --crash-after is MCP_FIXTURE_CRASH_AFTER,
and so on (upper case, dashes as underscores); a flag wins over its variable.
  --transport           stdio (default) or http (Streamable HTTP at http://LISTEN/mcp)
  --listen              http bind address, default 127.0.0.1:8080
  --crash-after         exit with code 3 after SECS (fractions allowed)
  --hang-after          after SECS, never answer a request again (connection stays open)
  --hang-on             never answer this method (initialize, server/discover, tools/list,
                        tools/call, ping)
  --slow-ms             delay every response by MS
  --tools-variant       a: echo, add, time   b: echo (new description), add, sleep
                        stateful: echo, remember, recall (a value kept per process)
  --change-tools-after  switch from variant a to variant b after SECS
  --page-size           answer tools/list in pages of N tools (default: one page)
  --protocol-version    speak only this MCP revision (YYYY-MM-DD). Before 2026-07-28: no
                        server/discover (answered -32601, so clients fall back to
                        initialize). 2026-07-28 or later: no initialize (refused -32022)
                        and, over http, no sessions. Default: every revision rmcp knows,
                        over both lifecycles
  --exit-on-stdin-eof   stdio: exit when stdin closes (default true)";

/// Every option: its flag without dashes doubles as the key of its environment variable.
const KEYS: &[&str] = &[
    "transport",
    "listen",
    "crash-after",
    "hang-after",
    "hang-on",
    "slow-ms",
    "tools-variant",
    "change-tools-after",
    "page-size",
    "protocol-version",
    "exit-on-stdin-eof",
];

/// The environment variable for option `key`, e.g. `crash-after` → `MCP_FIXTURE_CRASH_AFTER`.
pub fn env_name(key: &str) -> String {
    format!("MCP_FIXTURE_{}", key.replace('-', "_").to_ascii_uppercase())
}

impl Options {
    /// Parses `args` (without the program name) over the variables `env` returns.
    pub fn parse<I>(args: I, env: impl Fn(&str) -> Option<String>) -> Result<Options, ParseError>
    where
        I: IntoIterator<Item = String>,
    {
        let mut opts = Options {
            transport: Transport::Stdio,
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            exit_on_stdin_eof: true,
            switches: Switches::default(),
        };
        for key in KEYS {
            if let Some(value) = env(&env_name(key)) {
                opts.set(key, &value)
                    .map_err(|e| ParseError::Invalid(format!("{}: {e}", env_name(key))))?;
            }
        }
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            if arg == "--help" || arg == "-h" {
                return Err(ParseError::Help);
            }
            let Some(flag) = arg.strip_prefix("--") else {
                return Err(ParseError::Invalid(format!("unexpected argument {arg:?}")));
            };
            let (key, inline) = match flag.split_once('=') {
                Some((k, v)) => (k, Some(v.to_owned())),
                None => (flag, None),
            };
            let Some(key) = KEYS.iter().find(|k| **k == key) else {
                return Err(ParseError::Invalid(format!("unknown flag --{key}")));
            };
            let value = match inline {
                Some(v) => v,
                // The only boolean flag means "on" when it stands alone.
                None if *key == "exit-on-stdin-eof" => "true".to_owned(),
                None => args
                    .next()
                    .ok_or_else(|| ParseError::Invalid(format!("--{key} needs a value")))?,
            };
            opts.set(key, &value)
                .map_err(|e| ParseError::Invalid(format!("--{key}: {e}")))?;
        }
        Ok(opts)
    }

    fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        let s = &mut self.switches;
        match key {
            "transport" => {
                self.transport = match value {
                    "stdio" => Transport::Stdio,
                    "http" => Transport::Http,
                    _ => return Err(format!("expected stdio or http, got {value:?}")),
                }
            }
            "listen" => {
                self.listen = value
                    .parse()
                    .map_err(|_| format!("expected IP:PORT, got {value:?}"))?
            }
            "crash-after" => s.crash_after = Some(secs(value)?),
            "hang-after" => s.hang_after = Some(secs(value)?),
            "hang-on" => s.hang_on = Some(value.to_owned()),
            "slow-ms" => s.slow = Duration::from_millis(number(value)?),
            "tools-variant" => {
                s.tools_variant = match value {
                    "a" => ToolsVariant::A,
                    "b" => ToolsVariant::B,
                    "stateful" => ToolsVariant::Stateful,
                    _ => return Err(format!("expected a, b or stateful, got {value:?}")),
                }
            }
            "change-tools-after" => s.change_tools_after = Some(secs(value)?),
            "page-size" => {
                let n = usize::try_from(number(value)?).map_err(|e| e.to_string())?;
                s.page_size = (n > 0).then_some(n);
            }
            "protocol-version" => s.protocol_version = Some(revision(value)?),
            "exit-on-stdin-eof" => {
                self.exit_on_stdin_eof = match value {
                    "true" | "1" | "yes" => true,
                    "false" | "0" | "no" => false,
                    _ => return Err(format!("expected true or false, got {value:?}")),
                }
            }
            // KEYS and this match list the same options.
            _ => return Err(format!("unknown option {key}")),
        }
        Ok(())
    }
}

fn secs(value: &str) -> Result<Duration, String> {
    value
        .parse::<f64>()
        .ok()
        .and_then(|v| Duration::try_from_secs_f64(v).ok())
        .ok_or_else(|| format!("expected seconds (>= 0), got {value:?}"))
}

/// A revision is a date, `YYYY-MM-DD`: the fixture orders revisions by their text, as rmcp does.
fn revision(value: &str) -> Result<String, String> {
    let shape = value.len() == 10
        && value.char_indices().all(|(i, c)| match i {
            4 | 7 => c == '-',
            _ => c.is_ascii_digit(),
        });
    if shape {
        Ok(value.to_owned())
    } else {
        Err(format!("expected a revision YYYY-MM-DD, got {value:?}"))
    }
}

fn number(value: &str) -> Result<u64, String> {
    value
        .parse()
        .map_err(|_| format!("expected a whole number, got {value:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str], env: &[(&str, &str)]) -> Result<Options, ParseError> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Options::parse(args.iter().map(|s| s.to_string()), |k| {
            env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
        })
    }

    #[test]
    fn defaults() {
        let o = parse(&[], &[]).unwrap();
        assert_eq!(o.transport, Transport::Stdio);
        assert_eq!(o.listen, "127.0.0.1:8080".parse().unwrap());
        assert!(o.exit_on_stdin_eof);
        assert_eq!(o.switches, Switches::default());
    }

    #[test]
    fn flags() {
        let o = parse(
            &[
                "--transport",
                "http",
                "--listen=127.0.0.1:9001",
                "--crash-after",
                "1.5",
                "--hang-after",
                "2",
                "--hang-on",
                "ping",
                "--slow-ms",
                "250",
                "--tools-variant",
                "b",
                "--change-tools-after",
                "0",
                "--page-size",
                "1",
                "--protocol-version",
                "2025-06-18",
                "--exit-on-stdin-eof=false",
            ],
            &[],
        )
        .unwrap();
        assert_eq!(o.transport, Transport::Http);
        assert_eq!(o.listen.port(), 9001);
        let s = &o.switches;
        assert_eq!(s.crash_after, Some(Duration::from_millis(1500)));
        assert_eq!(s.hang_after, Some(Duration::from_secs(2)));
        assert_eq!(s.hang_on.as_deref(), Some("ping"));
        assert_eq!(s.slow, Duration::from_millis(250));
        assert_eq!(s.tools_variant, ToolsVariant::B);
        assert_eq!(s.change_tools_after, Some(Duration::ZERO));
        assert_eq!(s.page_size, Some(1));
        assert_eq!(s.protocol_version.as_deref(), Some("2025-06-18"));
        assert!(!o.exit_on_stdin_eof);
    }

    #[test]
    fn env_sets_and_flags_override() {
        let o = parse(
            &["--slow-ms", "5"],
            &[
                ("MCP_FIXTURE_CRASH_AFTER", "3"),
                ("MCP_FIXTURE_SLOW_MS", "100"),
                ("MCP_FIXTURE_TRANSPORT", "http"),
                ("MCP_FIXTURE_EXIT_ON_STDIN_EOF", "0"),
                ("MCP_FIXTURE_PROTOCOL_VERSION", "2026-07-28"),
            ],
        )
        .unwrap();
        assert_eq!(o.switches.lifecycle(), crate::Lifecycle::DiscoverOnly);
        assert_eq!(o.switches.crash_after, Some(Duration::from_secs(3)));
        assert_eq!(o.switches.slow, Duration::from_millis(5));
        assert_eq!(o.transport, Transport::Http);
        assert!(!o.exit_on_stdin_eof);
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        for args in [
            &["--transport", "tcp"][..],
            &["--listen", "localhost:80"],
            &["--crash-after", "-1"],
            &["--crash-after", "NaN"],
            &["--slow-ms"],
            &["--bogus", "1"],
            &["positional"],
            &["--tools-variant", "c"],
            &["--protocol-version", "latest"],
            &["--protocol-version", "2026-7-28"],
            &["--protocol-version", "2026-07-28x"],
        ] {
            assert!(
                matches!(parse(args, &[]), Err(ParseError::Invalid(_))),
                "{args:?}"
            );
        }
        assert!(matches!(
            parse(&[], &[("MCP_FIXTURE_HANG_AFTER", "soon")]),
            Err(ParseError::Invalid(m)) if m.contains("MCP_FIXTURE_HANG_AFTER")
        ));
        assert_eq!(parse(&["--help"], &[]), Err(ParseError::Help));
    }
}
