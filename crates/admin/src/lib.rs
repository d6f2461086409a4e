//! The `admin` role: the admin REST API (default port 9070).

mod cluster_config;
mod cluster_ctrl;
mod deployments;
pub mod discovery;
mod invocations;
mod logs;
mod metadata_api;
mod migration;
mod openapi;
mod pgsql;
mod placement;
mod query;

pub use pgsql::serve_pgsql;
pub use placement::update_placement;
pub use restate_storage_query::QueryEngine;

/// The SQL engine of this node over its partition replicas; `None` (logged) when its runtime
/// cannot start, in which case `/query` answers 503.
pub fn query_engine(
    partitions: restate_partition_api::Partitions,
    schema: restate_metadata_store::SchemaCache,
    options: &restate_config::QueryEngineOptions,
) -> Option<QueryEngine> {
    let limits = restate_storage_query::QueryLimits {
        memory_size: usize::try_from(options.memory_size.0).unwrap_or(usize::MAX),
        timeout: options.query_timeout,
        concurrent_queries: options.concurrent_queries_limit,
    };
    match QueryEngine::new(partitions, schema, limits) {
        Ok(engine) => Some(engine),
        Err(failure) => {
            tracing::error!("the query engine could not start its runtime; /query answers 503: {failure}");
            None
        }
    }
}
mod service_state;
mod storage_state;
mod web_ui;

pub use web_ui::WebUi;

pub use cluster_ctrl::ClusterCtrl;

use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json};
use axum::routing::{any, get};
use deployments::ApiVersion;
use restate_metadata_store::MetadataClient;
use restate_types::{ClusterView, NodeHealth};

/// Logged once when the role starts, so operators know what this build does not do yet.
pub const LIMITATION: &str = "the admin role serves /health, /version, /cluster-health, /metadata/{key}, deployments, services (GET, PATCH, POST /services/{service}/state), invocations (PATCH /invocations/{id}/cancel|kill|pause|resume|purge|purge-journal|restart-as-new, and POST /internal/invocations_batch_operations/{operation} for many), /services/{service}/openapi and POST /query (also under /v2, /v3, /v4), GET /subscriptions (always empty) and the web UI at /ui/ from `[admin] web-ui-dir`; creating subscriptions, PATCH/PUT of deployments, graceful deployment removal are not implemented yet and answer HTTP 501";

/// The admin API versions served; the `restate` CLI picks the highest common one.
const MIN_ADMIN_API_VERSION: u32 = 2;
const MAX_ADMIN_API_VERSION: u32 = 4;

pub fn router(
    health: NodeHealth,
    view: ClusterView,
    metadata: MetadataClient,
    partitions: restate_partition_api::Partitions,
    schema: restate_metadata_store::SchemaCache,
    engine: Option<restate_storage_query::QueryEngine>,
    web_ui: WebUi,
) -> Router {
    let access = invocations::PartitionAccess { partitions, schema };
    let versioned = |version| {
        versioned_router(
            health.clone(),
            view.clone(),
            metadata.clone(),
            access.clone(),
            engine.clone(),
            version,
        )
    };
    Router::new()
        .merge(versioned(ApiVersion::Unknown))
        .nest("/v2", versioned(ApiVersion::V2))
        .nest("/v3", versioned(ApiVersion::V3))
        .nest("/v4", versioned(ApiVersion::V4))
        .route("/v1", any(unsupported_version))
        .route("/v1/{*rest}", any(unsupported_version))
        .merge(metadata_api::router(metadata))
        .merge(web_ui::router(web_ui))
        .fallback(not_implemented)
}

/// The routes mounted both unprefixed and under each supported version prefix.
fn versioned_router(
    health: NodeHealth,
    view: ClusterView,
    metadata: MetadataClient,
    access: invocations::PartitionAccess,
    engine: Option<restate_storage_query::QueryEngine>,
    version: ApiVersion,
) -> Router {
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
        .route("/version", get(version_information))
        // Kafka subscriptions are not supported: none exist, and creating one is refused.
        .route(
            "/subscriptions",
            get(|| async { Json(serde_json::json!({ "subscriptions": [] })) }).post(not_implemented),
        )
        .merge(deployments::router(metadata, version))
        .merge(invocations::router(access))
        .merge(
            Router::new()
                .route("/query", axum::routing::post(query::query))
                .with_state(engine),
        )
}

async fn version_information() -> impl IntoResponse {
    Json(serde_json::json!({
        "version": restate_types::reported_version(),
        "min_admin_api_version": MIN_ADMIN_API_VERSION,
        "max_admin_api_version": MAX_ADMIN_API_VERSION,
        "features": {},
    }))
}

async fn unsupported_version() -> impl IntoResponse {
    (
        StatusCode::BAD_REQUEST,
        "Unsupported Admin API version: this server serves versions 2 to 4 (/v2, /v3, /v4 or unprefixed)",
    )
}

/// Admin API paths this build does not serve yet, in the error shape the `restate` CLI parses.
async fn not_implemented() -> impl IntoResponse {
    (
        StatusCode::NOT_IMPLEMENTED,
        Json(serde_json::json!({
            "message": "this admin API is not implemented yet in restate-rs",
            "restate_code": null,
        })),
    )
}
