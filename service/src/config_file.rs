//! The service's TOML configuration file (`counters serve --config FILE`):
//! some of the service's settings, and families of counters with policies of
//! their own.
//!
//! ```toml
//! listen = "127.0.0.1:8080"
//! flush_interval = "10s"      # the default family's age bound
//! time_sliced = false
//! max_pending = 1000000
//!
//! [[family]]
//! namespace = "clicks"
//! prefix = "ad:"              # optional; "" (the default) is the whole namespace
//! interval = "2s"             # optional; default: flush_interval
//! threshold = 1000            # optional: flush once a pending delta reaches it
//! time_sliced = true          # optional; default: time_sliced above
//! rollup = false              # optional
//!
//! [[family]]
//! namespace = "payments"
//! policy = "immediate"        # write-through; "interval" (the default) batches
//! ```
//!
//! Durations are [`parse_duration`]'s: `"250ms"`, `"2s"`, `"5m"`, `"1h"`, or
//! a number of seconds. Every key is checked: an unknown one, a namespace or
//! prefix that no key could have, a zero interval or threshold, an interval
//! or threshold with `policy = "immediate"`, or two families with the same
//! namespace and prefix are refused with a [`ErrorKind::Config`] error that
//! names the file, line and column (`counters.toml:7:12: ...`).

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use counters::{Error, ErrorKind, Key, Result};
use serde::Deserialize;
use toml::Spanned;

use crate::config::{FamilyConfig, FamilyPolicy, ServiceConfig, parse_duration, parse_listen};

/// What a configuration file gives; `None` where it says nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigFile {
    /// `listen`: the address to listen on.
    pub listen: Option<SocketAddr>,
    /// `flush_interval`: the default family's age bound.
    pub flush_interval: Option<Duration>,
    /// `time_sliced`: count every increment into time slices by default.
    pub time_sliced: Option<bool>,
    /// `max_pending`: most cells pending before increments get 503.
    pub max_pending: Option<u64>,
    /// The `[[family]]` tables, in file order.
    pub families: Vec<FamilyConfig>,
}

impl ConfigFile {
    /// Reads and checks the file at `path`. A missing or unreadable file,
    /// or an invalid one, is a [`ErrorKind::Config`] error naming it.
    pub fn load(path: &Path) -> Result<ConfigFile> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::new(ErrorKind::Config, format!("cannot read the configuration file {}: {e}", path.display()))
        })?;
        ConfigFile::parse(&text, &path.display().to_string())
    }

    /// Checks `text`, a configuration file; `origin` (its path) starts every
    /// message, followed by the line and column at fault.
    pub fn parse(text: &str, origin: &str) -> Result<ConfigFile> {
        let source = Source { text, origin };
        let raw: RawFile = toml::from_str(text).map_err(|e| source.toml_error(&e))?;
        raw.check(&source)
    }

    /// Sets in `config` what the file gives, and adds its families.
    pub fn apply(self, config: &mut ServiceConfig) {
        if let Some(listen) = self.listen {
            config.listen = listen;
        }
        if let Some(interval) = self.flush_interval {
            config.flush_interval = interval;
        }
        if let Some(sliced) = self.time_sliced {
            config.time_sliced = sliced;
        }
        if let Some(cells) = self.max_pending {
            config.max_pending = cells;
        }
        config.families.extend(self.families);
    }
}

/// The file's text and name, to turn byte offsets into `name:line:column`.
struct Source<'a> {
    text: &'a str,
    origin: &'a str,
}

impl Source<'_> {
    /// A configuration error at the start of `span`.
    fn error(&self, span: &Range<usize>, message: impl fmt::Display) -> Error {
        let (line, column) = line_column(self.text, span.start);
        Error::new(ErrorKind::Config, format!("{}:{line}:{column}: {message}", self.origin))
    }

    /// A parse or type error of the `toml` crate, on one line.
    fn toml_error(&self, e: &toml::de::Error) -> Error {
        let message = e.message().trim().replace('\n', " ");
        match e.span() {
            Some(span) => self.error(&span, message),
            None => Error::new(ErrorKind::Config, format!("{}: {message}", self.origin)),
        }
    }
}

/// The 1-based line and column (in characters) of byte `offset` of `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (before.matches('\n').count() + 1, before[line_start..].chars().count() + 1)
}

/// The file as written, with the spans of what is checked after parsing.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    listen: Option<Spanned<String>>,
    flush_interval: Option<DurationValue>,
    time_sliced: Option<bool>,
    max_pending: Option<Spanned<u64>>,
    #[serde(default)]
    family: Vec<Spanned<RawFamily>>,
}

/// One `[[family]]` table as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFamily {
    namespace: Spanned<String>,
    prefix: Option<Spanned<String>>,
    policy: Option<Spanned<PolicyName>>,
    interval: Option<Spanned<DurationValue>>,
    threshold: Option<Spanned<u64>>,
    time_sliced: Option<Spanned<bool>>,
    rollup: Option<bool>,
}

/// `policy = "immediate"` or `"interval"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum PolicyName {
    Immediate,
    Interval,
}

impl RawFile {
    fn check(self, source: &Source<'_>) -> Result<ConfigFile> {
        let listen = match self.listen {
            Some(l) => Some(parse_listen(l.get_ref()).map_err(|e| source.error(&l.span(), format!("listen: {e}")))?),
            None => None,
        };
        if let Some(cells) = &self.max_pending {
            if *cells.get_ref() == 0 {
                return Err(source.error(&cells.span(), "max_pending must be at least 1"));
            }
        }
        let mut families = Vec::with_capacity(self.family.len());
        let mut seen: HashMap<(String, String), usize> = HashMap::new();
        for entry in self.family {
            let span = entry.span();
            let family = entry.into_inner().check(source)?;
            let (line, _) = line_column(source.text, span.start);
            if let Some(first) = seen.insert((family.namespace.clone(), family.prefix.clone()), line) {
                return Err(source.error(&span, format!("{family} is given twice (first at line {first})")));
            }
            families.push(family);
        }
        Ok(ConfigFile {
            listen,
            flush_interval: self.flush_interval.map(|d| d.0),
            time_sliced: self.time_sliced,
            max_pending: self.max_pending.map(Spanned::into_inner),
            families,
        })
    }
}

impl RawFamily {
    /// The family, checked.
    fn check(self, source: &Source<'_>) -> Result<FamilyConfig> {
        let namespace = self.namespace;
        Key::validate_namespace(namespace.get_ref())
            .map_err(|e| source.error(&namespace.span(), format!("bad namespace: {}", e.message())))?;
        let prefix = match self.prefix {
            Some(prefix) => {
                Key::validate_prefix(prefix.get_ref())
                    .map_err(|e| source.error(&prefix.span(), format!("bad prefix: {}", e.message())))?;
                prefix.into_inner()
            }
            None => String::new(),
        };
        if let Some(threshold) = &self.threshold {
            if *threshold.get_ref() == 0 {
                return Err(source.error(&threshold.span(), "threshold must be at least 1"));
            }
        }
        let policy = match self.policy.as_ref().map(|p| *p.get_ref()) {
            Some(PolicyName::Immediate) => {
                let conflict = [
                    ("interval", self.interval.as_ref().map(Spanned::span)),
                    ("threshold", self.threshold.as_ref().map(Spanned::span)),
                ];
                if let Some((key, Some(span))) = conflict.into_iter().find(|(_, span)| span.is_some()) {
                    return Err(source.error(
                        &span,
                        format!("{key} conflicts with policy = \"immediate\" (write-through has no {key}); remove one"),
                    ));
                }
                FamilyPolicy::Immediate
            }
            Some(PolicyName::Interval) | None => FamilyPolicy::Batched {
                interval: self.interval.map(|i| i.into_inner().0),
                threshold: self.threshold.map(Spanned::into_inner),
            },
        };
        Ok(FamilyConfig {
            namespace: namespace.into_inner(),
            prefix,
            policy,
            time_sliced: self.time_sliced.map(Spanned::into_inner),
            rollup: self.rollup.unwrap_or(false),
        })
    }
}

/// A duration above zero: a string for [`parse_duration`], or a number of
/// seconds.
struct DurationValue(Duration);

impl<'de> Deserialize<'de> for DurationValue {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        deserializer.deserialize_any(DurationVisitor)
    }
}

struct DurationVisitor;

impl serde::de::Visitor<'_> for DurationVisitor {
    type Value = DurationValue;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a duration: a string like \"250ms\", \"2s\", \"5m\", or a number of seconds")
    }

    fn visit_str<E: serde::de::Error>(self, text: &str) -> std::result::Result<DurationValue, E> {
        parse_duration(text).map(DurationValue).map_err(E::custom)
    }

    fn visit_i64<E: serde::de::Error>(self, secs: i64) -> std::result::Result<DurationValue, E> {
        match u64::try_from(secs) {
            Ok(secs) => self.visit_u64(secs),
            Err(_) => Err(E::custom(format!("{secs} must be above zero"))),
        }
    }

    fn visit_u64<E: serde::de::Error>(self, secs: u64) -> std::result::Result<DurationValue, E> {
        if secs == 0 {
            return Err(E::custom("0 must be above zero"));
        }
        Ok(DurationValue(Duration::from_secs(secs)))
    }

    fn visit_f64<E: serde::de::Error>(self, secs: f64) -> std::result::Result<DurationValue, E> {
        if !(secs > 0.0 && secs.is_finite()) {
            return Err(E::custom(format!("{secs} must be above zero")));
        }
        Duration::try_from_secs_f64(secs).map(DurationValue).map_err(|e| E::custom(format!("{secs}: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ConfigFile> {
        ConfigFile::parse(text, "test.toml")
    }

    /// The message of the error `text` gives, which must be a Config error
    /// at `line` (and `column`).
    fn refused(text: &str, line: usize, column: usize) -> String {
        let e = parse(text).expect_err(text);
        assert_eq!(e.kind(), ErrorKind::Config, "{e}");
        let message = e.message().to_string();
        assert!(message.starts_with(&format!("test.toml:{line}:{column}: ")), "{text}\n=> {message}");
        assert!(!message.contains('\n'), "one line: {message}");
        message
    }

    const GOOD: &str = r#"
listen = "127.0.0.1:9090"
flush_interval = "250ms"
time_sliced = true
max_pending = 5000

[[family]]
namespace = "clicks"
prefix = "ad:"
interval = "2s"
threshold = 1000
time_sliced = true
rollup = true

[[family]]
namespace = "payments"
policy = "immediate"

[[family]]
namespace = "clicks"
threshold = 10
"#;

    #[test]
    fn a_good_file_gives_its_settings_and_families() {
        let file = parse(GOOD).unwrap();
        assert_eq!(file.listen, Some("127.0.0.1:9090".parse().unwrap()));
        assert_eq!(file.flush_interval, Some(Duration::from_millis(250)));
        assert_eq!((file.time_sliced, file.max_pending), (Some(true), Some(5000)));
        let batched = |interval, threshold| FamilyPolicy::Batched { interval, threshold };
        assert_eq!(
            file.families,
            [
                FamilyConfig {
                    namespace: "clicks".into(),
                    prefix: "ad:".into(),
                    policy: batched(Some(Duration::from_secs(2)), Some(1000)),
                    time_sliced: Some(true),
                    rollup: true,
                },
                FamilyConfig {
                    namespace: "payments".into(),
                    prefix: String::new(),
                    policy: FamilyPolicy::Immediate,
                    time_sliced: None,
                    rollup: false,
                },
                FamilyConfig {
                    namespace: "clicks".into(),
                    prefix: String::new(),
                    policy: batched(None, Some(10)),
                    time_sliced: None,
                    rollup: false,
                },
            ]
        );
        // Unset family settings follow the service's defaults.
        let defaults = Duration::from_secs(7);
        let third = file.families[2].family(defaults, true).unwrap();
        assert_eq!(third.policy.age_bound(), defaults);
        assert_eq!(third.policy.threshold_value(), Some(10));
        assert!(third.time_sliced && !third.rollup);
        assert!(file.families[1].family(defaults, false).unwrap().policy.is_immediate());
        let first = file.families[0].family(defaults, false).unwrap();
        assert_eq!(first.policy.age_bound(), Duration::from_secs(2));
        assert!(first.time_sliced && first.rollup);
        assert!(!file.families[1].family(defaults, false).unwrap().time_sliced, "unset: the service's");

        let mut config = ServiceConfig::default();
        file.apply(&mut config);
        assert_eq!(config.listen.port(), 9090);
        assert_eq!((config.flush_interval, config.time_sliced), (Duration::from_millis(250), true));
        assert_eq!((config.max_pending, config.families.len()), (5000, 3));
        config.validate().unwrap();
    }

    #[test]
    fn an_empty_file_changes_nothing_and_numbers_are_seconds() {
        assert_eq!(parse("").unwrap(), ConfigFile::default());
        let file = parse("flush_interval = 3\n[[family]]\nnamespace = \"\"\ninterval = 0.5\n").unwrap();
        assert_eq!(file.flush_interval, Some(Duration::from_secs(3)));
        let expected = FamilyPolicy::Batched { interval: Some(Duration::from_millis(500)), threshold: None };
        assert_eq!(file.families[0].policy, expected);
    }

    #[test]
    fn unknown_keys_are_refused_at_their_line() {
        let m = refused("listen = \"127.0.0.1:1\"\ntoken = \"secret\"\n", 2, 1);
        assert!(m.contains("unknown field `token`"), "{m}");
        let m = refused("[[family]]\nnamespace = \"a\"\n\n  intervall = \"1s\"\n", 4, 3);
        assert!(m.contains("unknown field `intervall`"), "{m}");
        let m = refused("[famly]\nnamespace = \"a\"\n", 1, 2);
        assert!(m.contains("unknown field `famly`"), "{m}");
    }

    #[test]
    fn syntax_and_type_errors_name_their_line() {
        refused("flush_interval = \"1s\"\nlisten = \n", 2, 10);
        let m = refused("\n\nmax_pending = \"many\"\n", 3, 15);
        assert!(m.contains("expected u64"), "{m}");
        let m = refused("[[family]]\nnamespace = \"a\"\npolicy = \"fast\"\n", 3, 10);
        assert!(m.contains("unknown variant `fast`"), "{m}");
        let m = refused("[[family]]\nprefix = \"a\"\n", 1, 1);
        assert!(m.contains("missing field `namespace`"), "{m}");
        let m = refused("time_sliced = \"yes\"\n", 1, 15);
        assert!(m.contains("bool"), "{m}");
    }

    #[test]
    fn bad_durations_and_zero_bounds_are_refused_at_their_value() {
        let m = refused("flush_interval = \"10 seconds\"\n", 1, 18);
        assert!(m.contains("is not a duration"), "{m}");
        let m = refused("flush_interval = \"0s\"\n", 1, 18);
        assert!(m.contains("must be above zero"), "{m}");
        let m = refused("flush_interval = -1\n", 1, 18);
        assert!(m.contains("must be above zero"), "{m}");
        let m = refused("[[family]]\nnamespace = \"a\"\ninterval = 0\n", 3, 12);
        assert!(m.contains("must be above zero"), "{m}");
        let m = refused("[[family]]\nnamespace = \"a\"\nthreshold = 0\n", 3, 13);
        assert!(m.contains("threshold must be at least 1"), "{m}");
        let m = refused("max_pending = 0\n", 1, 15);
        assert!(m.contains("max_pending must be at least 1"), "{m}");
    }

    #[test]
    fn a_family_may_turn_slices_off_when_the_service_turns_them_on() {
        let text = "time_sliced = true\n[[family]]\nnamespace = \"a\"\ntime_sliced = false\n";
        let file = parse(text).unwrap();
        assert_eq!(file.families[0].time_sliced, Some(false));
    }

    #[test]
    fn immediate_with_an_interval_or_threshold_is_refused() {
        let m = refused("[[family]]\nnamespace = \"a\"\npolicy = \"immediate\"\ninterval = \"1s\"\n", 4, 12);
        assert!(m.contains("interval conflicts with policy = \"immediate\""), "{m}");
        let m = refused("[[family]]\nnamespace = \"a\"\nthreshold = 5\npolicy = \"immediate\"\n", 3, 13);
        assert!(m.contains("threshold conflicts with policy = \"immediate\""), "{m}");
        parse("[[family]]\nnamespace = \"a\"\npolicy = \"interval\"\ninterval = \"1s\"\n").unwrap();
    }

    #[test]
    fn namespaces_and_prefixes_are_checked_like_keys() {
        let m = refused("[[family]]\nnamespace = \"a/b\"\n", 2, 13);
        assert!(m.contains("bad namespace: namespace contains '/'"), "{m}");
        let m = refused("[[family]]\nnamespace = \"a\"\nprefix = \"x\\u0001\"\n", 3, 10);
        assert!(m.contains("bad prefix: prefix contains control character U+0001"), "{m}");
        let long = "n".repeat(300);
        let m = refused(&format!("[[family]]\nnamespace = \"{long}\"\n"), 2, 13);
        assert!(m.contains("bytes, the limit is"), "{m}");
        let m = refused("[[family]]\nnamespace = \"a\"\nprefix = \"\u{200B}\"\n", 3, 10);
        assert!(m.contains("bad prefix"), "{m}");
    }

    #[test]
    fn a_family_given_twice_is_refused_at_the_second() {
        let text = "[[family]]\nnamespace = \"a\"\nprefix = \"p\"\n\n[[family]]\nnamespace = \"b\"\n\n\
                    [[family]]\nnamespace = \"a\"\nprefix = \"p\"\npolicy = \"immediate\"\n";
        let m = refused(text, 8, 1);
        assert!(m.contains("family namespace \"a\", prefix \"p\" is given twice (first at line 1)"), "{m}");
        // The same prefix in another namespace, or another prefix, is another family.
        parse("[[family]]\nnamespace = \"a\"\n[[family]]\nnamespace = \"a\"\nprefix = \"x\"\n").unwrap();
    }

    #[test]
    fn columns_count_characters_and_a_missing_file_names_its_path() {
        assert_eq!(line_column("ab\ncdé\nf", 0), (1, 1));
        assert_eq!(line_column("ab\ncdé\nf", 3), (2, 1));
        assert_eq!(line_column("ab\ncdé\nf", 8), (3, 1));
        assert_eq!(line_column("ab\ncdé\nf", 7), (2, 4), "é is one column");
        let dir = std::env::temp_dir().join("counters-no-such-dir-for-config-test");
        let path = dir.join("missing.toml");
        let e = ConfigFile::load(&path).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Config);
        assert!(e.message().contains(&format!("cannot read the configuration file {}", path.display())), "{e}");
    }
}
