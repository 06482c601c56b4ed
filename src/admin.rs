//! The admin HTTP server: `/metrics`, `/livez`, `/readyz`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;

use crate::metrics::Metrics;

/// Readiness: set once the caches have synced (and, with leader election, on standbys too).
#[derive(Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    /// Marks the operator ready.
    pub fn set_ready(&self) {
        self.0.store(true, Ordering::Release);
    }

    /// True once ready.
    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

#[derive(Clone)]
struct AdminState {
    metrics: Arc<Metrics>,
    readiness: Readiness,
}

/// The admin routes.
pub fn router(metrics: Arc<Metrics>, readiness: Readiness) -> Router {
    Router::new()
        .route("/metrics", get(serve_metrics))
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(serve_readyz))
        .with_state(AdminState { metrics, readiness })
}

/// Binds the admin address. Done before anything else starts, so that a taken port stops the
/// process at once instead of leaving it running without probes or metrics.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves the admin routes on a bound listener until `shutdown` resolves.
pub async fn serve(listener: TcpListener, app: Router, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await
}

async fn serve_metrics(State(state): State<AdminState>) -> impl IntoResponse {
    // Streamed piece by piece: at 10,000 tokens the text is ~3 MiB, and held whole it added
    // that much to the operator's peak memory at every scrape.
    let pieces = futures::stream::iter(state.metrics.exposition().map(Ok::<_, std::convert::Infallible>));
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], Body::from_stream(pieces))
}

async fn serve_readyz(State(state): State<AdminState>) -> impl IntoResponse {
    if state.readiness.is_ready() { (StatusCode::OK, "ready") } else { (StatusCode::SERVICE_UNAVAILABLE, "caches not synced yet") }
}
