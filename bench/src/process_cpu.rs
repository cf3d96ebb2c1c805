//! CPU time this process has used, from `/proc/self/stat` (Linux): the
//! client's side of a load, beside the server's own accounting.

use std::time::Duration;

/// Clock ticks per second of `/proc/<pid>/stat` (`USER_HZ`, 100 on every
/// Linux the project runs on).
const TICKS_PER_SEC: u64 = 100;

/// User plus system CPU time of every thread of this process so far, or
/// `None` where `/proc` is not available.
pub fn used() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) may hold spaces: count from its `)`.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // After the name: state is field 3, utime 14 and stime 15.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 1000 / TICKS_PER_SEC))
}

#[cfg(test)]
mod tests {
    #[test]
    fn cpu_time_grows_with_work() {
        let readable = super::used();
        if cfg!(not(target_os = "linux")) && readable.is_none() {
            return;
        }
        let before = readable.expect("/proc/self/stat is readable on Linux");
        let started = std::time::Instant::now();
        let mut x = 0u64;
        while started.elapsed() < std::time::Duration::from_millis(200) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        let after = super::used().expect("read once, readable again");
        assert!(after >= before + std::time::Duration::from_millis(100), "{before:?} -> {after:?}");
    }
}
