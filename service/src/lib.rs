//! The counters HTTP service: a small process that runs next to your apps
//! and gives them (and people, through an admin page) real-time counters
//! with exactly-once write-behind, over any cache and store the library
//! supports.
//!
//! - [`Service::new`] builds the `Counters` handle (the store wrapped so
//!   every call is timed into the metrics) and the router;
//!   [`Service::run`] / [`Service::serve`] listen until a shutdown future
//!   completes, then drain the write-behind engine and report what was
//!   flushed.
//! - The JSON API is under `/v1` ([`api`]); `/metrics` is Prometheus text
//!   ([`metrics`]); `/healthz` and `/readyz` are probes ([`health`]);
//!   `/admin` is the admin page ([`admin`]).
//! - Token rules are in [`auth`]; error statuses in [`errors`].
//!
//! ```no_run
//! # async fn demo() -> counters::Result<()> {
//! use counters_service::{Service, ServiceConfig, shutdown_signal};
//!
//! let cache = counters::cache_from_url("memory://").await?;
//! let store = counters::store_from_url("sqlite://counters.sqlite").await?;
//! let service = Service::new(cache, store, ServiceConfig::default())?;
//! let report = service.run(shutdown_signal()).await?; // until SIGINT/SIGTERM
//! println!("flushed {} counters", report.counters);
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

pub mod admin;
pub mod api;
pub mod auth;
mod config;
pub mod config_file;
pub mod errors;
mod guard;
mod head_errors;
pub mod health;
pub mod inspect;
mod json;
mod keys;
pub mod metrics;
mod server;
mod state;
mod timed_store;
mod write_stall;

use std::sync::Arc;

use std::net::SocketAddr;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::Uri;
use axum::middleware;
use counters::{CacheLayer, Counters, DurableStore, Family, Policy, Result};

pub use config::{
    DEFAULT_BODY_LIMIT, DEFAULT_BODY_TIMEOUT, DEFAULT_HEADER_TIMEOUT, DEFAULT_LISTEN, DEFAULT_MAX_CONNECTIONS,
    DEFAULT_WRITE_TIMEOUT, FamilyConfig, FamilyPolicy, MAX_KEYS_PER_REQUEST, MAX_LIST_LIMIT, ServiceConfig,
    parse_duration, parse_listen,
};
pub use config_file::ConfigFile;
pub use errors::ApiError;
pub use server::{listen, shutdown_signal};
pub use state::{AppState, ServiceInfo};
pub use timed_store::TimedStore;

use crate::auth::Access;
use crate::metrics::ServiceMetrics;

/// A counters service: the `Counters` handle, its settings and its routes.
#[derive(Debug)]
pub struct Service {
    state: AppState,
    config: ServiceConfig,
}

impl Service {
    /// Builds the service over `cache` and `store` (opened by URL with
    /// [`counters::cache_from_url`] / [`counters::store_from_url`], or
    /// directly), after checking `config` (a non-loopback address needs a
    /// write token). Starts the background flusher, so it needs a Tokio
    /// runtime.
    pub fn new(cache: Arc<dyn CacheLayer>, store: Arc<dyn DurableStore>, config: ServiceConfig) -> Result<Service> {
        config.validate()?;
        let metrics = Arc::new(ServiceMetrics::new());
        let info = ServiceInfo {
            cache: cache.capabilities().name,
            store: store.capabilities().name,
            precisions: config.time_slices.precisions().iter().map(|p| p.secs()).collect(),
            samples: config.time_slices.samples(),
            body_limit: config.body_limit,
            body_timeout: config.body_timeout,
            ready_timeout: config.ready_timeout,
            time_sliced: config.time_sliced,
            flush_interval: config.flush_interval,
        };
        let timed: Arc<dyn DurableStore> = Arc::new(TimedStore::new(store, metrics.clone()));
        let mut family = Family::new(Policy::interval(config.flush_interval)?);
        family.time_sliced = config.time_sliced;
        let mut builder = Counters::builder(cache, timed)
            .default_family(family)
            .time_slices(config.time_slices.clone())
            .max_pending(config.max_pending);
        for f in &config.families {
            builder = builder.family(&f.namespace, &f.prefix, f.family(config.flush_interval, config.time_sliced)?);
        }
        if let Some(journal) = &config.spill_journal {
            builder = builder.spill_journal(journal);
        }
        let counters = builder.build()?;
        let state = AppState::new(Arc::new(counters), metrics, Access::from_config(&config), info);
        Ok(Service { state, config })
    }

    /// The `Counters` handle the service serves.
    pub fn counters(&self) -> &Arc<Counters> {
        &self.state.counters
    }

    /// The settings.
    pub fn config(&self) -> &ServiceConfig {
        &self.config
    }

    /// Every route, with the body limit, request metrics, JSON 404/405, the
    /// `Host` and `Origin` checks (for a service reached at the configured
    /// listen address and allowed hosts) and `nosniff`/`no-store` headers.
    pub fn router(&self) -> Router {
        self.router_on(self.config.listen).expect("the allowed hosts were checked by ServiceConfig::validate")
    }

    /// [`router`](Self::router) for a service listening on `local`.
    fn router_on(&self, local: SocketAddr) -> Result<Router> {
        let names = self.config.allowed_hosts.iter().map(|h| guard::AllowedHost::parse(h)).collect::<Result<_>>()?;
        let guard = Arc::new(guard::Guard::new(local, names));
        Ok(Router::new()
            .merge(api::routes())
            .merge(inspect::routes())
            .merge(health::routes())
            .merge(admin::routes())
            .merge(metrics::routes())
            .fallback(|uri: Uri| async move { ApiError::not_found(uri.path()) })
            .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
            .layer(DefaultBodyLimit::max(self.config.body_limit))
            .layer(middleware::from_fn_with_state(guard, guard::check))
            .layer(middleware::from_fn(guard::harden))
            .layer(middleware::from_fn_with_state(self.state.clone(), metrics::track_requests))
            .with_state(self.state.clone()))
    }
}
