//! The `admin` role: the admin REST API (default port 9070).

mod cluster_config;
mod cluster_ctrl;
pub mod discovery;
mod logs;
mod metadata_api;
mod migration;
mod storage_state;

pub use cluster_ctrl::ClusterCtrl;

use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json};
use axum::routing::get;
use restate_metadata_store::MetadataClient;
use restate_types::{ClusterView, NodeHealth};

/// Logged once when the role starts, so operators know what this build does not do yet.
pub const LIMITATION: &str = "the admin role serves /health, /version, /cluster-health and /metadata/{key} only: deployments, services and invocations APIs are not implemented yet and answer HTTP 501";

pub fn router(health: NodeHealth, view: ClusterView, metadata: MetadataClient) -> Router {
    Router::new()
        .route(
            "/cluster-health",
            get(move || {
                let view = view.clone();
                async move { Json(view.to_json()) }
            }),
        )
        .route(
            "/health",
            get(move || {
                let health = health.clone();
                async move { Json(health.to_json()) }
            }),
        )
        .route("/version", get(version))
        .merge(metadata_api::router(metadata))
        .fallback(not_implemented)
}

async fn version() -> impl IntoResponse {
    Json(serde_json::json!({
        "version": restate_types::BINARY_VERSION,
        "min_admin_api_version": 1,
        "max_admin_api_version": 1,
    }))
}

async fn not_implemented() -> impl IntoResponse {
    (
        StatusCode::NOT_IMPLEMENTED,
        Json(serde_json::json!({
            "code": "not_implemented",
            "message": "this admin API is not implemented yet in restate-rs",
        })),
    )
}
