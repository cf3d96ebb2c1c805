//! Write-behind policies: when pending deltas move from cache to store.

use std::time::Duration;

use crate::error::{Error, ErrorKind, Result};
use crate::key::Key;

/// Default age bound of a pending delta.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);

/// When a counter's pending delta is written to the store.
///
/// Every policy has an age bound (the interval, 10 s by default), so nothing
/// stays pending forever; a batch-size threshold adds "or as soon as the
/// pending delta's magnitude reaches N", whichever comes first. Immediate
/// writes the store before `incr` returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    interval: Duration,
    threshold: Option<u64>,
    immediate: bool,
}

impl Policy {
    /// Write-through: the store is updated before `incr` returns (when it is
    /// reachable; otherwise the delta stays pending and is retried).
    pub const fn immediate() -> Policy {
        Policy { interval: Duration::ZERO, threshold: None, immediate: true }
    }

    /// At most once per `interval` per counter. Fails on a zero interval
    /// (use [`Policy::immediate`]).
    pub fn interval(interval: Duration) -> Result<Policy> {
        if interval.is_zero() {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "a policy interval must be above zero; use Policy::immediate",
            ));
        }
        Ok(Policy { interval, threshold: None, immediate: false })
    }

    /// When the pending delta's magnitude reaches `threshold` (a threshold,
    /// not a modulo: stepping over it counts), or after the default interval.
    pub fn threshold(threshold: u64) -> Result<Policy> {
        Policy::default().with_threshold(threshold)
    }

    /// This policy, also flushing when the pending magnitude reaches `threshold`.
    pub fn with_threshold(mut self, threshold: u64) -> Result<Policy> {
        if threshold == 0 {
            return Err(Error::new(ErrorKind::InvalidInput, "a policy threshold must be at least 1"));
        }
        self.threshold = Some(threshold);
        Ok(self)
    }

    /// This policy with another age bound.
    pub fn with_interval(self, interval: Duration) -> Result<Policy> {
        let mut p = Policy::interval(interval)?;
        p.threshold = self.threshold;
        Ok(p)
    }

    /// Whether this is write-through.
    pub fn is_immediate(&self) -> bool {
        self.immediate
    }

    /// The age bound (zero for immediate).
    pub fn age_bound(&self) -> Duration {
        self.interval
    }

    /// The batch-size threshold, if any.
    pub fn threshold_value(&self) -> Option<u64> {
        self.threshold
    }

    /// Whether a pending delta of this magnitude must be flushed now.
    pub fn reached(&self, pending: i128) -> bool {
        self.immediate || self.threshold.is_some_and(|t| pending.unsigned_abs() >= u128::from(t))
    }
}

impl Default for Policy {
    /// Every 10 seconds.
    fn default() -> Self {
        Policy { interval: DEFAULT_INTERVAL, threshold: None, immediate: false }
    }
}

/// Settings of a counter family: counters of a namespace whose names start
/// with a prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Family {
    /// Write-behind policy.
    pub policy: Policy,
    /// Whether increments also count into time slices.
    pub time_sliced: bool,
    /// Whether increments also count into the key's ancestors (`a:b:c` into
    /// `a:b` and `a`).
    pub rollup: bool,
}

impl Family {
    /// A family with `policy`, no time slices, no rollup.
    pub fn new(policy: Policy) -> Family {
        Family { policy, ..Family::default() }
    }

    /// With time slices.
    pub fn time_sliced(mut self) -> Family {
        self.time_sliced = true;
        self
    }

    /// With rollup into ancestors.
    pub fn rollup(mut self) -> Family {
        self.rollup = true;
        self
    }
}

/// The default family plus families by namespace and name prefix; the
/// longest matching prefix wins.
#[derive(Debug, Clone, Default)]
pub struct Families {
    default: Family,
    /// (namespace, prefix, family), longest prefix first.
    by_prefix: Vec<(String, String, Family)>,
}

impl Families {
    /// Only the default family.
    pub fn new(default: Family) -> Families {
        Families { default, by_prefix: Vec::new() }
    }

    /// The default family.
    pub fn default_family(&self) -> &Family {
        &self.default
    }

    /// Sets the default family.
    pub fn set_default(&mut self, family: Family) {
        self.default = family;
    }

    /// Adds (or replaces) the family of `namespace` counters named `prefix...`.
    pub fn insert(&mut self, namespace: &str, prefix: &str, family: Family) {
        self.by_prefix.retain(|(n, p, _)| !(n == namespace && p == prefix));
        self.by_prefix.push((namespace.to_string(), prefix.to_string(), family));
        self.by_prefix.sort_by_key(|f| std::cmp::Reverse(f.1.len()));
    }

    /// The family of `key`.
    pub fn of(&self, key: &Key) -> &Family {
        if self.by_prefix.is_empty() {
            return &self.default;
        }
        self.by_prefix
            .iter()
            .find(|(n, p, _)| key.namespace() == n && key.name().starts_with(p.as_str()))
            .map(|(_, _, f)| f)
            .unwrap_or(&self.default)
    }

    /// The shortest age bound of any family.
    pub fn shortest_interval(&self) -> Duration {
        self.by_prefix
            .iter()
            .map(|(_, _, f)| f)
            .chain(std::iter::once(&self.default))
            .filter(|f| !f.policy.immediate)
            .map(|f| f.policy.interval)
            .min()
            .unwrap_or(DEFAULT_INTERVAL)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threshold_is_not_a_modulo() {
        let p = Policy::threshold(100).unwrap();
        assert!(!p.reached(99));
        assert!(p.reached(100));
        assert!(p.reached(150), "stepping over the threshold still fires");
        assert!(p.reached(-100));
        assert_eq!(p.age_bound(), DEFAULT_INTERVAL, "a threshold policy keeps an age bound");
        assert!(Policy::threshold(0).is_err());
        assert!(Policy::interval(Duration::ZERO).is_err());
        assert!(Policy::immediate().reached(0));
    }

    #[test]
    fn longest_prefix_wins() {
        let mut f = Families::default();
        let fast = Family::new(Policy::interval(Duration::from_millis(10)).unwrap());
        let faster = Family::new(Policy::immediate());
        f.insert("ns", "clicks", fast);
        f.insert("ns", "clicks:vip", faster);
        assert_eq!(f.of(&Key::new("ns", "clicks:vip:1").unwrap()), &faster);
        assert_eq!(f.of(&Key::new("ns", "clicks:1").unwrap()), &fast);
        assert_eq!(f.of(&Key::new("other", "clicks:1").unwrap()), &Family::default());
        assert_eq!(f.shortest_interval(), Duration::from_millis(10));
    }
}
