//! Listening, and stopping gracefully: stop accepting, let requests in
//! flight finish (up to the drain timeout), then drain the write-behind
//! engine with [`Counters::shutdown`](counters::Counters::shutdown).

use std::future::{Future, IntoFuture};

use counters::{Error, ErrorKind, FlushReport, Result};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tracing::{info, warn};

use crate::Service;

impl Service {
    /// Binds the configured listen address.
    pub async fn bind(&self) -> Result<TcpListener> {
        let addr = self.config.listen;
        TcpListener::bind(addr)
            .await
            .map_err(|e| Error::new(ErrorKind::Config, format!("cannot listen on {addr}")).with_source(e))
    }

    /// Binds the configured address and serves until `shutdown` completes,
    /// then drains (see [`serve`](Self::serve)).
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<FlushReport> {
        match self.bind().await {
            Ok(listener) => self.serve(listener, shutdown).await,
            Err(e) => Err(self.abandon(e).await),
        }
    }

    /// Shuts the engine down after a failure to start serving (so it is not
    /// dropped with its flusher running) and returns the failure.
    async fn abandon(self, error: Error) -> Error {
        if let Err(e) = self.state.counters.shutdown().await {
            warn!(error = %e, "could not drain the counters");
        }
        error
    }

    /// Serves on `listener` until `shutdown` completes (for example
    /// [`shutdown_signal`]); then stops accepting, waits for requests in
    /// flight up to the drain timeout, drains every pending delta to the
    /// store and reports what it flushed.
    ///
    /// A non-loopback listener needs a write token, whatever address the
    /// configuration named.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<FlushReport> {
        let addr = match listener.local_addr() {
            Ok(addr) => addr,
            Err(e) => {
                let error = Error::new(ErrorKind::Config, "the listener has no local address").with_source(e);
                return Err(self.abandon(error).await);
            }
        };
        if !addr.ip().is_loopback() && self.config.token.is_none() {
            let error = Error::new(
                ErrorKind::Config,
                format!("refusing to serve on {addr} without a token: a non-loopback address needs --token"),
            );
            return Err(self.abandon(error).await);
        }
        let router = self.router();
        let state = self.state.clone();
        let signalled = std::sync::Arc::new(Notify::new());
        let notify = signalled.clone();
        let server = axum::serve(listener, router).with_graceful_shutdown(async move {
            shutdown.await;
            state.start_draining();
            notify.notify_one();
        });
        info!("listening on http://{addr} (admin page: http://{addr}/admin)");
        let mut server = std::pin::pin!(server.into_future());
        let served = tokio::select! {
            served = &mut server => served,
            () = signalled.notified() => {
                info!("shutting down: no new connections; waiting for requests in flight");
                match tokio::time::timeout(self.config.drain_timeout, &mut server).await {
                    Ok(served) => served,
                    Err(_) => {
                        warn!(timeout = ?self.config.drain_timeout, "requests still in flight after the drain timeout; draining anyway");
                        Ok(())
                    }
                }
            }
        };
        if let Err(e) = served {
            warn!(error = %e, "the server stopped with an error; draining");
        }
        let report = self.state.counters.shutdown().await?;
        info!(
            "stopped: flushed {} counters and {} time buckets in {} batches",
            report.counters, report.slices, report.batches
        );
        Ok(report)
    }
}

/// A future that completes on SIGINT (Ctrl-C) or, on Unix, SIGTERM.
///
/// The handlers are registered when this is called (inside a Tokio
/// runtime), not when the future is first polled, so a signal that arrives
/// while the service is still starting stops it gracefully instead of
/// killing the process.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let interrupt = signal(SignalKind::interrupt());
        let terminate = signal(SignalKind::terminate());
        async move {
            let (mut interrupt, mut terminate) = match (interrupt, terminate) {
                (Ok(i), Ok(t)) => (i, t),
                (Err(e), _) | (_, Err(e)) => {
                    warn!(error = %e, "cannot listen for SIGINT/SIGTERM; stop the process another way");
                    return std::future::pending().await;
                }
            };
            tokio::select! {
                _ = interrupt.recv() => info!("SIGINT received"),
                _ = terminate.recv() => info!("SIGTERM received"),
            }
        }
    }
    #[cfg(not(unix))]
    async {
        match tokio::signal::ctrl_c().await {
            Ok(()) => info!("SIGINT received"),
            Err(e) => {
                warn!(error = %e, "cannot listen for Ctrl-C; stop the process another way");
                std::future::pending::<()>().await
            }
        }
    }
}
