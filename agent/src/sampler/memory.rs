//! Memory and swap from `/proc/meminfo`: total, used (total minus available), available, swap.

use mcpwatch_common::wire::SeriesKey;

use super::proc_file::ProcFile;
use super::{
    as_f64, MEMORY_AVAILABLE_BYTES, MEMORY_TOTAL_BYTES, MEMORY_USED_BYTES, SWAP_TOTAL_BYTES,
    SWAP_USED_BYTES,
};

/// The fields read, in bytes (the file counts kB).
#[derive(Debug, Default, PartialEq)]
struct MemInfo {
    total: u64,
    available: u64,
    swap_total: u64,
    swap_free: u64,
}

fn parse(text: &str) -> MemInfo {
    let mut info = MemInfo::default();
    for line in text.lines() {
        let Some((key, rest)) = line.split_once(':') else {
            continue;
        };
        let slot = match key {
            "MemTotal" => &mut info.total,
            "MemAvailable" => &mut info.available,
            "SwapTotal" => &mut info.swap_total,
            "SwapFree" => &mut info.swap_free,
            _ => continue,
        };
        let kb = rest.trim_start().split(' ').next().unwrap_or_default();
        *slot = kb.parse::<u64>().unwrap_or(0).saturating_mul(1024);
    }
    info
}

pub(super) struct MemorySampler {
    meminfo: ProcFile,
}

impl MemorySampler {
    pub(super) fn new() -> Self {
        MemorySampler {
            meminfo: ProcFile::new("/proc/meminfo"),
        }
    }

    pub(super) fn sample(&mut self, out: &mut Vec<(SeriesKey, f64)>) {
        let info = match self.meminfo.read() {
            Ok(text) => parse(text),
            Err(e) => {
                tracing::debug!(error = %e, "/proc/meminfo unreadable");
                return;
            }
        };
        if info.total == 0 {
            tracing::debug!("/proc/meminfo has no MemTotal");
            return;
        }
        let available = info.available.min(info.total);
        let swap_used = info.swap_total.saturating_sub(info.swap_free);
        for (name, value) in [
            (MEMORY_TOTAL_BYTES, info.total),
            (MEMORY_USED_BYTES, info.total - available),
            (MEMORY_AVAILABLE_BYTES, available),
            (SWAP_TOTAL_BYTES, info.swap_total),
            (SWAP_USED_BYTES, swap_used),
        ] {
            out.push((SeriesKey::new(name, &[]), as_f64(value)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_four_fields_in_bytes() {
        let text = "MemTotal:       16000 kB\nMemFree:  1 kB\nMemAvailable:    4000 kB\n\
                    SwapTotal:      2000 kB\nSwapFree:       500 kB\nHugePages_Total:       0\n";
        let info = parse(text);
        assert_eq!(
            info,
            MemInfo {
                total: 16_000 * 1024,
                available: 4_000 * 1024,
                swap_total: 2_000 * 1024,
                swap_free: 500 * 1024,
            }
        );
        assert_eq!(parse("garbage\nMemTotal: x kB"), MemInfo::default());
    }
}
