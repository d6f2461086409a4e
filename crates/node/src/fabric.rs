//! The fabric port (default 5122): gRPC services and plain HTTP on one listener.

use std::sync::Arc;

use axum::Router;
use axum::http::header;
use axum::response::{IntoResponse, Json};
use axum::routing::get;
use restate_types::{ClusterView, NodeHealth};

use crate::metrics::NodeMetrics;

/// The fabric router: `/health`, `/metrics`, plus the node's gRPC services.
/// `grpc_services` must have no fallback (build it from `Routes::from(Router::new())`).
pub(crate) fn router(
    health: NodeHealth,
    view: ClusterView,
    metrics: Arc<NodeMetrics>,
    grpc_services: Router,
) -> Router {
    Router::new()
        .route(
            "/health",
            get({
                let health = health.clone();
                move || async move {
                    let mut body = health.to_json();
                    body["cluster"] = view.to_json();
                    Json(body)
                }
            }),
        )
        .route(
            "/metrics",
            get(move || async move {
                (
                    [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
                    metrics.render(),
                )
                    .into_response()
            }),
        )
        .fallback(restate_net::grpc_aware_fallback)
        .merge(grpc_services)
}
