//! The operator's HTTP endpoints: `/metrics` on one address, `/healthz` and
//! `/readyz` on another.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use tokio::sync::watch;

use super::cache::{Caches, Footprint};
use super::leader::LeaderState;
use super::metrics::Metrics;

/// What the endpoints report on, shared with the controller.
pub struct ProcessState {
    pub metrics: Metrics,
    /// The controllers' caches, once synced.
    caches: std::sync::RwLock<Vec<Arc<Caches>>>,
    /// Every cache has completed its first list.
    caches_synced: AtomicBool,
    /// The election's state, when leader election is on.
    leadership: Option<watch::Receiver<LeaderState>>,
}

impl ProcessState {
    pub fn new(metrics: Metrics, leadership: Option<watch::Receiver<LeaderState>>) -> Self {
        Self {
            metrics,
            caches: std::sync::RwLock::new(Vec::new()),
            caches_synced: AtomicBool::new(false),
            leadership,
        }
    }

    /// Registers the controllers' caches, every one of which has listed.
    pub fn set_caches(&self, caches: Vec<Arc<Caches>>) {
        *self.caches.write().expect("caches lock") = caches;
        self.caches_synced.store(true, Ordering::Release);
    }

    /// Drops the caches of a controller that stopped: a standby counts no
    /// stacks and waits for fresh caches when it leads again.
    pub fn forget_caches(&self) {
        self.caches_synced.store(false, Ordering::Release);
        self.caches.write().expect("caches lock").clear();
    }

    /// Ready: leading (or running without election) with synced caches, or a
    /// standby whose election loop reaches the API server.
    pub fn ready(&self) -> Result<(), &'static str> {
        let synced = self.caches_synced.load(Ordering::Acquire);
        match &self.leadership {
            None if synced => Ok(()),
            None => Err("caches not synced"),
            Some(leadership) => {
                let state = *leadership.borrow();
                match (state.leading, synced, state.healthy) {
                    (true, true, _) => Ok(()),
                    (true, false, _) => Err("leading; caches not synced"),
                    (false, _, true) => Ok(()),
                    (false, _, false) => Err("standby cannot reach the leader lease"),
                }
            }
        }
    }

    fn metrics_text(&self) -> String {
        let caches = self.caches.read().expect("caches lock");
        let holding: Vec<&'static str> = caches
            .iter()
            .flat_map(|caches| caches.stacks_holding())
            .collect();
        self.metrics.count_stacks(holding.into_iter());
        let footprints: Vec<Footprint> = caches
            .iter()
            .flat_map(|caches| caches.footprints())
            .collect();
        self.metrics.count_cached(&footprints);
        self.metrics
            .count_deferred(caches.iter().map(|caches| caches.deferred.len()).sum());
        self.metrics.render()
    }
}

/// The bound listeners of the metrics and the health endpoints.
pub struct Listeners {
    metrics: tokio::net::TcpListener,
    health: tokio::net::TcpListener,
}

/// Binds both addresses, so a taken port fails start-up rather than
/// leaving probes to fail later.
pub async fn bind(metrics_addr: SocketAddr, health_addr: SocketAddr) -> std::io::Result<Listeners> {
    let metrics = tokio::net::TcpListener::bind(metrics_addr)
        .await
        .map_err(|error| {
            std::io::Error::new(error.kind(), format!("binding {metrics_addr}: {error}"))
        })?;
    let health = tokio::net::TcpListener::bind(health_addr)
        .await
        .map_err(|error| {
            std::io::Error::new(error.kind(), format!("binding {health_addr}: {error}"))
        })?;
    // Port 0 asks for any free port: the line says which were given.
    tracing::info!(
        metrics_addr = %metrics.local_addr()?,
        health_addr = %health.local_addr()?,
        "bound the metrics and health endpoints"
    );
    Ok(Listeners { metrics, health })
}

/// Serves `/metrics` on one listener and `/healthz`, `/readyz` on the other
/// until `shutdown` completes.
pub async fn serve(
    state: Arc<ProcessState>,
    listeners: Listeners,
    shutdown: impl std::future::Future<Output = ()> + Send + Clone + 'static,
) -> std::io::Result<()> {
    let metrics = Router::new()
        .route("/metrics", get(metrics))
        .with_state(state.clone());
    let health = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(state);
    let metrics_server =
        axum::serve(listeners.metrics, metrics).with_graceful_shutdown(shutdown.clone());
    let health_server = axum::serve(listeners.health, health).with_graceful_shutdown(shutdown);
    tokio::try_join!(async { metrics_server.await }, async {
        health_server.await
    })?;
    Ok(())
}

async fn metrics(
    State(state): State<Arc<ProcessState>>,
) -> ([(&'static str, &'static str); 1], String) {
    (
        [("content-type", "text/plain; version=0.0.4; charset=utf-8")],
        state.metrics_text(),
    )
}

async fn readyz(State(state): State<Arc<ProcessState>>) -> (StatusCode, &'static str) {
    match state.ready() {
        Ok(()) => (StatusCode::OK, "ok"),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, why),
    }
}
