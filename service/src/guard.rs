//! Who may reach the service from a browser.
//!
//! - **Host**: every request must name the service: its listen address
//!   (`IP:port`; any IP literal with the port when listening on `0.0.0.0` or
//!   `[::]`), `localhost:port` on a loopback or unspecified address, or a
//!   configured name (`--allowed-host NAME` matches `NAME` on any port,
//!   `NAME:PORT` only that port). Anything else is 421 `unknown_host`: a web
//!   page that re-points its own DNS name at 127.0.0.1 (DNS rebinding) sends
//!   its own name and is refused. An absolute-form request target is checked
//!   the same way; an HTTP/1.1 request without `Host`, or with two, is 400.
//! - **Origin**: a request other than `GET`/`HEAD` that carries an `Origin`
//!   must come from one of those same hosts (`http` or `https`); any other,
//!   and `Origin: null`, is 403 `cross_origin`. Browsers send `Origin` on
//!   every such request, so a page elsewhere cannot write, whatever its
//!   `mode` or content type. Clients that are not browsers send none.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method, Version, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use counters::{Error, ErrorKind, Result};

use crate::errors::ApiError;

/// A configured host name: `name` (any port) or `name:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AllowedHost {
    name: String,
    port: Option<u16>,
}

impl AllowedHost {
    /// Parses `--allowed-host` text: a DNS name or IP literal, optionally
    /// with `:port` (`[v6]:port` for IPv6). Case-insensitive.
    pub(crate) fn parse(text: &str) -> Result<AllowedHost> {
        let bad = |why: &str| {
            Error::new(ErrorKind::Config, format!("--allowed-host {text:?} is not a host name or host:port: {why}"))
        };
        let (name, port) = split_authority(text).ok_or_else(|| bad("give NAME or NAME:PORT, no scheme or path"))?;
        let valid_name = name.parse::<IpAddr>().is_ok()
            || (!name.is_empty()
                && name.len() <= 253
                && name.split('.').all(|label| {
                    !label.is_empty()
                        && label.len() <= 63
                        && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                }));
        if !valid_name {
            return Err(bad("a name is dot-separated letters, digits, '-' and '_'"));
        }
        Ok(AllowedHost { name: name.to_ascii_lowercase(), port })
    }
}

/// The hosts and origins a service answers to.
#[derive(Debug, Clone)]
pub(crate) struct Guard {
    listen: SocketAddr,
    names: Vec<AllowedHost>,
}

impl Guard {
    /// The rules for a service listening on `listen` that also answers to
    /// `names`.
    pub(crate) fn new(listen: SocketAddr, names: Vec<AllowedHost>) -> Guard {
        Guard { listen, names }
    }

    /// Whether `authority` (`host`, `host:port`, `[v6]:port`) names the
    /// service; `default_port` is the scheme's when none is given.
    fn allows(&self, authority: &str, default_port: u16) -> bool {
        let Some((host, port)) = split_authority(authority) else {
            return false;
        };
        let port = port.unwrap_or(default_port);
        let host = host.to_ascii_lowercase();
        let named = self.names.iter().any(|n| n.name == host && n.port.is_none_or(|p| p == port));
        if named {
            return true;
        }
        if port != self.listen.port() {
            return false;
        }
        let ip = self.listen.ip();
        match host.parse::<IpAddr>() {
            Ok(given) => ip.is_unspecified() || given == ip,
            Err(_) => host == "localhost" && (ip.is_loopback() || ip.is_unspecified()),
        }
    }

    /// Checks a request's `Host` (and absolute-form target) and, for a
    /// request that may write, its `Origin`.
    fn check(&self, parts: &Parts) -> std::result::Result<(), ApiError> {
        let mut hosts = parts.headers.get_all(header::HOST).iter();
        let host = hosts.next();
        if hosts.next().is_some() {
            return Err(ApiError::bad_field("host", "the request has more than one Host header"));
        }
        if host.is_none() && parts.uri.authority().is_none() && parts.version >= Version::HTTP_11 {
            return Err(ApiError::bad_field("host", "an HTTP/1.1 request needs a Host header"));
        }
        for authority in host.map(shown).into_iter().chain(parts.uri.authority().map(|a| a.as_str().to_string())) {
            if !self.allows(&authority, 80) {
                return Err(ApiError::unknown_host(&authority));
            }
        }
        if parts.method == Method::GET || parts.method == Method::HEAD {
            return Ok(());
        }
        for origin in parts.headers.get_all(header::ORIGIN) {
            if !self.allows_origin(origin) {
                return Err(ApiError::cross_origin(&shown(origin)));
            }
        }
        Ok(())
    }

    /// Whether an `Origin` (`scheme://authority`) is one of the service's.
    fn allows_origin(&self, origin: &HeaderValue) -> bool {
        let Ok(text) = origin.to_str() else {
            return false;
        };
        let (authority, default_port) = match (text.strip_prefix("http://"), text.strip_prefix("https://")) {
            (Some(a), _) => (a, 80),
            (_, Some(a)) => (a, 443),
            _ => return false, // `null`, or another scheme
        };
        !authority.contains(['/', '@', '?', '#']) && self.allows(authority, default_port)
    }
}

/// A header value as text for a message (lossy, at most 100 characters).
fn shown(value: &HeaderValue) -> String {
    String::from_utf8_lossy(value.as_bytes()).chars().take(100).collect()
}

/// Splits `host[:port]` / `[v6][:port]`; `None` when it is not that shape.
fn split_authority(text: &str) -> Option<(&str, Option<u16>)> {
    if text.is_empty() || text.contains(['/', '@', '?', '#', ' ']) || text.contains("://") {
        return None;
    }
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (v6, after) = rest.split_once(']')?;
        v6.parse::<std::net::Ipv6Addr>().ok()?;
        match after {
            "" => (v6, None),
            _ => (v6, Some(after.strip_prefix(':')?)),
        }
    } else {
        match text.rsplit_once(':') {
            Some((host, port)) if !host.contains(':') => (host, Some(port)),
            Some(_) => return None, // a bare IPv6 address needs brackets
            None => (text, None),
        }
    };
    let port = match port {
        None => None,
        Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => Some(p.parse().ok()?),
        Some(_) => return None,
    };
    (!host.is_empty()).then_some((host, port))
}

/// Middleware: refuses requests the [`Guard`] does not allow.
pub(crate) async fn check(State(guard): State<Arc<Guard>>, request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    if let Err(e) = guard.check(&parts) {
        return e.into_response();
    }
    next.run(Request::from_parts(parts, body)).await
}

/// Middleware: every answer says `X-Content-Type-Options: nosniff`, and
/// `Cache-Control: no-store` unless it set its own (the admin page's files).
pub(crate) async fn harden(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(listen: &str, names: &[&str]) -> Guard {
        Guard::new(listen.parse().unwrap(), names.iter().map(|n| AllowedHost::parse(n).unwrap()).collect())
    }

    #[test]
    fn hosts_by_listen_address_localhost_and_names() {
        let g = guard("127.0.0.1:8080", &["counters.test", "Other.Test:9000"]);
        for ok in [
            "127.0.0.1:8080",
            "localhost:8080",
            "LOCALHOST:8080",
            "counters.test",
            "counters.test:1",
            "other.test:9000",
        ] {
            assert!(g.allows(ok, 80), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:8080",
            "127.0.0.1:8081",
            "127.0.0.2:8080",
            "127.0.0.1",
            "localhost",
            "other.test:9001",
            "other.test",
            "[::1]:8080",
            "127.0.0.1:8080:1",
            "a@127.0.0.1:8080",
            "",
        ] {
            assert!(!g.allows(bad, 80), "{bad}");
        }
        let any = guard("0.0.0.0:8080", &[]);
        assert!(any.allows("192.168.1.5:8080", 80) && any.allows("localhost:8080", 80));
        assert!(!any.allows("evil.example:8080", 80) && !any.allows("192.168.1.5:80", 80));
        let v6 = guard("[::1]:8080", &[]);
        assert!(v6.allows("[::1]:8080", 80) && v6.allows("localhost:8080", 80) && !v6.allows("[::2]:8080", 80));
        let port80 = guard("127.0.0.1:80", &[]);
        assert!(port80.allows("127.0.0.1", 80) && port80.allows("localhost", 80));
    }

    #[test]
    fn origins_need_a_scheme_and_an_allowed_host() {
        let g = guard("127.0.0.1:8080", &["counters.test"]);
        let allows = |o: &str| g.allows_origin(&HeaderValue::from_str(o).unwrap());
        assert!(allows("http://127.0.0.1:8080") && allows("http://localhost:8080") && allows("https://counters.test"));
        for bad in [
            "null",
            "http://evil.example",
            "http://127.0.0.1:8081",
            "file://",
            "http://127.0.0.1:8080/x",
            "127.0.0.1:8080",
            "ws://127.0.0.1:8080",
        ] {
            assert!(!allows(bad), "{bad}");
        }
    }

    #[test]
    fn allowed_host_text_is_checked() {
        assert_eq!(
            AllowedHost::parse("Counters.Test:81").unwrap(),
            AllowedHost { name: "counters.test".into(), port: Some(81) }
        );
        assert!(AllowedHost::parse("[::1]:80").is_ok() && AllowedHost::parse("10.0.0.1").is_ok());
        for bad in ["", "http://x", "x/y", "x:", "x:port", "x:99999", "a..b", "sp ace", "[::1", "::1"] {
            assert!(AllowedHost::parse(bad).is_err(), "{bad}");
        }
    }
}
