//! Listening, and stopping gracefully: stop accepting, let requests in
//! flight finish (up to the drain timeout), then drain the write-behind
//! engine with [`Counters::shutdown`](counters::Counters::shutdown).
//!
//! Connections are served by hyper's HTTP/1.1 server with the service's
//! limits: a request head (and an idle kept-alive connection's wait for the
//! next) gets [`header_timeout`](crate::ServiceConfig::header_timeout), then
//! the connection is closed; so does a write to a client that has read
//! nothing for [`write_timeout`](crate::ServiceConfig::write_timeout); at most
//! [`max_connections`](crate::ServiceConfig::max_connections) are served at
//! once, and further ones wait in the listen backlog (not accepted) until
//! one closes.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use counters::{Error, ErrorKind, FlushReport, Result};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::{debug, info, warn};

use crate::Service;
use crate::head_errors::HeadErrors;
use crate::write_stall::WriteStall;

/// Binds `addr`: a failure (in use, not permitted) is a `Config` error naming
/// it. Bind before opening any backend, so a service that cannot listen
/// creates nothing.
pub async fn listen(addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| Error::new(ErrorKind::Config, format!("cannot listen on {addr}")).with_source(e))
}

impl Service {
    /// Binds the configured listen address (see [`listen`]).
    pub async fn bind(&self) -> Result<TcpListener> {
        listen(self.config.listen).await
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
    /// configuration named. The `Host` and `Origin` checks use the
    /// listener's actual address (its port, when the configuration said 0).
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
        let router = match self.router_on(addr) {
            Ok(router) => router,
            Err(e) => return Err(self.abandon(e).await),
        };
        let state = self.state.clone();
        info!("listening on http://{addr} (admin page: http://{addr}/admin)");
        let limits = Limits {
            header_timeout: self.config.header_timeout,
            write_timeout: self.config.write_timeout,
            max_connections: self.config.max_connections,
        };
        let connections = accept(listener, router, limits, async move {
            shutdown.await;
            state.start_draining();
        })
        .await;
        info!("shutting down: no new connections; waiting for requests in flight");
        if tokio::time::timeout(self.config.drain_timeout, connections.shutdown()).await.is_err() {
            warn!(timeout = ?self.config.drain_timeout, "requests still in flight after the drain timeout; draining anyway");
        }
        let report = self.state.counters.shutdown().await?;
        info!(
            "stopped: flushed {} counters and {} time buckets in {} batches",
            report.counters, report.slices, report.batches
        );
        Ok(report)
    }
}

/// The connection limits.
#[derive(Debug, Clone, Copy)]
struct Limits {
    header_timeout: Duration,
    write_timeout: Duration,
    max_connections: usize,
}

/// Accepts and serves connections until `shutdown` completes; then closes
/// the listener, asks every connection to finish its request in flight and
/// close, and returns them to be waited for.
async fn accept(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) -> GracefulShutdown {
    let connections = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(limits.header_timeout);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        // A free slot first: beyond the limit, connections wait unaccepted.
        let slot = tokio::select! {
            () = &mut shutdown => break,
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
        };
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: wait a moment.
                    warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let io = TokioIo::new(HeadErrors::new(WriteStall::new(stream, limits.write_timeout)));
        let connection = connections.watch(http.serve_connection(io, TowerToHyperService::new(router.clone())));
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                debug!(%peer, error = %e, "connection closed with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    connections
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
