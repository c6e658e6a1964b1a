//! Load averages (`/proc/loadavg`), uptime (`/proc/uptime`), both through kept descriptors,
//! and the process count (the numeric entries of /proc).

use mcpwatch_common::wire::SeriesKey;

use super::proc_file::ProcFile;
use super::{LOAD1, LOAD15, LOAD5, PROCESSES, UPTIME_SECONDS};

/// The first `N` space-separated numbers of a line.
fn numbers<const N: usize>(text: &str) -> Option<[f64; N]> {
    let mut values = text.split_ascii_whitespace().map(str::parse::<f64>);
    let mut out = [0.0; N];
    for slot in &mut out {
        *slot = values.next()?.ok().filter(|v| v.is_finite())?;
    }
    Some(out)
}

pub(super) struct SystemSampler {
    loadavg: ProcFile,
    uptime: ProcFile,
}

impl SystemSampler {
    pub(super) fn new() -> Self {
        SystemSampler {
            loadavg: ProcFile::new("/proc/loadavg"),
            uptime: ProcFile::new("/proc/uptime"),
        }
    }

    pub(super) fn sample(&mut self, out: &mut Vec<(SeriesKey, f64)>) {
        match self.loadavg.read().map(numbers::<3>) {
            Ok(Some([one, five, fifteen])) => {
                out.push((SeriesKey::new(LOAD1, &[]), one));
                out.push((SeriesKey::new(LOAD5, &[]), five));
                out.push((SeriesKey::new(LOAD15, &[]), fifteen));
            }
            Ok(None) => tracing::debug!("/proc/loadavg unparsable"),
            Err(e) => tracing::debug!(error = %e, "load average unavailable"),
        }
        match self.uptime.read().map(numbers::<1>) {
            // Whole seconds, as before (the series is a slow gauge).
            Ok(Some([seconds])) => out.push((SeriesKey::new(UPTIME_SECONDS, &[]), seconds.trunc())),
            Ok(None) => tracing::debug!("/proc/uptime unparsable"),
            Err(e) => tracing::debug!(error = %e, "uptime unavailable"),
        }
        match count_processes() {
            Ok(n) => out.push((SeriesKey::new(PROCESSES, &[]), n as f64)),
            Err(e) => tracing::debug!(error = %e, "process count unavailable"),
        }
    }
}

/// Counts the numeric directory names in /proc (one directory read per cycle; reading every
/// process' stat file would cost milliseconds for the same number).
fn count_processes() -> std::io::Result<u64> {
    let mut n = 0u64;
    for entry in std::fs::read_dir("/proc")? {
        // An entry can vanish while we iterate (a process exiting); skip it.
        let Ok(entry) = entry else { continue };
        let name = entry.file_name();
        let bytes = name.as_encoded_bytes();
        if !bytes.is_empty() && bytes.iter().all(u8::is_ascii_digit) {
            n += 1;
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_load_and_uptime() {
        assert_eq!(
            numbers::<3>("0.50 1.25 2.00 3/400 12345\n"),
            Some([0.5, 1.25, 2.0])
        );
        assert_eq!(numbers::<1>("12.34 56.78\n"), Some([12.34]));
        assert_eq!(numbers::<3>("0.5 nan 1"), None);
        assert_eq!(numbers::<3>("0.5"), None);
        let mut sampler = SystemSampler::new();
        let mut out = Vec::new();
        sampler.sample(&mut out);
        let names: Vec<&str> = out.iter().map(|(k, _)| k.name.as_str()).collect();
        assert_eq!(names, [LOAD1, LOAD5, LOAD15, UPTIME_SECONDS, PROCESSES]);
        assert!(out.iter().all(|(_, v)| *v > 0.0 || v.is_sign_positive()));
    }
}
