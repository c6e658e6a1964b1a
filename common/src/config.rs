//! Config primitives shared by both binaries: TOML loading with errors that name the file,
//! line and key; human-readable durations (`"500ms"`, `"30s"`, `"7d"`) and byte sizes
//! (`"256MiB"`).

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};

/// Exit code for configuration errors (EX_CONFIG from sysexits.h is 78, but DESIGN.md fixes 64).
pub const EXIT_CONFIG: i32 = 64;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}:{line}:{column}: key `{key}`: {message}", path.display())]
    Parse {
        path: PathBuf,
        line: usize,
        column: usize,
        key: String,
        message: String,
    },
    #[error("{}: key `{key}`: {message}", path.display())]
    Invalid {
        path: PathBuf,
        key: String,
        message: String,
    },
}

impl ConfigError {
    pub fn invalid(path: &Path, key: &str, message: impl Into<String>) -> Self {
        ConfigError::Invalid {
            path: path.to_owned(),
            key: key.to_owned(),
            message: message.into(),
        }
    }
}

/// Reads and parses a TOML file into the raw (serde) config type.
pub fn load<T: DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(path, &text)
}

/// Parses TOML `text`; `path` is only used in error messages.
pub fn parse<T: DeserializeOwned>(path: &Path, text: &str) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|e| {
        let start = e.span().map(|s| s.start).unwrap_or(0).min(text.len());
        let before = &text[..start];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
        let column = start - line_start + 1;
        ConfigError::Parse {
            path: path.to_owned(),
            line,
            column,
            key: key_at(text, start, e.message()),
            message: e.message().to_owned(),
        }
    })
}

/// Best-effort dotted key for an error position: the `[table]` above it plus the key on its
/// line, or the name serde quoted in the message (unknown or missing fields).
fn key_at(text: &str, pos: usize, message: &str) -> String {
    let quoted = message.split('`').nth(1).map(str::to_owned);
    let line_start = text[..pos].rfind('\n').map(|i| i + 1).unwrap_or(0);
    let line_end = text[pos..]
        .find('\n')
        .map(|i| pos + i)
        .unwrap_or(text.len());
    let line = text[line_start..line_end].trim();
    let table = text[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_owned());
    let local = if message.starts_with("missing field") {
        quoted
    } else if let Some((k, _)) = line.split_once('=') {
        Some(k.trim().trim_matches('"').to_owned())
    } else {
        quoted
    };
    match (table, local) {
        (Some(t), Some(k)) if !line.starts_with('[') => format!("{t}.{k}"),
        (Some(t), None) => t,
        (_, Some(k)) => k,
        (None, None) => "(document)".to_owned(),
    }
}

/// `[tls]`: the files of one mutual-TLS endpoint. Relative paths resolve against the config
/// file's directory.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    /// CA bundle that verifies the peer.
    pub ca: PathBuf,
    /// This endpoint's certificate chain.
    pub cert: PathBuf,
    /// This endpoint's private key.
    pub key: PathBuf,
    /// Collector only: CRL files (PEM) client certificates are checked against. Default none.
    #[serde(default)]
    pub crl: Vec<PathBuf>,
}

impl RawTls {
    pub fn resolve(self, config_path: &Path) -> crate::tls::TlsFiles {
        crate::tls::TlsFiles {
            ca: resolve_path(config_path, self.ca),
            cert: resolve_path(config_path, self.cert),
            key: resolve_path(config_path, self.key),
            crl: self
                .crl
                .into_iter()
                .map(|p| resolve_path(config_path, p))
                .collect(),
        }
    }
}

/// `[log]`, the same for both binaries.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    /// tracing filter, e.g. "info" or "mcpwatch_agent=debug". Default "info".
    pub level: Option<String>,
    /// JSON lines instead of text. Default false.
    pub json: Option<bool>,
}

impl RawLog {
    /// (level, json) with defaults applied.
    pub fn resolve(self) -> (String, bool) {
        (
            self.level.unwrap_or_else(|| "info".into()),
            self.json.unwrap_or(false),
        )
    }
}

/// `p` as written when absolute, else relative to the directory of `config_path`.
pub fn resolve_path(config_path: &Path, p: PathBuf) -> PathBuf {
    if p.is_absolute() {
        p
    } else {
        config_path.parent().unwrap_or(Path::new(".")).join(p)
    }
}

/// A positive duration written as `<number><unit>` with unit ms, s, m, h or d.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration(std::time::Duration);

impl Duration {
    pub const fn from_millis(ms: u64) -> Self {
        Duration(std::time::Duration::from_millis(ms))
    }
    pub const fn from_secs(s: u64) -> Self {
        Duration(std::time::Duration::from_secs(s))
    }
    pub fn get(self) -> std::time::Duration {
        self.0
    }
    pub fn as_millis_i64(self) -> i64 {
        i64::try_from(self.0.as_millis()).unwrap_or(i64::MAX)
    }
}

impl FromStr for Duration {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let split = s
            .find(|c: char| !c.is_ascii_digit())
            .ok_or_else(|| format!("{s:?}: missing unit (ms, s, m, h, d)"))?;
        let (num, unit) = s.split_at(split);
        let n: u64 = num
            .parse()
            .map_err(|_| format!("{s:?}: expected a number followed by ms, s, m, h or d"))?;
        let ms_per = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(format!("{s:?}: unknown unit {unit:?} (ms, s, m, h, d)")),
        };
        let ms = n
            .checked_mul(ms_per)
            .ok_or_else(|| format!("{s:?}: too large"))?;
        Ok(Duration::from_millis(ms))
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        for (unit, per) in [
            ("d", 86_400_000),
            ("h", 3_600_000),
            ("m", 60_000),
            ("s", 1_000),
        ] {
            if ms >= per && ms.is_multiple_of(per) {
                return write!(f, "{}{unit}", ms / per);
            }
        }
        write!(f, "{ms}ms")
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A byte size written as `<number><unit>` with unit B, KiB, MiB, GiB (or KB, MB, GB).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl FromStr for ByteSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let n: u64 = num
            .parse()
            .map_err(|_| format!("{s:?}: expected a number followed by B, KiB, MiB or GiB"))?;
        let per: u64 = match unit.trim() {
            "" | "B" => 1,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            "KB" => 1_000,
            "MB" => 1_000_000,
            "GB" => 1_000_000_000,
            u => {
                return Err(format!(
                    "{s:?}: unknown unit {u:?} (B, KiB, MiB, GiB, KB, MB, GB)"
                ))
            }
        };
        n.checked_mul(per)
            .map(ByteSize)
            .ok_or_else(|| format!("{s:?}: too large"))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Raw {
        a: Option<u32>,
        t: Option<Tbl>,
    }
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Tbl {
        interval: Option<Duration>,
    }

    #[test]
    fn errors_name_file_line_and_key() {
        let p = Path::new("/etc/x.toml");
        let e = parse::<Raw>(p, "a = 1\n[t]\nbogus = 3\n").unwrap_err();
        let msg = e.to_string();
        assert!(msg.starts_with("/etc/x.toml:3:"), "{msg}");
        assert!(msg.contains("key `t.bogus`"), "{msg}");
        let e = parse::<Raw>(p, "[t]\ninterval = \"5 parsecs\"\n").unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains(":2:") && msg.contains("t.interval"), "{msg}");
        let e = parse::<Raw>(p, "a = \"x\"\n").unwrap_err();
        assert!(e.to_string().contains("key `a`"), "{e}");
    }

    #[test]
    fn durations_and_sizes_parse() {
        assert_eq!("500ms".parse::<Duration>().unwrap().get().as_millis(), 500);
        assert_eq!(
            "7d".parse::<Duration>().unwrap().get().as_secs(),
            7 * 86_400
        );
        assert!("5".parse::<Duration>().is_err());
        assert!("5y".parse::<Duration>().is_err());
        assert_eq!("30s".parse::<Duration>().unwrap().to_string(), "30s");
        assert_eq!("256MiB".parse::<ByteSize>().unwrap().0, 256 << 20);
        assert!("1XB".parse::<ByteSize>().is_err());
        assert!("99999999999GiB".parse::<ByteSize>().is_err());
    }
}
