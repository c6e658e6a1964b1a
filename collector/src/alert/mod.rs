//! The alert engine: pure logic (rules, samples, state in → transitions out). No I/O, no
//! clock, no async: the store feeds it samples and persists its state and transitions in one
//! transaction, so everything here is testable with explicit timestamps.

mod aggregate;
pub mod builtin;
pub mod counter;
pub mod dry_run;
pub mod engine;
pub mod escalation;
pub mod histogram;
pub mod owner;
pub mod policy;
mod raw_rule;
pub mod route;
pub mod rule;
pub mod selector;
pub mod source;
mod state_machine;
pub mod template;
pub mod window;

#[cfg(test)]
mod tests;

pub use builtin::{builtin_rules_raw, BUILTIN_RULES_TOML};
pub use engine::{
    AlertState, Engine, EngineOptions, EngineState, Phase, SeriesState, StateDelta, Transition,
};
pub use owner::OwnerScope;
pub use rule::{
    load_rules, merge_rules, parse_rules, validate_rules, Comparator, Level, LevelThreshold,
    RawRule, RawRulesFile, Rule, RuleError, Severity, Thresholds,
};
pub use selector::{Labels, MatchOp, Matcher, Selector};
pub use source::{MemorySource, Series, SeriesSource};
pub use state_machine::fingerprint;
pub use window::WindowFn;
