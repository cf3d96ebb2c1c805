//! Bearer tokens: who may read and who may write.
//!
//! - **Writes** (increment, put, delete, flush) need the write token when one
//!   is configured. Without one the service only listens on loopback (see
//!   [`ServiceConfig::validate`](crate::ServiceConfig::validate)), so writes
//!   are open to local processes only.
//! - **Reads** (values, listings, series, status, `/metrics`) are open on a
//!   loopback address; they need a token when a read token is configured, or
//!   on a non-loopback address unless `public_reads` is set. The write token
//!   is accepted wherever the read token is.
//! - `/healthz`, `/readyz` and the admin page's static files are always open
//!   (they hold no counter data); the page asks for the token and sends it.
//!
//! Tokens are compared in constant time (only their length can leak).
//! A missing or wrong token is 401 with `WWW-Authenticate: Bearer`; the read
//! token on a write route is 403.

use std::sync::Arc;

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use subtle::ConstantTimeEq;

use crate::config::ServiceConfig;
use crate::errors::ApiError;

/// The token rules of a running service.
#[derive(Clone)]
pub struct Access {
    write: Option<Vec<u8>>,
    read: Option<Vec<u8>>,
    reads_need_token: bool,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the tokens themselves.
        f.debug_struct("Access")
            .field("writes_need_token", &self.write.is_some())
            .field("reads_need_token", &self.reads_need_token)
            .finish()
    }
}

/// What a presented token grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Grant {
    None,
    Read,
    Write,
}

impl Access {
    /// The rules `config` asks for.
    pub fn from_config(config: &ServiceConfig) -> Self {
        Access {
            write: config.token.as_ref().map(|t| t.as_bytes().to_vec()),
            read: config.read_token.as_ref().map(|t| t.as_bytes().to_vec()),
            reads_need_token: config.reads_need_token(),
        }
    }

    /// Whether writes need a token.
    pub fn writes_need_token(&self) -> bool {
        self.write.is_some()
    }

    /// Whether reads need a token.
    pub fn reads_need_token(&self) -> bool {
        self.reads_need_token
    }

    fn grant(&self, presented: &[u8]) -> Grant {
        // Compare against both tokens every time, so timing does not tell
        // which one (if any) matched.
        let write = self.write.as_deref().is_some_and(|t| bool::from(t.ct_eq(presented)));
        let read = self.read.as_deref().is_some_and(|t| bool::from(t.ct_eq(presented)));
        if write {
            Grant::Write
        } else if read {
            Grant::Read
        } else {
            Grant::None
        }
    }

    /// Checks a request's `Authorization` header for a write.
    pub fn check_write(&self, parts: &Parts) -> Result<(), ApiError> {
        if self.write.is_none() {
            return Ok(());
        }
        match bearer(parts)? {
            None => Err(unauthorized("writes need a bearer token (Authorization: Bearer TOKEN)")),
            Some(token) => match self.grant(token) {
                Grant::Write => Ok(()),
                Grant::Read => Err(forbidden()),
                Grant::None => Err(invalid_token()),
            },
        }
    }

    /// Checks a request's `Authorization` header for a read.
    pub fn check_read(&self, parts: &Parts) -> Result<(), ApiError> {
        if !self.reads_need_token {
            return Ok(());
        }
        match bearer(parts)? {
            None => Err(unauthorized("reads need a bearer token (Authorization: Bearer TOKEN)")),
            Some(token) => match self.grant(token) {
                Grant::Write | Grant::Read => Ok(()),
                Grant::None => Err(invalid_token()),
            },
        }
    }
}

/// The bearer token of a request, if it sent one.
fn bearer(parts: &Parts) -> Result<Option<&[u8]>, ApiError> {
    let Some(value) = parts.headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value.as_bytes();
    let scheme = b"bearer ";
    if value.len() <= scheme.len() || !value[..scheme.len()].eq_ignore_ascii_case(scheme) {
        return Err(unauthorized("the Authorization header must be `Bearer TOKEN`"));
    }
    Ok(Some(value[scheme.len()..].trim_ascii()))
}

fn unauthorized(message: &str) -> ApiError {
    let mut e = ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message).with_field("authorization");
    e.authenticate = Some("Bearer realm=\"counters\"");
    e
}

fn invalid_token() -> ApiError {
    let mut e = ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "the bearer token is not valid")
        .with_field("authorization");
    e.authenticate = Some("Bearer realm=\"counters\", error=\"invalid_token\"");
    e
}

fn forbidden() -> ApiError {
    let mut e = ApiError::new(StatusCode::FORBIDDEN, "forbidden", "the read token cannot write; use the write token")
        .with_field("authorization");
    e.authenticate = Some("Bearer realm=\"counters\", error=\"insufficient_scope\"");
    e
}

/// Extractor: the request may write. Put it first in a handler's arguments.
#[derive(Debug, Clone, Copy)]
pub struct CanWrite;

/// Extractor: the request may read. Put it first in a handler's arguments.
#[derive(Debug, Clone, Copy)]
pub struct CanRead;

impl<S: Send + Sync> FromRequestParts<S> for CanWrite
where
    Arc<Access>: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Arc::<Access>::from_ref(state).check_write(parts).map(|()| CanWrite)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for CanRead
where
    Arc<Access>: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Arc::<Access>::from_ref(state).check_read(parts).map(|()| CanRead)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Request;

    fn parts(auth: Option<&str>) -> Parts {
        let mut b = Request::builder().uri("/");
        if let Some(a) = auth {
            b = b.header(header::AUTHORIZATION, a);
        }
        b.body(()).unwrap().into_parts().0
    }

    fn access(token: Option<&str>, read: Option<&str>, listen: &str) -> Access {
        let config = ServiceConfig {
            token: token.map(str::to_string),
            read_token: read.map(str::to_string),
            listen: listen.parse().unwrap(),
            ..ServiceConfig::default()
        };
        Access::from_config(&config)
    }

    #[test]
    fn write_and_read_tokens() {
        let a = access(Some("w-token"), Some("r-token"), "127.0.0.1:1");
        assert!(a.check_write(&parts(Some("Bearer w-token"))).is_ok());
        assert!(a.check_write(&parts(Some("bearer   w-token "))).is_ok(), "scheme is case-insensitive");
        assert_eq!(a.check_write(&parts(None)).unwrap_err().status, 401);
        assert_eq!(a.check_write(&parts(Some("Bearer nope"))).unwrap_err().status, 401);
        assert_eq!(a.check_write(&parts(Some("Basic dzp0"))).unwrap_err().status, 401);
        assert_eq!(a.check_write(&parts(Some("Bearer w-tokenX"))).unwrap_err().status, 401);
        assert_eq!(a.check_write(&parts(Some("Bearer r-token"))).unwrap_err().status, 403);
        assert!(a.check_read(&parts(Some("Bearer r-token"))).is_ok());
        assert!(a.check_read(&parts(Some("Bearer w-token"))).is_ok());
        assert_eq!(a.check_read(&parts(None)).unwrap_err().status, 401);
        assert_eq!(a.check_read(&parts(Some("Bearer x"))).unwrap_err().status, 401);
    }

    #[test]
    fn loopback_without_tokens_is_open_and_public_reads_need_the_write_token() {
        let open = access(None, None, "127.0.0.1:1");
        assert!(open.check_write(&parts(None)).is_ok());
        assert!(open.check_read(&parts(None)).is_ok());
        let public = access(Some("w"), None, "0.0.0.0:1");
        assert_eq!(public.check_read(&parts(None)).unwrap_err().status, 401);
        assert!(public.check_read(&parts(Some("Bearer w"))).is_ok());
        assert!(!format!("{public:?}").contains("\"w\""), "Debug does not print tokens");
    }
}
