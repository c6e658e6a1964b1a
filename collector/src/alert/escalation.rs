//! Escalation policies: who is told about a firing alert nobody has acknowledged, and when.
//! Steps are measured from the alert's start; an acknowledgement freezes the clock (no later
//! step is reached); with `repeat` the whole policy starts again every `repeat` until then.
//! Pure: what each step has been told is the runtime's "told" log, so a restart neither
//! repeats a step nor skips one.

/// One step: after `after_ms` unacknowledged, these receivers are told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EscalationStep {
    pub after_ms: i64,
    pub receivers: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EscalationPolicy {
    pub name: String,
    /// Sorted by `after_ms`, the first at 0 or later.
    pub steps: Vec<EscalationStep>,
    /// `Some(ms)`: the policy starts again from its first step every `ms` (longer than the
    /// last step's `after_ms`) while the alert is unacknowledged.
    pub repeat_ms: Option<i64>,
}

/// A step reached: its index and the round (0 unless the policy repeats) it was reached in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reached {
    pub step: usize,
    pub round: u32,
}

impl EscalationPolicy {
    /// Checks the steps: at least one, sorted, non-negative, each with a receiver; `repeat`
    /// longer than the last step.
    pub fn new(
        name: &str,
        steps: Vec<EscalationStep>,
        repeat_ms: Option<i64>,
    ) -> Result<EscalationPolicy, String> {
        if steps.is_empty() {
            return Err("needs at least one step".into());
        }
        for (i, s) in steps.iter().enumerate() {
            if s.receivers.is_empty() {
                return Err(format!("steps[{i}]: needs at least one receiver"));
            }
            if s.after_ms < 0 {
                return Err(format!("steps[{i}].after: must not be negative"));
            }
            if i > 0 && s.after_ms <= steps[i - 1].after_ms {
                return Err(format!(
                    "steps[{i}].after: must be later than the step before it"
                ));
            }
        }
        let last = steps.last().map_or(0, |s| s.after_ms);
        if let Some(r) = repeat_ms {
            if r <= last {
                return Err(format!(
                    "repeat: must be longer than the last step's `after` ({last} ms)"
                ));
            }
        }
        Ok(EscalationPolicy {
            name: name.to_owned(),
            steps,
            repeat_ms,
        })
    }

    /// For each step reached after `elapsed_ms` (from the alert's start to now, or to its
    /// acknowledgement), the latest round it was reached in.
    pub fn reached(&self, elapsed_ms: i64) -> Vec<Reached> {
        let elapsed = elapsed_ms.max(0);
        let (round, within) = match self.repeat_ms {
            Some(r) if r > 0 => (elapsed / r, elapsed % r),
            _ => (0, elapsed),
        };
        let round_now = u32::try_from(round).unwrap_or(u32::MAX);
        self.steps
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                if s.after_ms <= within {
                    Some(Reached {
                        step: i,
                        round: round_now,
                    })
                } else if round_now > 0 {
                    Some(Reached {
                        step: i,
                        round: round_now - 1,
                    })
                } else {
                    None
                }
            })
            .collect()
    }

    /// When (elapsed from the alert's start) the next step is reached; `None` when no step
    /// is left.
    pub fn next_at(&self, elapsed_ms: i64) -> Option<i64> {
        let elapsed = elapsed_ms.max(0);
        let (base, within) = match self.repeat_ms {
            Some(r) if r > 0 => ((elapsed / r).saturating_mul(r), elapsed % r),
            _ => (0, elapsed),
        };
        match self.steps.iter().find(|s| s.after_ms > within) {
            Some(s) => Some(base.saturating_add(s.after_ms)),
            None => self.repeat_ms.map(|r| {
                base.saturating_add(r)
                    .saturating_add(self.steps[0].after_ms)
            }),
        }
    }

    /// The highest step reached after `elapsed_ms` in the current round, if any.
    pub fn current_step(&self, elapsed_ms: i64) -> Option<usize> {
        let within = match self.repeat_ms {
            Some(r) if r > 0 => elapsed_ms.max(0) % r,
            _ => elapsed_ms.max(0),
        };
        self.steps.iter().rposition(|s| s.after_ms <= within)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(afters: &[i64], repeat: Option<i64>) -> EscalationPolicy {
        let steps = afters
            .iter()
            .enumerate()
            .map(|(i, &a)| EscalationStep {
                after_ms: a,
                receivers: vec![format!("r{i}")],
            })
            .collect();
        EscalationPolicy::new("p", steps, repeat).expect("valid")
    }

    fn steps(r: &[Reached]) -> Vec<(usize, u32)> {
        r.iter().map(|x| (x.step, x.round)).collect()
    }

    #[test]
    fn alert_escalation_steps_reached_in_order() {
        let p = policy(&[0, 2_000, 5_000], None);
        assert_eq!(steps(&p.reached(0)), [(0, 0)]);
        assert_eq!(steps(&p.reached(1_999)), [(0, 0)]);
        assert_eq!(steps(&p.reached(2_000)), [(0, 0), (1, 0)]);
        assert_eq!(steps(&p.reached(60_000)), [(0, 0), (1, 0), (2, 0)]);
        assert_eq!(p.next_at(0), Some(2_000));
        assert_eq!(p.next_at(2_000), Some(5_000));
        assert_eq!(p.next_at(5_000), None);
        assert_eq!(p.current_step(3_000), Some(1));
        let late = policy(&[1_000], None);
        assert!(late.reached(500).is_empty());
        assert_eq!(late.current_step(500), None);
    }

    #[test]
    fn alert_escalation_repeats_by_round() {
        let p = policy(&[0, 2_000], Some(10_000));
        assert_eq!(steps(&p.reached(9_999)), [(0, 0), (1, 0)]);
        assert_eq!(steps(&p.reached(10_000)), [(0, 1), (1, 0)]);
        assert_eq!(steps(&p.reached(12_500)), [(0, 1), (1, 1)]);
        assert_eq!(p.next_at(2_500), Some(10_000));
        assert_eq!(p.next_at(10_000), Some(12_000));
    }

    #[test]
    fn alert_escalation_policy_checked() {
        let s = |a: i64| EscalationStep {
            after_ms: a,
            receivers: vec!["r".into()],
        };
        assert!(EscalationPolicy::new("p", vec![], None).is_err());
        assert!(EscalationPolicy::new("p", vec![s(5), s(5)], None).is_err());
        assert!(EscalationPolicy::new("p", vec![s(-1)], None).is_err());
        assert!(EscalationPolicy::new("p", vec![s(0), s(10)], Some(10)).is_err());
        let empty = EscalationStep {
            after_ms: 0,
            receivers: vec![],
        };
        assert!(EscalationPolicy::new("p", vec![empty], None).is_err());
    }
}
