//! What every handler shares.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::extract::FromRef;
use counters::Counters;

use crate::auth::Access;
use crate::metrics::ServiceMetrics;

/// Fixed facts about the running service, for handlers and the status page.
#[derive(Debug, Clone)]
pub struct ServiceInfo {
    /// The cache backend's name.
    pub cache: &'static str,
    /// The store backend's name.
    pub store: &'static str,
    /// Configured time-slice precisions, seconds, ascending.
    pub precisions: Vec<u32>,
    /// Samples kept per precision.
    pub samples: u32,
    /// Most bytes of a request body.
    pub body_limit: usize,
    /// How long a request body may take to arrive.
    pub body_timeout: Duration,
    /// How long `/readyz` waits for the store.
    pub ready_timeout: Duration,
    /// Whether increments count into time slices unless they say otherwise.
    pub time_sliced: bool,
    /// The write-behind age bound of every counter.
    pub flush_interval: Duration,
}

/// The state handlers share: the counters, metrics, token rules and facts.
#[derive(Debug, Clone)]
pub struct AppState {
    pub(crate) counters: Arc<Counters>,
    pub(crate) metrics: Arc<ServiceMetrics>,
    pub(crate) access: Arc<Access>,
    pub(crate) info: Arc<ServiceInfo>,
    draining: Arc<AtomicBool>,
}

impl AppState {
    /// A state over `counters`.
    pub(crate) fn new(
        counters: Arc<Counters>,
        metrics: Arc<ServiceMetrics>,
        access: Access,
        info: ServiceInfo,
    ) -> Self {
        AppState { counters, metrics, access: Arc::new(access), info: Arc::new(info), draining: Arc::default() }
    }

    /// Marks the service as draining: `/readyz` answers 503 from now on.
    pub(crate) fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// Whether the service is draining for shutdown.
    pub(crate) fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }
}

impl FromRef<AppState> for Arc<Access> {
    fn from_ref(state: &AppState) -> Self {
        state.access.clone()
    }
}
