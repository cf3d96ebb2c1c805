//! What a load run increments: which keys, how often each (uniform or
//! Zipf-skewed), and by which deltas.
//!
//! Choices are drawn before the run into per-task sequences that the tasks
//! cycle through, so drawing random numbers costs nothing during the
//! measurement and every target (library or baseline) gets the same
//! sequence of keys and deltas.

use std::fmt;
use std::str::FromStr;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

/// Key choices drawn for all tasks together (each task gets a power of two
/// of them, between the bounds below), so that the sequences stay small
/// beside what is measured even with hundreds of tasks.
const KEY_CHOICES: usize = 1 << 20;
/// Fewest key choices per task.
const MIN_KEY_SEQUENCE: usize = 1 << 12;
/// Most key choices per task.
const MAX_KEY_SEQUENCE: usize = 1 << 18;
/// Length of each task's sequence of deltas (a power of two).
const DELTA_SEQUENCE: usize = 1 << 12;

/// How keys are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Distribution {
    /// Every key equally often.
    Uniform,
    /// Key of rank `k` (from 1) with weight `1 / k^s`: a few hot keys.
    Zipf {
        /// The exponent (1.0 is the classic skew; higher is hotter).
        s: f64,
    },
}

impl fmt::Display for Distribution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Distribution::Uniform => f.write_str("uniform"),
            Distribution::Zipf { s } => write!(f, "zipf:{s}"),
        }
    }
}

impl FromStr for Distribution {
    type Err = String;

    /// `uniform`, `zipf` (exponent 1.0) or `zipf:S`.
    fn from_str(text: &str) -> Result<Self, String> {
        match text.split_once(':') {
            None if text == "uniform" => Ok(Distribution::Uniform),
            None if text == "zipf" => Ok(Distribution::Zipf { s: 1.0 }),
            Some(("zipf", s)) => match s.parse::<f64>() {
                Ok(s) if s > 0.0 && s.is_finite() => Ok(Distribution::Zipf { s }),
                _ => Err(format!("bad Zipf exponent {s:?}: expected a number above 0")),
            },
            _ => Err(format!("unknown distribution {text:?} (known: uniform, zipf, zipf:S)")),
        }
    }
}

/// Deltas and their weights, e.g. `1` (always +1) or `1:90,5:9,-1:1`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeltaMix {
    /// `(delta, weight)` pairs.
    pub choices: Vec<(i64, u32)>,
}

impl Default for DeltaMix {
    /// Always +1.
    fn default() -> Self {
        DeltaMix { choices: vec![(1, 1)] }
    }
}

impl fmt::Display for DeltaMix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.choices.iter().map(|(d, w)| format!("{d}:{w}")).collect();
        f.write_str(&parts.join(","))
    }
}

impl FromStr for DeltaMix {
    type Err = String;

    /// Comma-separated `DELTA[:WEIGHT]` (weight 1 if left out).
    fn from_str(text: &str) -> Result<Self, String> {
        let mut choices = Vec::new();
        for part in text.split(',') {
            let (delta, weight) = part.split_once(':').unwrap_or((part, "1"));
            let delta = delta.trim().parse::<i64>().map_err(|_| format!("bad delta {delta:?} in {text:?}"))?;
            let weight = weight.trim().parse::<u32>().map_err(|_| format!("bad weight {weight:?} in {text:?}"))?;
            if weight > 0 {
                choices.push((delta, weight));
            }
        }
        if choices.is_empty() {
            return Err(format!("no delta with a weight above 0 in {text:?}"));
        }
        Ok(DeltaMix { choices })
    }
}

impl DeltaMix {
    /// Draws one delta.
    fn draw(&self, rng: &mut SmallRng) -> i64 {
        let total: u64 = self.choices.iter().map(|(_, w)| u64::from(*w)).sum();
        let mut pick = rng.random_range(0..total);
        for (delta, weight) in &self.choices {
            if pick < u64::from(*weight) {
                return *delta;
            }
            pick -= u64::from(*weight);
        }
        self.choices[0].0
    }
}

/// The names of a run's keys: `PREFIX:0000000` ... in the default
/// namespace, `width` digits each, so every key of a run has the same length.
pub fn key_names(prefix: &str, count: usize) -> Vec<String> {
    let width = count.saturating_sub(1).max(1).to_string().len();
    (0..count).map(|i| format!("{prefix}:{i:0width$}")).collect()
}

/// One task's pre-drawn choices: key indices and deltas, cycled.
#[derive(Debug, Clone)]
pub struct TaskSequence {
    keys: Vec<u32>,
    deltas: Vec<i64>,
    position: usize,
}

impl TaskSequence {
    /// The next `(key index, delta)`.
    #[inline]
    pub fn next_choice(&mut self) -> (usize, i64) {
        let p = self.position;
        self.position = p.wrapping_add(1);
        (self.keys[p & (self.keys.len() - 1)] as usize, self.deltas[p & (DELTA_SEQUENCE - 1)])
    }
}

/// Draws one sequence per task over `keys` keys (seeded, so runs repeat).
pub fn task_sequences(tasks: usize, keys: usize, distribution: Distribution, deltas: &DeltaMix) -> Vec<TaskSequence> {
    assert!(keys > 0 && keys <= u32::MAX as usize, "between 1 and 2^32 - 1 keys");
    let cumulative = match distribution {
        Distribution::Uniform => None,
        Distribution::Zipf { s } => {
            let mut sum = 0.0;
            let cumulative: Vec<f64> = (1..=keys)
                .map(|rank| {
                    sum += 1.0 / (rank as f64).powf(s);
                    sum
                })
                .collect();
            Some(cumulative)
        }
    };
    let length = (KEY_CHOICES / tasks.max(1)).next_power_of_two().clamp(MIN_KEY_SEQUENCE, MAX_KEY_SEQUENCE);
    (0..tasks)
        .map(|task| {
            let mut rng = SmallRng::seed_from_u64(0x5eed_0000 + task as u64);
            let keys = (0..length)
                .map(|_| match &cumulative {
                    None => rng.random_range(0..keys) as u32,
                    Some(c) => {
                        let x = rng.random_range(0.0..c[c.len() - 1]);
                        c.partition_point(|&v| v <= x).min(c.len() - 1) as u32
                    }
                })
                .collect();
            let deltas = (0..DELTA_SEQUENCE).map(|_| deltas.draw(&mut rng)).collect();
            TaskSequence { keys, deltas, position: task.wrapping_mul(length / tasks.max(1)) }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_distributions_and_mixes() {
        assert_eq!("uniform".parse::<Distribution>().unwrap(), Distribution::Uniform);
        assert_eq!("zipf:1.2".parse::<Distribution>().unwrap(), Distribution::Zipf { s: 1.2 });
        assert!("zipf:0".parse::<Distribution>().is_err());
        assert_eq!("1:90,-1:10".parse::<DeltaMix>().unwrap().choices, vec![(1, 90), (-1, 10)]);
        assert!("x".parse::<DeltaMix>().is_err());
    }

    #[test]
    fn zipf_makes_the_first_key_hot_and_uniform_does_not() {
        let hot = |d| {
            let seq = &task_sequences(1, 1000, d, &DeltaMix::default())[0];
            seq.keys.iter().filter(|&&k| k == 0).count() as f64 / seq.keys.len() as f64
        };
        assert!(hot(Distribution::Zipf { s: 1.0 }) > 0.1);
        assert!(hot(Distribution::Uniform) < 0.01);
    }

    #[test]
    fn key_names_have_one_length() {
        let names = key_names("k", 1000);
        assert_eq!((names[0].as_str(), names[999].as_str()), ("k:000", "k:999"));
    }
}
