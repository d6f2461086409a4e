//! The `http-ingress` role: where clients invoke services (default port 8080).
//!
//! Invocations need the worker's partition processors, which do not exist yet, so every
//! invocation path answers 501 with that reason instead of pretending to accept it.

use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json};
use axum::routing::get;
use restate_types::NodeHealth;

/// Logged once when the role starts, so operators know what this build does not do yet.
pub const LIMITATION: &str =
    "the http-ingress role answers /health only: service invocations are not implemented yet and get HTTP 501";

pub fn router(health: NodeHealth) -> Router {
    let health_route = {
        let health = health.clone();
        move || async move { Json(health.to_json()) }
    };
    Router::new()
        .route("/health", get(health_route.clone()))
        .route("/restate/health", get(health_route))
        .fallback(not_implemented)
}

async fn not_implemented() -> impl IntoResponse {
    (
        StatusCode::NOT_IMPLEMENTED,
        Json(serde_json::json!({
            "code": "not_implemented",
            "message": "service invocation through the ingress is not implemented yet in restate-rs",
        })),
    )
}
