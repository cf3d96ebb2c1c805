//! Time-sliced counters: the bucket layout and its retention.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::cell::{Precision, SliceId};
use crate::error::{Error, ErrorKind, Result};
use crate::key::Key;

/// Default precisions, in seconds: 1 s, 5 s, 1 min, 5 min, 1 h, 5 h, 1 day.
pub const DEFAULT_PRECISIONS: [u32; 7] = [1, 5, 60, 300, 3_600, 18_000, 86_400];
/// Default number of samples kept per precision.
pub const DEFAULT_SAMPLES: u32 = 120;

/// Which precisions time-sliced counters count into and how much history
/// each keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeSlices {
    precisions: Vec<Precision>,
    samples: u32,
    clean_every: Duration,
}

impl TimeSlices {
    /// Precisions (seconds) and samples kept per precision.
    pub fn new(precisions: &[u32], samples: u32) -> Result<TimeSlices> {
        if precisions.is_empty() {
            return Err(Error::new(ErrorKind::InvalidInput, "at least one precision is needed"));
        }
        if samples == 0 {
            return Err(Error::new(ErrorKind::InvalidInput, "at least one sample per precision must be kept"));
        }
        let mut out = Vec::with_capacity(precisions.len());
        for &p in precisions {
            let p = Precision::from_secs(p)
                .ok_or_else(|| Error::new(ErrorKind::InvalidInput, "a precision must be at least 1 second"))?;
            if out.contains(&p) {
                return Err(Error::new(ErrorKind::InvalidInput, format!("precision {p} is listed twice")));
            }
            out.push(p);
        }
        out.sort();
        Ok(TimeSlices { precisions: out, samples, clean_every: Duration::from_secs(60) })
    }

    /// How often the background cleaner runs (60 s by default).
    pub fn clean_every(mut self, every: Duration) -> TimeSlices {
        self.clean_every = every;
        self
    }

    /// The precisions, shortest first.
    pub fn precisions(&self) -> &[Precision] {
        &self.precisions
    }

    /// Samples kept per precision.
    pub fn samples(&self) -> u32 {
        self.samples
    }

    /// Interval of the background cleaner.
    pub fn cleaner_interval(&self) -> Duration {
        self.clean_every
    }

    /// The configured precision of `seconds`, or a typed error naming the
    /// configured ones.
    pub fn precision(&self, seconds: u32) -> Result<Precision> {
        self.precisions.iter().copied().find(|p| p.secs() == seconds).ok_or_else(|| {
            let known: Vec<String> = self.precisions.iter().map(|p| p.secs().to_string()).collect();
            Error::new(
                ErrorKind::InvalidInput,
                format!("unknown precision {seconds}s (configured: {})", known.join(", ")),
            )
        })
    }

    /// Start of the oldest bucket kept at `precision` when it is `now`.
    pub fn cutoff(&self, precision: Precision, now: i64) -> i64 {
        let keep = i64::from(self.samples - 1) * i64::from(precision.secs());
        precision.bucket_start(now).saturating_sub(keep)
    }

    /// The buckets an event of `key` at `at` counts into, at every precision
    /// whose retention still covers `at`.
    pub fn slices_for(&self, key: &Key, at: i64, now: i64, out: &mut Vec<SliceId>) {
        for &precision in &self.precisions {
            let start = precision.bucket_start(at);
            if start >= self.cutoff(precision, now) {
                out.push(SliceId { key: key.clone(), precision, start });
            }
        }
    }
}

impl Default for TimeSlices {
    fn default() -> Self {
        TimeSlices::new(&DEFAULT_PRECISIONS, DEFAULT_SAMPLES).expect("default time slices are valid")
    }
}

/// Seconds since the epoch of `t` (negative before 1970).
pub fn epoch_secs(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs_f64().ceil() as i64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_and_retention_window() {
        assert!(TimeSlices::new(&[], 10).is_err());
        assert!(TimeSlices::new(&[0], 10).is_err());
        assert!(TimeSlices::new(&[5, 5], 10).is_err());
        assert!(TimeSlices::new(&[5], 0).is_err());
        let ts = TimeSlices::new(&[60, 1], 3).unwrap();
        assert_eq!(ts.precisions()[0].secs(), 1);
        let e = ts.precision(7).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        assert!(e.to_string().contains("1, 60"), "{e}");
        let p = ts.precision(60).unwrap();
        assert_eq!(ts.cutoff(p, 1_000), 960 - 120);
        let key = Key::named("k").unwrap();
        let mut out = Vec::new();
        ts.slices_for(&key, 1_000, 1_000, &mut out);
        assert_eq!(out.len(), 2);
        out.clear();
        ts.slices_for(&key, 990, 1_000, &mut out);
        assert_eq!(out.len(), 1, "the 1 s buckets keep 3 samples only: 990 is past them");
        assert_eq!(out[0].start, 960);
    }

    #[test]
    fn epoch_seconds_before_1970_are_negative() {
        assert_eq!(epoch_secs(UNIX_EPOCH - Duration::from_millis(1500)), -2);
        assert_eq!(epoch_secs(UNIX_EPOCH + Duration::from_secs(5)), 5);
    }
}
