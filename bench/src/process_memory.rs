//! This process's memory, from `/proc/self/status` (Linux).

use serde::Serialize;

/// Resident memory of this process, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct MemoryReading {
    /// Resident set size now (`VmRSS`).
    pub rss_bytes: u64,
    /// Peak resident set size (`VmHWM`), since start or the last [`reset_peak`].
    pub peak_bytes: u64,
}

/// Reads `VmRSS` and `VmHWM`; zeros where `/proc` is not available.
pub fn read() -> MemoryReading {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    MemoryReading { rss_bytes: field("VmRSS:"), peak_bytes: field("VmHWM:") }
}

/// Resets the peak (`VmHWM`) to the current RSS, so a phase's peak can be
/// read on its own (writes `5` to `/proc/self/clear_refs`). Returns whether
/// the kernel allowed it.
pub fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_nonzero_memory_on_linux() {
        let m = super::read();
        if cfg!(target_os = "linux") {
            assert!(m.rss_bytes > 0 && m.peak_bytes >= m.rss_bytes, "{m:?}");
        }
    }
}
