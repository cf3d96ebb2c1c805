//! The machine a run measured on, and how busy it was: figures from a busy
//! machine are not comparable, so every report carries this.

use serde::Serialize;

/// The machine and its load.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Machine {
    /// CPUs this process may use.
    pub cores: usize,
    /// The CPU's model name (`/proc/cpuinfo`).
    pub cpu: String,
    /// The kernel release.
    pub kernel: String,
    /// 1-minute load average when the run started.
    pub load_before: f64,
    /// 1-minute load average when the run ended.
    pub load_after: f64,
}

impl Machine {
    /// Reads the machine now (`load_after` is set by [`finish`](Self::finish)).
    pub fn now() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split_once(':')).map(|(_, m)| m.trim()))
            .unwrap_or("unknown")
            .to_string();
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string();
        let load = load_average();
        Machine {
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu,
            kernel,
            load_before: load,
            load_after: load,
        }
    }

    /// Records the load average at the end of the run.
    pub fn finish(&mut self) {
        self.load_after = load_average();
    }
}

/// The 1-minute load average (`/proc/loadavg`), 0 where unknown.
pub fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0.0)
}
