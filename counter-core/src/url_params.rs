//! The query parameters of a backend URL (`?prefix=app:&connect_timeout=2s`):
//! decoded once, each taken by name with its type, and anything left over
//! refused, so that a misspelt option is an error instead of a default.

use std::str::FromStr;
use std::time::Duration;

use crate::error::{Error, ErrorKind, Result};
use crate::redact::redact_url;

/// The query parameters of one backend URL.
///
/// Values are percent-decoded (`%26` for `&`; a `+` stays a `+`); a
/// malformed escape or one that is not UTF-8 is refused. A parameter given
/// twice is refused by [`parse`](Self::parse);
/// one nobody took is refused by [`finish`](Self::finish), which names the
/// parameters the backend knows.
///
/// ```
/// use std::time::Duration;
/// use counter_core::UrlParams;
///
/// let mut params = UrlParams::parse("Redis", "redis://h:1?prefix=a%26b&connect_timeout=250ms")?;
/// assert_eq!(params.text("prefix"), Some("a&b".to_string()));
/// assert_eq!(params.duration("connect_timeout")?, Some(Duration::from_millis(250)));
/// params.finish()?;
///
/// let mut params = UrlParams::parse("Redis", "redis://h:1?colour=red")?;
/// let _ = params.text("prefix");
/// assert!(params.finish().unwrap_err().to_string().contains("unknown parameter \"colour\" (known: prefix)"));
/// # Ok::<(), counter_core::Error>(())
/// ```
#[derive(Debug)]
pub struct UrlParams {
    backend: &'static str,
    url: String,
    given: Vec<(String, String)>,
    known: Vec<&'static str>,
}

impl UrlParams {
    /// The parameters of `url` (everything after its first `?`), for error
    /// messages about a `backend` ("Redis", "memcached"). A fragment
    /// (`#...`) means nothing to a backend and is refused.
    pub fn parse(backend: &'static str, url: &str) -> Result<UrlParams> {
        let query = url.split_once('?').map_or("", |(_, q)| q);
        let mut params = UrlParams { backend, url: redact_url(url), given: Vec::new(), known: Vec::new() };
        if url.contains('#') {
            return Err(
                params.error("a fragment (#...) means nothing to a backend; percent-encode a '#' in a value as %23")
            );
        }
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let decode =
                |text: &str| percent_decode(text).ok_or_else(|| params.error(&format!("bad %-escape in {pair:?}")));
            let (name, value) = (decode(name)?, decode(value)?);
            if params.given.iter().any(|(n, _)| *n == name) {
                return Err(params.error(&format!("parameter {name:?} is given more than once")));
            }
            params.given.push((name, value));
        }
        Ok(params)
    }

    /// A [`Config`](ErrorKind::Config) error about this URL.
    pub fn error(&self, why: &str) -> Error {
        Error::new(ErrorKind::Config, format!("bad {} URL {:?}: {why}", self.backend, self.url))
    }

    /// Takes the parameter `name` as text, if given.
    pub fn text(&mut self, name: &'static str) -> Option<String> {
        self.known.push(name);
        let at = self.given.iter().position(|(n, _)| n == name)?;
        Some(self.given.remove(at).1)
    }

    /// Takes the parameter `name` as a number (or anything `FromStr`),
    /// described as `what` when it does not parse.
    pub fn number<T: FromStr>(&mut self, name: &'static str, what: &str) -> Result<Option<T>> {
        match self.text(name) {
            None => Ok(None),
            Some(v) => v.parse().map(Some).map_err(|_| self.error(&format!("{name} must be {what}, not {v:?}"))),
        }
    }

    /// Takes the parameter `name` as a duration above zero: a number with
    /// a unit, `ms`, `s` or `m` (`250ms`, `2s`, `1m`).
    pub fn duration(&mut self, name: &'static str) -> Result<Option<Duration>> {
        match self.text(name) {
            None => Ok(None),
            Some(v) => match parse_duration(&v) {
                Some(d) if !d.is_zero() => Ok(Some(d)),
                _ => {
                    Err(self.error(&format!("{name} must be a duration above zero such as 250ms, 2s or 1m, not {v:?}")))
                }
            },
        }
    }

    /// Takes the parameter `name` as `true` or `false`.
    pub fn flag(&mut self, name: &'static str) -> Result<Option<bool>> {
        self.number(name, "true or false")
    }

    /// Refuses the parameters nobody took, naming those that were asked for.
    pub fn finish(self) -> Result<()> {
        match self.given.first() {
            None => Ok(()),
            Some((name, _)) => {
                let known = if self.known.is_empty() { "none".to_string() } else { self.known.join(", ") };
                Err(self.error(&format!("unknown parameter {name:?} (known: {known})")))
            }
        }
    }
}

/// Decodes `%XX` escapes; `None` if an escape or the result (UTF-8) is
/// malformed.
fn percent_decode(text: &str) -> Option<String> {
    let mut bytes = Vec::with_capacity(text.len());
    let mut rest = text.as_bytes();
    while let Some((&byte, tail)) = rest.split_first() {
        if byte == b'%' {
            let hex = std::str::from_utf8(tail.get(..2)?).ok()?;
            bytes.push(u8::from_str_radix(hex, 16).ok()?);
            rest = &tail[2..];
        } else {
            bytes.push(byte);
            rest = tail;
        }
    }
    String::from_utf8(bytes).ok()
}

/// `250ms`, `2s`, `1m` as a duration; `None` for anything else.
fn parse_duration(text: &str) -> Option<Duration> {
    let digits = text.find(|c: char| !c.is_ascii_digit()).filter(|&i| i > 0)?;
    let (number, unit) = text.split_at(digits);
    let number: u64 = number.parse().ok()?;
    match unit {
        "ms" => Some(Duration::from_millis(number)),
        "s" => Some(Duration::from_secs(number)),
        "m" => Some(Duration::from_secs(number.checked_mul(60)?)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_taken_by_name_and_type() {
        let mut p = UrlParams::parse("X", "x://h?a=1&b=2s&c=true&d=%2B+x%23").unwrap();
        for bad in ["x://h?p=%zz", "x://h?p=%4", "x://h?p=%FF", "x://h?%zz=1"] {
            let e = UrlParams::parse("X", bad).unwrap_err();
            assert!(e.to_string().contains("bad %-escape"), "{bad}: {e}");
        }
        assert_eq!(p.number::<u16>("a", "a port").unwrap(), Some(1));
        assert_eq!(p.duration("b").unwrap(), Some(Duration::from_secs(2)));
        assert_eq!(p.flag("c").unwrap(), Some(true));
        assert_eq!(p.text("d").as_deref(), Some("++x#"), "a plus stays a plus");
        assert_eq!(p.text("e"), None);
        p.finish().unwrap();
    }

    #[test]
    fn bad_parameters_are_config_errors_naming_the_url_without_secrets() {
        let url = "x://user:hunter2@h?a=1&a=2";
        let e = UrlParams::parse("X", url).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Config);
        assert!(e.to_string().contains("\"a\" is given more than once"), "{e}");
        assert!(!e.to_string().contains("hunter2"), "{e}");
        for (value, what) in [("0s", "above zero"), ("2", "duration"), ("2h", "duration"), ("ms", "duration")] {
            let mut p = UrlParams::parse("X", &format!("x://h?t={value}")).unwrap();
            let e = p.duration("t").unwrap_err();
            assert!(e.to_string().contains(what), "{value}: {e}");
        }
        let e = UrlParams::parse("X", "x://h:1#insecure").unwrap_err();
        assert!(e.to_string().contains("a fragment"), "{e}");
        let mut p = UrlParams::parse("X", "x://h?n=x").unwrap();
        assert!(p.number::<u16>("n", "a number").unwrap_err().to_string().contains("n must be a number, not \"x\""));
        let p = UrlParams::parse("X", "x://h?z=1").unwrap();
        assert!(p.finish().unwrap_err().to_string().contains("unknown parameter \"z\" (known: none)"));
    }

    #[test]
    fn durations_parse_with_their_unit() {
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("3m"), Some(Duration::from_secs(180)));
        assert_eq!(parse_duration("-1s"), None);
        assert_eq!(parse_duration("1.5s"), None);
        assert_eq!(parse_duration(&format!("{}m", u64::MAX)), None);
    }
}
