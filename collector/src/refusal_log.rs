//! Rate limit for the log lines that anyone who can open a TCP connection can cause (refused
//! ingest connections), and that an agent over its series limit causes batch after batch. The first few per reason and source address in each window are
//! logged in full; the rest are only counted (the refusal metrics count every one) and
//! summed up in one summary line per key when its window ends. Without this, a flood of
//! junk connections turned into a flood of WARN lines.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Keys (reason × address) tracked at once; beyond, refusals from new keys are only counted
/// in an overflow total, so a spoofed-address flood cannot grow the map without bound.
const MAX_KEYS: usize = 4096;

#[derive(Debug)]
struct Slot {
    window_start: Instant,
    logged: u32,
    suppressed: u64,
}

#[derive(Debug, Default)]
struct State {
    slots: HashMap<(&'static str, IpAddr), Slot>,
    overflow: u64,
    last_sweep: Option<Instant>,
}

/// What the caller should log for one refusal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Log this refusal in full.
    Log,
    /// Log nothing for this refusal.
    Suppress,
}

/// A summary of refusals not logged, ready to be written as one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suppressed {
    pub reason: &'static str,
    /// `None` for the overflow total (refusals from keys beyond [`MAX_KEYS`]).
    pub addr: Option<IpAddr>,
    pub count: u64,
}

/// See the module documentation.
#[derive(Debug)]
pub struct RefusalLog {
    per_window: u32,
    window: Duration,
    state: Mutex<State>,
}

impl RefusalLog {
    /// Logs at most `per_window` refusals per reason and address in each `window`.
    pub fn new(per_window: u32, window: Duration) -> RefusalLog {
        RefusalLog {
            per_window,
            window,
            state: Mutex::new(State::default()),
        }
    }

    /// Decides about one refusal at `now`, and returns the summaries of windows that ended
    /// (to be logged by the caller, in any case).
    pub fn refused(
        &self,
        reason: &'static str,
        addr: IpAddr,
        now: Instant,
    ) -> (Verdict, Vec<Suppressed>) {
        // A poisoned lock only means a panic elsewhere mid-update of plain counters.
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let summaries = self.sweep(&mut state, now);
        let full = state.slots.len() >= MAX_KEYS;
        let verdict = match state.slots.get_mut(&(reason, addr)) {
            Some(slot) if slot.logged < self.per_window => {
                slot.logged += 1;
                Verdict::Log
            }
            Some(slot) => {
                slot.suppressed += 1;
                Verdict::Suppress
            }
            None if full => {
                state.overflow += 1;
                Verdict::Suppress
            }
            None => {
                state.slots.insert(
                    (reason, addr),
                    Slot {
                        window_start: now,
                        logged: 1,
                        suppressed: 0,
                    },
                );
                Verdict::Log
            }
        };
        (verdict, summaries)
    }

    /// Ends the windows older than `window` at most once per window: their keys are
    /// forgotten and those with suppressed refusals become summaries.
    fn sweep(&self, state: &mut State, now: Instant) -> Vec<Suppressed> {
        if state
            .last_sweep
            .is_some_and(|t| now.saturating_duration_since(t) < self.window)
        {
            return Vec::new();
        }
        state.last_sweep = Some(now);
        let mut out = Vec::new();
        let window = self.window;
        state.slots.retain(|&(reason, addr), slot| {
            if now.saturating_duration_since(slot.window_start) < window {
                return true;
            }
            if slot.suppressed > 0 {
                out.push(Suppressed {
                    reason,
                    addr: Some(addr),
                    count: slot.suppressed,
                });
            }
            false
        });
        if state.overflow > 0 {
            out.push(Suppressed {
                reason: "any",
                addr: None,
                count: std::mem::take(&mut state.overflow),
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusal_log_limits_per_reason_and_address_then_summarises() {
        let log = RefusalLog::new(3, Duration::from_secs(60));
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        let b: IpAddr = "127.0.0.3".parse().unwrap();
        let t0 = Instant::now();
        let verdicts: Vec<Verdict> = (0..300).map(|_| log.refused("tls", a, t0).0).collect();
        assert_eq!(verdicts.iter().filter(|v| **v == Verdict::Log).count(), 3);
        // Another reason or address has its own allowance.
        assert_eq!(log.refused("timeout", a, t0).0, Verdict::Log);
        assert_eq!(log.refused("tls", b, t0).0, Verdict::Log);
        // After the window: one summary of the 297 not logged, and logging starts again.
        let (verdict, summaries) = log.refused("tls", a, t0 + Duration::from_secs(61));
        assert_eq!(verdict, Verdict::Log);
        assert_eq!(
            summaries,
            vec![Suppressed {
                reason: "tls",
                addr: Some(a),
                count: 297
            }]
        );
    }

    #[test]
    fn refusal_log_map_is_bounded() {
        let log = RefusalLog::new(1, Duration::from_secs(60));
        let t0 = Instant::now();
        for i in 0..(MAX_KEYS as u32 + 10) {
            let addr = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            log.refused("tls", addr, t0);
        }
        let state = log.state.lock().unwrap();
        assert_eq!(state.slots.len(), MAX_KEYS);
        assert_eq!(state.overflow, 10);
    }
}
