//! What a service is started with: where it listens, its tokens, its limits
//! and the counters' defaults.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use counters::{DEFAULT_INTERVAL, Error, ErrorKind, Result, TimeSlices};

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
        }
    }
}

impl ServiceConfig {
    /// Checks the settings: tokens are non-empty visible ASCII without
    /// spaces, a read token comes with a write token, a non-loopback address
    /// has a write token, the allowed hosts are host names (or `name:port`),
    /// limits and timeouts are above zero.
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
}
