//! What a service is started with: where it listens, its tokens, its limits,
//! the counters' defaults and the families with policies of their own.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

use counters::{DEFAULT_INTERVAL, Error, ErrorKind, Family, Key, Policy, Result, TimeSlices};

/// The default listen address: loopback, port 8080.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8080);
/// The default bound on request bodies, in bytes.
pub const DEFAULT_BODY_LIMIT: usize = 64 * 1024;
/// Most keys one `get_many` request may name.
pub const MAX_KEYS_PER_REQUEST: usize = 1_000;
/// Most counters one listing may return.
pub const MAX_LIST_LIMIT: usize = 10_000;
/// The default bound on receiving a request's head (and on an idle
/// kept-alive connection's wait for the next one).
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// The default bound on receiving a request's body.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// The default bound on a write to a client that reads nothing.
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// The default bound on open connections.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;

/// Settings of a service.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// Where to listen. Default `127.0.0.1:8080`. A non-loopback address
    /// needs a write [`token`](Self::token).
    pub listen: SocketAddr,
    /// Bearer token for writes (increment, put, delete, flush). Required on
    /// a non-loopback address; when set, it also grants reads.
    pub token: Option<String>,
    /// Bearer token for reads only. When set, every read needs it (or the
    /// write token).
    pub read_token: Option<String>,
    /// Leave reads open without a token even on a non-loopback address
    /// (without a read token, reads there need the write token otherwise).
    pub public_reads: bool,
    /// Host names (`name` or `name:port`) the service answers to besides its
    /// listen address (and `localhost` on loopback): a request whose `Host`
    /// is none of them is 421, and a write whose `Origin` is none of them is
    /// 403. Add the names clients and proxies use to reach it.
    pub allowed_hosts: Vec<String>,
    /// Most bytes of a request body.
    pub body_limit: usize,
    /// How long a client may take to send a request's head (and an idle
    /// kept-alive connection may wait before its next request); the
    /// connection is closed beyond it.
    pub header_timeout: Duration,
    /// How long a client may take to send a request's body (408 beyond it).
    pub body_timeout: Duration,
    /// How long a write of an answer may make no progress (the client reads
    /// nothing) before the connection is closed.
    pub write_timeout: Duration,
    /// Most connections served at once; more wait in the listen backlog
    /// until one closes.
    pub max_connections: usize,
    /// How long `/readyz` waits for the store.
    pub ready_timeout: Duration,
    /// How long shutdown waits for requests in flight before draining anyway.
    pub drain_timeout: Duration,
    /// Write-behind age bound of every counter (the default family's policy).
    pub flush_interval: Duration,
    /// Count every increment into time slices unless the request says otherwise.
    pub time_sliced: bool,
    /// Time-slice precisions and retention.
    pub time_slices: TimeSlices,
    /// Most cells pending before increments get backpressure (503).
    pub max_pending: u64,
    /// The spill journal: where shutdown writes what the store did not take
    /// (see `CountersBuilder::spill_journal`). None: no journal.
    pub spill_journal: Option<std::path::PathBuf>,
    /// Families of counters (a namespace, or the names of a namespace that
    /// start with a prefix) with a policy of their own; every other counter
    /// is in the default family ([`flush_interval`](Self::flush_interval),
    /// [`time_sliced`](Self::time_sliced)). The longest matching prefix wins.
    pub families: Vec<FamilyConfig>,
}

/// When the counters of a [`FamilyConfig`] are written to the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FamilyPolicy {
    /// Write-through: the store is updated before the increment answers.
    Immediate,
    /// Write-behind: at the latest after `interval` (the service's flush
    /// interval when `None`), or as soon as a counter's pending delta
    /// reaches `threshold` in magnitude.
    Batched {
        /// The age bound; `None`: the service's flush interval.
        interval: Option<Duration>,
        /// The batch-size bound, if any.
        threshold: Option<u64>,
    },
}

/// The settings of one family: the counters of `namespace` whose names start
/// with `prefix` (every name when empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FamilyConfig {
    /// The namespace (empty: the default namespace).
    pub namespace: String,
    /// The name prefix (empty: the whole namespace).
    pub prefix: String,
    /// The write-behind policy.
    pub policy: FamilyPolicy,
    /// Count increments into time slices; `None`: as the service does
    /// ([`ServiceConfig::time_sliced`]). A request's own `sliced` field
    /// wins over both.
    pub time_sliced: Option<bool>,
    /// Also count increments into the key's ancestors (`a:b:c` into `a:b`
    /// and `a`).
    pub rollup: bool,
}

impl FamilyConfig {
    /// The family of a service whose default family flushes every
    /// `flush_interval` and counts into time slices when `time_sliced`.
    /// Fails on a zero interval or threshold.
    pub fn family(&self, flush_interval: Duration, time_sliced: bool) -> Result<Family> {
        let policy = match self.policy {
            FamilyPolicy::Immediate => Policy::immediate(),
            FamilyPolicy::Batched { interval, threshold } => {
                let policy = Policy::interval(interval.unwrap_or(flush_interval))?;
                match threshold {
                    Some(t) => policy.with_threshold(t)?,
                    None => policy,
                }
            }
        };
        let family = Family { policy, time_sliced: self.time_sliced.unwrap_or(time_sliced), rollup: self.rollup };
        Ok(family)
    }

    /// Checks the namespace and prefix by the rules of keys, and that an
    /// interval and a threshold are above zero. The message names the
    /// family.
    pub fn validate(&self) -> Result<()> {
        let fail = |message: String| Error::new(ErrorKind::Config, format!("{self}: {message}"));
        Key::validate_namespace(&self.namespace).map_err(|e| fail(format!("bad namespace: {}", e.message())))?;
        Key::validate_prefix(&self.prefix).map_err(|e| fail(format!("bad prefix: {}", e.message())))?;
        if let FamilyPolicy::Batched { interval, threshold } = self.policy {
            if interval.is_some_and(|i| i.is_zero()) {
                return Err(fail(
                    "the interval must be above zero (for write-through, use the immediate policy)".into(),
                ));
            }
            if threshold == Some(0) {
                return Err(fail("the threshold must be at least 1".into()));
            }
        }
        Ok(())
    }
}

impl std::fmt::Display for FamilyConfig {
    /// `family namespace "clicks", prefix "ad:"`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "family namespace {:?}, prefix {:?}", self.namespace, self.prefix)
    }
}

/// `HOST:PORT`, with a host name resolved (`localhost:8080`): the listen
/// address as `counters serve --listen` and the configuration file take it.
pub fn parse_listen(text: &str) -> std::result::Result<SocketAddr, String> {
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    text.to_socket_addrs()
        .map_err(|e| format!("{text:?} is not HOST:PORT: {e}"))?
        .next()
        .ok_or_else(|| format!("{text:?} resolves to no address"))
}

/// A duration above zero: a number of seconds (`10`, `0.5`), or a number
/// with a unit, `ms`, `s`, `m` or `h` (`250ms`, `2s`, `1.5m`, `1h`): the
/// durations of `counters serve`'s options and of the configuration file.
pub fn parse_duration(text: &str) -> std::result::Result<Duration, String> {
    let bad = || format!("{text:?} is not a duration (seconds, or a number with ms, s, m or h: 250ms, 2s, 5m)");
    let (number, unit_nanos): (&str, u128) = if let Some(n) = text.strip_suffix("ms") {
        (n, 1_000_000)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1_000_000_000)
    } else if let Some(n) = text.strip_suffix('m') {
        (n, 60_000_000_000)
    } else if let Some(n) = text.strip_suffix('h') {
        (n, 3_600_000_000_000)
    } else {
        (text, 1_000_000_000)
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if (whole.is_empty() && fraction.is_empty()) || !digits(whole) || !digits(fraction) {
        return Err(bad());
    }
    // Exact decimal arithmetic: `0.1s` is 100 ms, not the nearest double.
    let too_long = || format!("{text:?} is too long a duration");
    let mut nanos: u128 = if whole.is_empty() { 0 } else { whole.parse::<u128>().map_err(|_| too_long())? };
    nanos = nanos.checked_mul(unit_nanos).ok_or_else(too_long)?;
    let mut scale = unit_nanos;
    for digit in fraction.bytes() {
        scale /= 10;
        nanos += u128::from(digit - b'0') * scale;
    }
    if nanos == 0 {
        return Err(format!("{text:?} must be above zero"));
    }
    let secs = u64::try_from(nanos / 1_000_000_000).map_err(|_| too_long())?;
    Ok(Duration::new(secs, (nanos % 1_000_000_000) as u32))
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            listen: DEFAULT_LISTEN,
            token: None,
            read_token: None,
            public_reads: false,
            allowed_hosts: Vec::new(),
            body_limit: DEFAULT_BODY_LIMIT,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            write_timeout: DEFAULT_WRITE_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            ready_timeout: Duration::from_secs(2),
            drain_timeout: Duration::from_secs(10),
            flush_interval: DEFAULT_INTERVAL,
            time_sliced: false,
            time_slices: TimeSlices::default(),
            max_pending: 1_000_000,
            spill_journal: None,
            families: Vec::new(),
        }
    }
}

impl ServiceConfig {
    /// Checks the settings: tokens are non-empty visible ASCII without
    /// spaces, a read token comes with a write token, a non-loopback address
    /// has a write token, the allowed hosts are host names (or `name:port`),
    /// limits and timeouts are above zero, every family is valid
    /// ([`FamilyConfig::validate`]) and no two name the same namespace and
    /// prefix.
    pub fn validate(&self) -> Result<()> {
        for (name, env, token) in
            [("--token", "COUNTERS_TOKEN", &self.token), ("--read-token", "COUNTERS_READ_TOKEN", &self.read_token)]
        {
            match token {
                Some(t) if t.is_empty() => {
                    return Err(Error::new(
                        ErrorKind::Config,
                        format!(
                            "{name} (or {env}) is empty: an empty token would leave the service without one; \
                             give a token, or unset {env} and leave out {name}"
                        ),
                    ));
                }
                Some(t) if !t.bytes().all(|b| b.is_ascii_graphic()) => {
                    return Err(Error::new(
                        ErrorKind::Config,
                        format!("{name} must be non-empty visible ASCII without spaces"),
                    ));
                }
                _ => {}
            }
        }
        if self.read_token.is_some() && self.token.is_none() {
            return Err(Error::new(
                ErrorKind::Config,
                "--read-token without --token would leave writes open to anyone who can connect while reads \
                 need a token (a write answers the new value, so it reads too); set --token (COUNTERS_TOKEN) as well",
            ));
        }
        if let (Some(w), Some(r)) = (&self.token, &self.read_token) {
            if w == r {
                return Err(Error::new(ErrorKind::Config, "--read-token must differ from --token"));
            }
        }
        if !self.listen.ip().is_loopback() && self.token.is_none() {
            return Err(Error::new(
                ErrorKind::Config,
                format!(
                    "refusing to listen on {} without a token: a non-loopback address needs --token \
                     (or COUNTERS_TOKEN) so that not everyone on the network can write",
                    self.listen
                ),
            ));
        }
        for host in &self.allowed_hosts {
            crate::guard::AllowedHost::parse(host)?;
        }
        if self.header_timeout.is_zero() || self.body_timeout.is_zero() || self.write_timeout.is_zero() {
            return Err(Error::new(ErrorKind::Config, "the header, body and write timeouts must be above zero"));
        }
        if self.max_connections == 0 {
            return Err(Error::new(ErrorKind::Config, "the connection limit must be at least 1"));
        }
        if self.body_limit == 0 {
            return Err(Error::new(ErrorKind::Config, "the body limit must be at least 1 byte"));
        }
        if self.max_pending == 0 {
            return Err(Error::new(ErrorKind::Config, "the pending bound must be at least 1"));
        }
        if self.flush_interval.is_zero() {
            return Err(Error::new(ErrorKind::Config, "the flush interval must be above zero"));
        }
        for (i, family) in self.families.iter().enumerate() {
            family.validate()?;
            if self.families[..i].iter().any(|f| f.namespace == family.namespace && f.prefix == family.prefix) {
                return Err(Error::new(ErrorKind::Config, format!("{family} is given twice")));
            }
        }
        Ok(())
    }

    /// Whether reads need a token, by the rules in the crate docs.
    pub fn reads_need_token(&self) -> bool {
        if self.read_token.is_some() {
            return true;
        }
        !(self.public_reads || self.listen.ip().is_loopback())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_public_address_needs_a_token() {
        let mut c = ServiceConfig { listen: "0.0.0.0:8080".parse().unwrap(), ..ServiceConfig::default() };
        let e = c.validate().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Config);
        assert!(e.to_string().contains("refusing to listen on 0.0.0.0:8080"), "{e}");
        c.token = Some("s3cret-token".into());
        c.validate().unwrap();
        assert!(c.reads_need_token(), "reads on a public address need a token by default");
        c.public_reads = true;
        assert!(!c.reads_need_token());
        c.read_token = Some("reader".into());
        assert!(c.reads_need_token(), "a read token always closes reads");
    }

    #[test]
    fn loopback_is_open_by_default_and_tokens_are_checked() {
        let mut c = ServiceConfig::default();
        c.validate().unwrap();
        assert!(!c.reads_need_token());
        for bad in ["", "has space", "tab\t", "ünïcode"] {
            c.token = Some(bad.into());
            assert_eq!(c.validate().unwrap_err().kind(), ErrorKind::Config, "{bad:?}");
        }
        c.token = Some("same".into());
        c.read_token = Some("same".into());
        assert!(c.validate().is_err());
        c.token = None;
        c.read_token = Some("reader".into());
        let e = c.validate().unwrap_err();
        assert!(e.to_string().contains("--read-token without --token would leave writes open"), "{e}");
        c.read_token = Some(String::new());
        assert!(c.validate().unwrap_err().to_string().contains("COUNTERS_READ_TOKEN) is empty"));
        c.read_token = None;
        c.allowed_hosts = vec!["http://x".into()];
        assert_eq!(c.validate().unwrap_err().kind(), ErrorKind::Config);
        c.allowed_hosts = vec!["counters.test:8080".into()];
        c.validate().unwrap();
        let v6 = ServiceConfig { listen: "[::1]:0".parse().unwrap(), ..ServiceConfig::default() };
        v6.validate().unwrap();
    }

    #[test]
    fn durations_are_seconds_or_numbers_with_a_unit() {
        let ok = |text: &str| parse_duration(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(ok("10"), Duration::from_secs(10));
        assert_eq!(ok("0.5"), Duration::from_millis(500));
        assert_eq!(ok("250ms"), Duration::from_millis(250));
        assert_eq!(ok("0.1s"), Duration::from_millis(100), "exact, not the nearest double");
        assert_eq!(ok("2s"), Duration::from_secs(2));
        assert_eq!(ok("1.5m"), Duration::from_secs(90));
        assert_eq!(ok("1h"), Duration::from_secs(3600));
        assert_eq!(ok(".5s"), Duration::from_millis(500));
        assert_eq!(ok("1.0000000019s"), Duration::new(1, 1), "below a nanosecond is cut");
        for bad in ["", "s", ".", "ms", "1 s", " 1s", "-1s", "+1", "1e3", "inf", "NaN", "1d", "1.2.3s", "1sec"] {
            let e = parse_duration(bad).unwrap_err();
            assert!(e.contains("is not a duration"), "{bad:?}: {e}");
        }
        for zero in ["0", "0s", "0.0ms", "0.0000000001s"] {
            assert!(parse_duration(zero).unwrap_err().contains("must be above zero"), "{zero:?}");
        }
        assert!(parse_duration("99999999999999999999999h").unwrap_err().contains("too long"));
        assert!(parse_duration(&format!("{}s", u64::MAX as u128 + 1)).unwrap_err().contains("too long"));
    }

    #[test]
    fn families_are_validated_and_duplicates_refused() {
        let family = |namespace: &str, prefix: &str, policy| FamilyConfig {
            namespace: namespace.into(),
            prefix: prefix.into(),
            policy,
            time_sliced: None,
            rollup: false,
        };
        let batched = |interval, threshold| FamilyPolicy::Batched { interval, threshold };
        let mut c = ServiceConfig {
            families: vec![family("a", "", FamilyPolicy::Immediate), family("a", "x", batched(None, Some(3)))],
            ..ServiceConfig::default()
        };
        c.validate().unwrap();
        c.families.push(family("a", "", batched(None, None)));
        let e = c.validate().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Config);
        assert!(e.to_string().contains(r#"family namespace "a", prefix "" is given twice"#), "{e}");
        c.families = vec![FamilyConfig { time_sliced: Some(false), ..family("a", "", FamilyPolicy::Immediate) }];
        c.validate().unwrap();
        c.time_sliced = true;
        c.validate().unwrap();
        c.families[0].time_sliced = Some(true);
        c.validate().unwrap();
        for (bad, message) in [
            (family("a/b", "", FamilyPolicy::Immediate), "bad namespace"),
            (family("a", "\u{7}", FamilyPolicy::Immediate), "bad prefix"),
            (family("a", "", batched(Some(Duration::ZERO), None)), "the interval must be above zero"),
            (family("a", "", batched(None, Some(0))), "the threshold must be at least 1"),
        ] {
            c.families = vec![bad];
            let e = c.validate().unwrap_err();
            assert!(e.to_string().contains(message), "{e}");
        }
    }
}
