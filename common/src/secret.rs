//! `Secret`: a string whose value is never printed. The one type for every credential the
//! agent or the collector loads (container environment, receiver keys, SMTP passwords).

use std::fmt;

use serde::{Deserialize, Deserializer};

/// A loaded secret. `Debug` prints `Secret(***)` and `Display` prints `***`, so a secret
/// inside a config struct, an error or a log field never shows its value; read it with
/// [`Secret::expose`] in the one place that needs it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The value, for the one place that needs it (a header, a container's environment).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

/// Equality that takes the same time wherever the inputs differ (token checks).
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_never_printed() {
        let s = Secret::new("hunter2");
        assert_eq!(s.expose(), "hunter2");
        let shown = format!("{s:?} {s} {:?}", Some(&s));
        assert!(!shown.contains("hunter2"), "{shown}");
        let parsed: Secret = from_toml("\"x\"");
        assert_eq!(parsed.expose(), "x");
    }

    fn from_toml(text: &str) -> Secret {
        #[derive(Deserialize)]
        struct Wrap {
            s: Secret,
        }
        let wrap: Wrap = toml::from_str(&format!("s = {text}")).expect("toml");
        wrap.s
    }
}
