//! Restart policy as a pure state machine: given exits, unhealthy verdicts and the running
//! time between them, decide whether and when to restart, and when to give up.
//!
//! No clock and no I/O: every method takes `now`, so the tests drive it with plain instants.
//! Semantics (Kubernetes-like):
//! - delay = `initial · 2^attempt`, capped at `max`; `attempt` counts the restarts of the
//!   current crash loop and returns to 0 once the server has run `reset_after` without
//!   exiting;
//! - more than `max_restarts` restarts within the sliding `window` → [`Decision::GaveUp`],
//!   terminal until [`RestartTracker::reset`] (a `start` command or a config change).

use std::collections::VecDeque;
use std::time::Duration;

use mcpwatch_common::backoff::ExponentialBackoff;
use tokio::time::Instant;

use super::spec::{McpServerSpec, RestartPolicy};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Start the server again after this delay.
    RestartAfter(Duration),
    /// The restart budget is exhausted; leave the server down.
    GaveUp,
    /// The policy says this exit is final (e.g. `on-failure` and exit code 0).
    Stay,
}

#[derive(Debug, Clone)]
pub struct RestartTracker {
    policy: RestartPolicy,
    /// `None` only for a hand-built spec outside `0 < initial <= max` (validation refuses
    /// those); it then restarts without delay.
    delays: Option<ExponentialBackoff>,
    reset_after: Duration,
    max_restarts: u32,
    window: Duration,
    /// Restarts in the current crash loop; the exponent of the next delay.
    attempt: u32,
    /// When the restarts decided within `window` were decided (oldest first).
    recent: VecDeque<Instant>,
    /// Start of the current run, if the server is running.
    running_since: Option<Instant>,
    gave_up: bool,
}

impl RestartTracker {
    pub fn new(spec: &McpServerSpec) -> Self {
        RestartTracker {
            policy: spec.restart,
            delays: ExponentialBackoff::new(spec.backoff.initial.get(), spec.backoff.max.get())
                .ok(),
            reset_after: spec.backoff.reset_after.get(),
            max_restarts: spec.budget.max_restarts,
            window: spec.budget.window.get(),
            attempt: 0,
            recent: VecDeque::new(),
            running_since: None,
            gave_up: false,
        }
    }

    /// The server (re)started at `now`.
    pub fn on_running(&mut self, now: Instant) {
        self.running_since = Some(now);
    }

    /// A probe succeeded: if the server has been up for `reset_after`, the crash loop is
    /// over (so the metrics stop showing a stale attempt before the next exit).
    pub fn on_healthy(&mut self, now: Instant) {
        self.settle(now);
    }

    /// The container exited with `exit_code` at `now`.
    pub fn on_exit(&mut self, now: Instant, exit_code: i64, oom_killed: bool) -> Decision {
        self.decide(now, exit_code != 0 || oom_killed)
    }

    /// The probes declared the server unhealthy at `now`: a failure, like a non-zero exit.
    pub fn on_unhealthy(&mut self, now: Instant) -> Decision {
        self.decide(now, true)
    }

    /// Creating or starting the container failed: counts like a failed run.
    pub fn on_start_failed(&mut self, now: Instant) -> Decision {
        self.decide(now, true)
    }

    /// Forgets the crash loop, the budget and a give-up (start command, config change).
    pub fn reset(&mut self) {
        self.attempt = 0;
        self.recent.clear();
        self.gave_up = false;
    }

    /// Restarts in the current crash loop (0 when the server is not crash-looping).
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The delay the next restart would wait.
    pub fn next_delay(&self) -> Duration {
        self.delays
            .map_or(Duration::ZERO, |delays| delays.delay(self.attempt))
    }

    pub fn gave_up(&self) -> bool {
        self.gave_up
    }

    pub fn policy(&self) -> RestartPolicy {
        self.policy
    }

    fn settle(&mut self, now: Instant) {
        if let Some(since) = self.running_since {
            if now.saturating_duration_since(since) >= self.reset_after {
                self.attempt = 0;
            }
        }
    }

    fn decide(&mut self, now: Instant, failed: bool) -> Decision {
        self.settle(now);
        self.running_since = None;
        if self.gave_up {
            return Decision::GaveUp;
        }
        match self.policy {
            RestartPolicy::Never => return Decision::Stay,
            RestartPolicy::OnFailure if !failed => return Decision::Stay,
            _ => {}
        }
        while let Some(&t) = self.recent.front() {
            if now.saturating_duration_since(t) >= self.window {
                self.recent.pop_front();
            } else {
                break;
            }
        }
        if self.recent.len() >= self.max_restarts as usize {
            self.gave_up = true;
            return Decision::GaveUp;
        }
        let delay = self.next_delay();
        self.attempt = self.attempt.saturating_add(1);
        self.recent.push_back(now);
        Decision::RestartAfter(delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supervisor::spec::{
        BackoffSpec, BudgetSpec, Limits, McpServerSpec, ProbeSpec, Transport,
    };
    use mcpwatch_common::config::Duration as CfgDuration;

    fn spec(policy: RestartPolicy, max_restarts: u32) -> McpServerSpec {
        McpServerSpec {
            name: "t".into(),
            image: "i".into(),
            external: false,
            headers: vec![],
            command: None,
            args: vec![],
            env: vec![],
            transport: Transport::Stdio,
            restart: policy,
            backoff: BackoffSpec {
                initial: CfgDuration::from_secs(10),
                max: CfgDuration::from_secs(300),
                reset_after: CfgDuration::from_secs(600),
            },
            budget: BudgetSpec {
                max_restarts,
                window: CfgDuration::from_secs(600),
            },
            limits: Limits {
                nano_cpus: None,
                memory_bytes: None,
                pids: None,
            },
            network: "none".into(),
            read_only: true,
            no_new_privileges: true,
            cap_drop: vec![],
            mounts: vec![],
            labels: Default::default(),
            probe: ProbeSpec {
                interval: CfgDuration::from_secs(15),
                timeout: CfgDuration::from_secs(5),
                failure_threshold: 3,
                startup_grace: CfgDuration::from_secs(10),
            },
            gateway_sessions: crate::supervisor::spec::GatewaySessions::Shared,
        }
    }

    const S: fn(u64) -> Duration = Duration::from_secs;

    /// Runs for `run` then exits with `code`, returning the decision and the new time.
    fn crash(
        t: &mut RestartTracker,
        now: Instant,
        run: Duration,
        code: i64,
    ) -> (Decision, Instant) {
        t.on_running(now);
        let end = now + run;
        (t.on_exit(end, code, false), end)
    }

    #[test]
    fn delay_doubles_to_the_cap() {
        let mut t = RestartTracker::new(&spec(RestartPolicy::Always, 1000));
        let mut now = Instant::now();
        let mut delays = vec![];
        for _ in 0..8 {
            assert_eq!(
                t.next_delay(),
                delays
                    .last()
                    .map_or(S(10), |d: &Duration| (*d * 2).min(S(300)))
            );
            let (d, end) = crash(&mut t, now, S(1), 1);
            let Decision::RestartAfter(d) = d else {
                panic!("{d:?}")
            };
            delays.push(d);
            now = end + d;
        }
        assert_eq!(delays, [10, 20, 40, 80, 160, 300, 300, 300].map(S).to_vec());
        assert_eq!(t.attempt(), 8);
    }

    #[test]
    fn running_reset_after_starts_over() {
        let mut t = RestartTracker::new(&spec(RestartPolicy::Always, 1000));
        let now = Instant::now();
        let (_, now) = crash(&mut t, now, S(1), 1);
        let (_, now) = crash(&mut t, now, S(1), 1);
        assert_eq!(t.next_delay(), S(40));
        // A run shorter than reset_after keeps the loop going.
        let (d, now) = crash(&mut t, now, S(599), 1);
        assert_eq!(d, Decision::RestartAfter(S(40)));
        // A healthy probe after reset_after of running resets before the next exit.
        t.on_running(now);
        t.on_healthy(now + S(300));
        assert_eq!(t.attempt(), 3, "not yet");
        t.on_healthy(now + S(600));
        assert_eq!(t.attempt(), 0);
        assert_eq!(t.next_delay(), S(10));
        // And without probes the exit itself notices the long run.
        let (_, now) = crash(&mut t, now + S(700), S(1), 1);
        assert_eq!(t.attempt(), 1);
        let (d, _) = crash(&mut t, now, S(601), 1);
        assert_eq!(d, Decision::RestartAfter(S(10)));
    }

    #[test]
    fn budget_exhaustion_gives_up_until_reset() {
        let mut t = RestartTracker::new(&spec(RestartPolicy::Always, 3));
        let mut now = Instant::now();
        for _ in 0..3 {
            let (d, end) = crash(&mut t, now, S(1), 1);
            assert!(matches!(d, Decision::RestartAfter(_)), "{d:?}");
            now = end + S(1);
        }
        let (d, end) = crash(&mut t, now, S(1), 1);
        assert_eq!(d, Decision::GaveUp);
        assert!(t.gave_up());
        // Terminal: even a clean exit much later stays given up.
        assert_eq!(t.on_exit(end + S(3600), 0, false), Decision::GaveUp);
        t.reset();
        assert!(!t.gave_up());
        assert_eq!(t.attempt(), 0);
        let (d, _) = crash(&mut t, end + S(3600), S(1), 1);
        assert_eq!(d, Decision::RestartAfter(S(10)));
    }

    #[test]
    fn budget_window_slides() {
        let mut t = RestartTracker::new(&spec(RestartPolicy::Always, 2));
        let now = Instant::now();
        assert!(matches!(
            t.on_exit(now, 1, false),
            Decision::RestartAfter(_)
        ));
        assert!(matches!(
            t.on_exit(now + S(300), 1, false),
            Decision::RestartAfter(_)
        ));
        // The first restart left the 10 min window: room for one more.
        assert!(matches!(
            t.on_exit(now + S(601), 1, false),
            Decision::RestartAfter(_)
        ));
        assert_eq!(t.on_exit(now + S(602), 1, false), Decision::GaveUp);
    }

    #[test]
    fn policies() {
        let now = Instant::now();
        let mut t = RestartTracker::new(&spec(RestartPolicy::OnFailure, 5));
        assert_eq!(t.on_exit(now, 0, false), Decision::Stay);
        assert_eq!(t.on_exit(now, 2, false), Decision::RestartAfter(S(10)));
        assert_eq!(
            t.on_exit(now, 0, true),
            Decision::RestartAfter(S(20)),
            "OOM"
        );
        assert_eq!(t.on_unhealthy(now), Decision::RestartAfter(S(40)));
        let mut t = RestartTracker::new(&spec(RestartPolicy::Never, 5));
        assert_eq!(t.on_exit(now, 1, true), Decision::Stay);
        assert_eq!(t.on_unhealthy(now), Decision::Stay);
        assert_eq!(t.attempt(), 0);
        let mut t = RestartTracker::new(&spec(RestartPolicy::Always, 5));
        assert_eq!(t.on_exit(now, 0, false), Decision::RestartAfter(S(10)));
        assert_eq!(t.on_start_failed(now), Decision::RestartAfter(S(20)));
        let mut t = RestartTracker::new(&spec(RestartPolicy::Always, 0));
        assert_eq!(
            t.on_exit(now, 1, false),
            Decision::GaveUp,
            "no budget at all"
        );
    }
}
