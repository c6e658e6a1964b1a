//! The fault switches (hang, slow, tool change) and the clock they are measured on. Crashing is
//! the binary's business (`main.rs`): the library never exits the process it is embedded in.

use std::time::Duration;

use rmcp::model::ProtocolVersion;
use tokio::time::Instant;

/// Which tool list the server offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ToolsVariant {
    /// `echo`, `add`, `time`.
    #[default]
    A,
    /// `echo` (changed description), `add`, `sleep`: one added, one removed, one changed.
    B,
    /// `echo`, `remember`, `recall`: a value kept per process, so a test can tell whether two
    /// clients reach the same server process.
    Stateful,
}

/// The misbehaviour a fixture run is asked for; the default is a well-behaved server.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Switches {
    /// Binary only: exit with code 3 this long after start.
    pub crash_after: Option<Duration>,
    /// From this long after start on, no request is answered.
    pub hang_after: Option<Duration>,
    /// This JSON-RPC method is never answered (e.g. `tools/list`), so a client's failure can
    /// be pinned to one stage.
    pub hang_on: Option<String>,
    /// Added before every response.
    pub slow: Duration,
    pub tools_variant: ToolsVariant,
    /// From this long after start on, variant B is served whatever `tools_variant` says.
    pub change_tools_after: Option<Duration>,
    /// `tools/list` pages of this many tools; `None` is a single page.
    pub page_size: Option<usize>,
    /// The only protocol revision advertised and negotiated; `None` is every revision rmcp
    /// knows (2024-11-05 to 2026-07-28) over both lifecycles. See [`Lifecycle`].
    pub protocol_version: Option<String>,
}

/// Which MCP lifecycle the fixture speaks, from [`Switches::protocol_version`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifecycle {
    /// No pinned revision: `initialize` (legacy revisions) and `server/discover` with
    /// per-request `_meta` (2026-07-28), as rmcp's default server does.
    Both,
    /// A revision before 2026-07-28: a server written before `server/discover` existed.
    /// `server/discover` is answered -32601 Method not found, so clients fall back to
    /// `initialize`.
    InitializeOnly,
    /// 2026-07-28 or later: `initialize` is refused (-32022 unsupported protocol version,
    /// rmcp's answer when no supported revision has a handshake) and Streamable HTTP has no
    /// sessions.
    DiscoverOnly,
}

impl Switches {
    /// The tool variant `elapsed` after start.
    pub fn variant_at(&self, elapsed: Duration) -> ToolsVariant {
        match self.change_tools_after {
            Some(after) if elapsed >= after => ToolsVariant::B,
            _ => self.tools_variant,
        }
    }

    /// The lifecycle of the pinned revision; unknown revisions are placed by date, as
    /// rmcp's `ProtocolVersion::has_initialize` does (`YYYY-MM-DD` sorts as text).
    pub fn lifecycle(&self) -> Lifecycle {
        match self.protocol_version.as_deref() {
            None => Lifecycle::Both,
            Some(v) if v < ProtocolVersion::NO_INITIALIZE.as_str() => Lifecycle::InitializeOnly,
            Some(_) => Lifecycle::DiscoverOnly,
        }
    }

    /// Whether `method`, received `elapsed` after start, must go unanswered.
    pub fn hangs_at(&self, method: &str, elapsed: Duration) -> bool {
        self.hang_on.as_deref() == Some(method) || self.hang_after.is_some_and(|h| elapsed >= h)
    }
}

/// The switches plus the instant they count from. One per process (or per in-process server),
/// shared by every session, so "after N seconds" means since start, not since a session began.
#[derive(Debug)]
pub struct Clock {
    start: Instant,
    pub switches: Switches,
}

impl Clock {
    pub fn start(switches: Switches) -> Clock {
        Clock {
            start: Instant::now(),
            switches,
        }
    }

    pub fn variant(&self) -> ToolsVariant {
        self.switches.variant_at(self.start.elapsed())
    }

    /// Runs before every answer: never returns for a hung request, waits `slow` otherwise.
    pub async fn gate(&self, method: &str) {
        if self.switches.hangs_at(method, self.start.elapsed()) {
            // Holding the request forever is the point: the connection stays open and silent.
            std::future::pending::<()>().await;
        }
        if !self.switches.slow.is_zero() {
            tokio::time::sleep(self.switches.slow).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variant_changes_at_the_deadline() {
        let s = Switches {
            change_tools_after: Some(Duration::from_secs(2)),
            ..Switches::default()
        };
        assert_eq!(s.variant_at(Duration::from_millis(1999)), ToolsVariant::A);
        assert_eq!(s.variant_at(Duration::from_secs(2)), ToolsVariant::B);
        let fixed = Switches {
            tools_variant: ToolsVariant::B,
            ..Switches::default()
        };
        assert_eq!(fixed.variant_at(Duration::from_secs(999)), ToolsVariant::B);
    }

    #[test]
    fn hang_by_time_or_by_method() {
        let s = Switches {
            hang_after: Some(Duration::from_secs(1)),
            ..Switches::default()
        };
        assert!(!s.hangs_at("ping", Duration::from_millis(999)));
        assert!(s.hangs_at("ping", Duration::from_secs(1)));
        let m = Switches {
            hang_on: Some("tools/list".into()),
            ..Switches::default()
        };
        assert!(m.hangs_at("tools/list", Duration::ZERO));
        assert!(!m.hangs_at("initialize", Duration::from_secs(999)));
    }

    #[test]
    fn pinned_revision_picks_the_lifecycle() {
        let pinned = |v: Option<&str>| Switches {
            protocol_version: v.map(str::to_owned),
            ..Switches::default()
        };
        assert_eq!(pinned(None).lifecycle(), Lifecycle::Both);
        for v in ["2024-11-05", "2025-06-18", "2025-11-25"] {
            assert_eq!(
                pinned(Some(v)).lifecycle(),
                Lifecycle::InitializeOnly,
                "{v}"
            );
        }
        for v in ["2026-07-28", "2099-01-01"] {
            assert_eq!(pinned(Some(v)).lifecycle(), Lifecycle::DiscoverOnly, "{v}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn gate_delays_by_slow() {
        let clock = Clock::start(Switches {
            slow: Duration::from_millis(300),
            ..Switches::default()
        });
        let t = Instant::now();
        clock.gate("ping").await;
        assert_eq!(t.elapsed(), Duration::from_millis(300));
    }

    #[tokio::test(start_paused = true)]
    async fn gate_never_returns_when_hung() {
        let clock = Clock::start(Switches {
            hang_after: Some(Duration::ZERO),
            ..Switches::default()
        });
        let r = tokio::time::timeout(Duration::from_secs(3600), clock.gate("ping")).await;
        assert!(r.is_err());
    }
}
