//! Time-sliced counters: the bucket layout and its retention.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::cell::{Precision, SliceId};
use crate::error::{Error, ErrorKind, Result};
use crate::key::Key;

/// Default precisions, in seconds: 1 s, 5 s, 1 min, 5 min, 1 h, 5 h, 1 day.
pub const DEFAULT_PRECISIONS: [u32; 7] = [1, 5, 60, 300, 3_600, 18_000, 86_400];
/// Default number of samples kept per precision.
pub const DEFAULT_SAMPLES: u32 = 120;
/// Earliest time accepted as an event time or a series bound, in epoch
/// seconds: 0001-01-01T00:00:00Z.
pub const MIN_EPOCH_SECS: i64 = -62_135_596_800;
/// Latest time accepted as an event time or a series bound, in epoch
/// seconds: 9999-12-31T23:59:59Z.
pub const MAX_EPOCH_SECS: i64 = 253_402_300_799;
/// Most buckets one series query may span (`from..=to` at its precision):
/// a day of 1 s buckets fits. A wider range is an
/// [`InvalidInput`](ErrorKind::InvalidInput) error; query it in pieces.
/// [`TimeSlices::new`] keeps at most this many samples per precision, so
/// that one query can read a whole retention.
pub const MAX_SERIES_BUCKETS: u64 = 100_000;

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
        if u64::from(samples) > MAX_SERIES_BUCKETS {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!("{samples} samples per precision; at most {MAX_SERIES_BUCKETS} (the series bound)"),
            ));
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

    /// Checks the event time of a time-sliced increment when it is `now`:
    /// in years 1 to 9999 ([`epoch_time`]) and not older than the
    /// retention of every precision (an event no bucket would keep is
    /// refused, rather than counted into the total alone without a word).
    /// Returns it in epoch seconds. Errors are
    /// [`InvalidInput`](ErrorKind::InvalidInput).
    ///
    /// ```
    /// # use std::time::{Duration, SystemTime};
    /// # use counter_core::{ErrorKind, TimeSlices};
    /// let slices = TimeSlices::default(); // the longest: 120 days of 1 day
    /// let now = SystemTime::now();
    /// assert!(slices.check_event_time(now - Duration::from_secs(86_400), now).is_ok());
    /// let e = slices.check_event_time(now - Duration::from_secs(200 * 86_400), now).unwrap_err();
    /// assert_eq!(e.kind(), ErrorKind::InvalidInput);
    /// assert!(e.message().contains("older than the retention of every precision"));
    /// ```
    pub fn check_event_time(&self, at: SystemTime, now: SystemTime) -> Result<i64> {
        let at = checked_epoch_secs(at)?;
        let now = epoch_secs(now);
        let kept = |p: &Precision| p.bucket_start(at) >= self.cutoff(*p, now);
        if !self.precisions.iter().any(kept) {
            let longest = self.precisions.iter().max_by_key(|p| p.secs()).copied().expect("one precision at least");
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "event time {at} is older than the retention of every precision (the longest, {} samples of \
                     {longest}, keeps buckets from {} on): it would count into no bucket",
                    self.samples,
                    self.cutoff(longest, now)
                ),
            ));
        }
        Ok(at)
    }

    /// Checks a series query: `precision_secs` is configured, `from` and
    /// `to` are in years 1 to 9999, `from <= to`, and the range spans at
    /// most [`MAX_SERIES_BUCKETS`] buckets. Returns the precision and the
    /// range in epoch seconds. Errors are
    /// [`InvalidInput`](ErrorKind::InvalidInput).
    ///
    /// ```
    /// # use std::time::{Duration, UNIX_EPOCH};
    /// # use counter_core::{ErrorKind, TimeSlices};
    /// let slices = TimeSlices::default();
    /// let (from, to) = (UNIX_EPOCH, UNIX_EPOCH + Duration::from_secs(3_600));
    /// let (precision, f, t) = slices.series_range(60, from, to).unwrap();
    /// assert_eq!((precision.secs(), f, t), (60, 0, 3_600));
    /// let e = slices.series_range(1, UNIX_EPOCH, UNIX_EPOCH + Duration::from_secs(200_000)).unwrap_err();
    /// assert_eq!(e.kind(), ErrorKind::InvalidInput);
    /// ```
    pub fn series_range(&self, precision_secs: u32, from: SystemTime, to: SystemTime) -> Result<(Precision, i64, i64)> {
        let precision = self.precision(precision_secs)?;
        let (from, to) = (checked_epoch_secs(from)?, checked_epoch_secs(to)?);
        if from > to {
            return Err(Error::new(ErrorKind::InvalidInput, "the range starts after it ends"));
        }
        let buckets = bucket_count(precision, from, to);
        if buckets > MAX_SERIES_BUCKETS {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "the range {from}..={to} spans {buckets} buckets of {precision}; a series query may span at most \
                     {MAX_SERIES_BUCKETS} buckets"
                ),
            ));
        }
        Ok((precision, from, to))
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

/// Seconds since the epoch of `t`, floored (negative before 1970:
/// 1.5 s before the epoch is -2), saturating at the ends of the i64 range.
pub fn epoch_secs(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => {
            let before = e.duration();
            let secs = i128::from(before.as_secs()) + i128::from(before.subsec_nanos() > 0);
            i64::try_from(-secs).unwrap_or(i64::MIN)
        }
    }
}

fn out_of_range(secs: impl std::fmt::Display) -> Error {
    Error::new(
        ErrorKind::InvalidInput,
        format!(
            "time {secs} is out of range (years 1 to 9999: epoch seconds {MIN_EPOCH_SECS} to {MAX_EPOCH_SECS} are \
             accepted)"
        ),
    )
}

/// The time `secs` seconds from the epoch (negative: before it), for years
/// 1 to 9999 ([`MIN_EPOCH_SECS`]..=[`MAX_EPOCH_SECS`]); any other is an
/// [`InvalidInput`](ErrorKind::InvalidInput) error. Event times of sliced
/// increments and series bounds are refused outside this range, by the
/// library, the CLI and the HTTP service alike.
///
/// ```
/// # use std::time::{Duration, UNIX_EPOCH};
/// # use counter_core::{epoch_time, ErrorKind};
/// assert_eq!(epoch_time(-5).unwrap(), UNIX_EPOCH - Duration::from_secs(5));
/// assert_eq!(epoch_time(i64::MIN).unwrap_err().kind(), ErrorKind::InvalidInput);
/// assert!(epoch_time(253_402_300_800).is_err(), "year 10000");
/// ```
pub fn epoch_time(secs: i64) -> Result<SystemTime> {
    if !(MIN_EPOCH_SECS..=MAX_EPOCH_SECS).contains(&secs) {
        return Err(out_of_range(secs));
    }
    let offset = Duration::from_secs(secs.unsigned_abs());
    let time = if secs >= 0 { UNIX_EPOCH.checked_add(offset) } else { UNIX_EPOCH.checked_sub(offset) };
    time.ok_or_else(|| out_of_range(secs))
}

/// [`epoch_secs`] of `t`, or an [`InvalidInput`](ErrorKind::InvalidInput)
/// error when `t` is outside years 1 to 9999 (see [`epoch_time`]).
pub fn checked_epoch_secs(t: SystemTime) -> Result<i64> {
    let secs = epoch_secs(t);
    if (MIN_EPOCH_SECS..=MAX_EPOCH_SECS).contains(&secs) { Ok(secs) } else { Err(out_of_range(secs)) }
}

/// How many buckets of `precision` start in `from..=to` (0 when `from > to`).
pub fn bucket_count(precision: Precision, from: i64, to: i64) -> u64 {
    let p = i128::from(precision.secs());
    let first = i128::from(from).div_euclid(p) + i128::from(i128::from(from).rem_euclid(p) != 0);
    let last = i128::from(to).div_euclid(p);
    u64::try_from((last - first + 1).max(0)).unwrap_or(u64::MAX)
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
        // Exact to the nanosecond at year 1, where an f64 of seconds is not.
        let year_1 = UNIX_EPOCH - Duration::from_secs(MIN_EPOCH_SECS.unsigned_abs());
        assert_eq!(epoch_secs(year_1), MIN_EPOCH_SECS);
        assert_eq!(epoch_secs(year_1 - Duration::from_nanos(1)), MIN_EPOCH_SECS - 1);
    }

    #[test]
    fn times_outside_years_1_to_9999_are_invalid_input() {
        for secs in [i64::MIN, MIN_EPOCH_SECS - 1, MAX_EPOCH_SECS + 1, i64::MAX] {
            let e = epoch_time(secs).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidInput);
            assert!(e.message().contains(&format!("time {secs} is out of range (years 1 to 9999")), "{e}");
        }
        for secs in [MIN_EPOCH_SECS, -1, 0, MAX_EPOCH_SECS] {
            assert_eq!(checked_epoch_secs(epoch_time(secs).unwrap()).unwrap(), secs);
        }
        let past_9999 = UNIX_EPOCH + Duration::from_secs(MAX_EPOCH_SECS as u64 + 1);
        assert_eq!(checked_epoch_secs(past_9999).unwrap_err().kind(), ErrorKind::InvalidInput);
    }

    #[test]
    fn series_ranges_are_checked_and_bounded() {
        let ts = TimeSlices::default();
        let t = |secs| epoch_time(secs).unwrap();
        let p1 = ts.precision(1).unwrap();
        assert_eq!(bucket_count(p1, 0, 99_999), MAX_SERIES_BUCKETS);
        assert_eq!(bucket_count(ts.precision(60).unwrap(), 1, 59), 0);
        assert_eq!(bucket_count(ts.precision(60).unwrap(), -60, 60), 3);
        assert_eq!(bucket_count(p1, MIN_EPOCH_SECS, MAX_EPOCH_SECS), 315_537_897_600);
        assert_eq!(bucket_count(p1, i64::MIN, i64::MAX), u64::MAX);
        assert_eq!(bucket_count(p1, 5, 4), 0);
        assert_eq!(ts.series_range(1, t(0), t(99_999)).unwrap(), (p1, 0, 99_999));
        let e = ts.series_range(1, t(0), t(100_000)).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        assert!(e.message().contains("spans 100001 buckets of 1s"), "{e}");
        let e = ts.series_range(86_400, t(MIN_EPOCH_SECS), t(MAX_EPOCH_SECS)).unwrap_err();
        assert!(e.message().contains("buckets of 86400s; a series query may span at most 100000"), "{e}");
        assert!(ts.series_range(60, t(10), t(5)).unwrap_err().message().contains("starts after it ends"));
        assert!(ts.series_range(7, t(0), t(5)).unwrap_err().message().contains("unknown precision 7s"));
        let late = UNIX_EPOCH + Duration::from_secs(i64::MAX as u64);
        assert!(ts.series_range(1, t(0), late).unwrap_err().message().contains("out of range"));
        assert!(TimeSlices::new(&[1], 100_001).is_err(), "more samples than one query can read");
        assert!(TimeSlices::new(&[1], 100_000).is_ok());
    }

    #[test]
    fn events_older_than_every_retention_are_refused() {
        let ts = TimeSlices::new(&[1, 60], 3).unwrap();
        let (now, t) = (epoch_time(1_000).unwrap(), |secs| epoch_time(secs).unwrap());
        assert_eq!(ts.check_event_time(t(1_000), now).unwrap(), 1_000);
        assert_eq!(ts.check_event_time(t(840), now).unwrap(), 840, "the 60 s buckets keep 840..");
        let e = ts.check_event_time(t(839), now).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        assert!(e.message().contains("older than the retention of every precision"), "{e}");
        assert!(e.message().contains("3 samples of 60s, keeps buckets from 840 on"), "{e}");
        assert!(ts.check_event_time(t(MAX_EPOCH_SECS), now).is_ok(), "the future is kept");
        let e = ts.check_event_time(UNIX_EPOCH + Duration::from_secs(i64::MAX as u64), now).unwrap_err();
        assert!(e.message().contains("out of range"), "{e}");
    }
}
