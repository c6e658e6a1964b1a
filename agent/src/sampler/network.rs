//! Network interfaces from `/proc/net/dev` (one file for every interface, instead of four
//! sysfs files each): bytes and errors received and transmitted, cumulative.

use mcpwatch_common::wire::SeriesKey;

use super::proc_file::ProcFile;
use super::{
    as_f64, NETWORK_RECEIVE_BYTES_TOTAL, NETWORK_RECEIVE_ERRORS_TOTAL,
    NETWORK_TRANSMIT_BYTES_TOTAL, NETWORK_TRANSMIT_ERRORS_TOTAL,
};

/// One interface's line: name, then receive bytes and errors, transmit bytes and errors.
/// Receive has 8 columns (bytes packets errs drop fifo frame compressed multicast), then
/// transmit's bytes packets errs.
fn parse_line(line: &str) -> Option<(&str, [u64; 4])> {
    let (name, rest) = line.split_once(':')?;
    let columns: Vec<u64> = rest
        .split_ascii_whitespace()
        .map(|v| v.parse().ok())
        .collect::<Option<_>>()?;
    let column = |i: usize| columns.get(i).copied();
    Some((
        name.trim(),
        [column(0)?, column(2)?, column(8)?, column(10)?],
    ))
}

pub(super) struct NetworkSampler {
    dev: ProcFile,
}

impl NetworkSampler {
    pub(super) fn new() -> Self {
        NetworkSampler {
            dev: ProcFile::new("/proc/net/dev"),
        }
    }

    pub(super) fn sample(&mut self, out: &mut Vec<(SeriesKey, f64)>) {
        let text = match self.dev.read() {
            Ok(text) => text,
            Err(e) => {
                tracing::debug!(error = %e, "/proc/net/dev unreadable");
                return;
            }
        };
        // Two header lines, then one line per interface.
        let mut interfaces: Vec<(&str, [u64; 4])> =
            text.lines().skip(2).filter_map(parse_line).collect();
        interfaces.sort_unstable_by(|a, b| a.0.cmp(b.0));
        for (interface, values) in interfaces {
            let labels = [("interface", interface)];
            let names = [
                NETWORK_RECEIVE_BYTES_TOTAL,
                NETWORK_RECEIVE_ERRORS_TOTAL,
                NETWORK_TRANSMIT_BYTES_TOTAL,
                NETWORK_TRANSMIT_ERRORS_TOTAL,
            ];
            for (metric, value) in names.into_iter().zip(values) {
                out.push((SeriesKey::new(metric, &labels), as_f64(value)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_bytes_and_errors_of_each_interface() {
        let line = "  eth0: 1000 10 2 0 0 0 0 0  3000 30 4 0 0 0 0 0";
        assert_eq!(parse_line(line), Some(("eth0", [1000, 2, 3000, 4])));
        assert_eq!(parse_line("Inter-|   Receive"), None);
        assert_eq!(parse_line("lo: 1 2"), None);
    }

    #[test]
    fn the_real_file_has_loopback() {
        let mut sampler = NetworkSampler::new();
        let mut out = Vec::new();
        sampler.sample(&mut out);
        let lo = SeriesKey::new(NETWORK_RECEIVE_BYTES_TOTAL, &[("interface", "lo")]);
        assert!(out.iter().any(|(key, _)| *key == lo), "{out:?}");
    }
}
