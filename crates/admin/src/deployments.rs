//! `/deployments` and `/services`: registering SDK deployments and reading the schema they
//! define. The registry lives in the metadata store (`schema_registry`), so every node answers
//! from the same schema; registration rules are in [`restate_types::schema`].

use std::collections::BTreeMap;
use std::time::SystemTime;

use axum::Json;
use axum::Router;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use restate_metadata_store::{MetadataClient, ReadError, ReadModifyWrite, WriteError};
use restate_types::DeploymentId;
use restate_types::manifest::{
    HandlerManifest, HandlerType, ManifestError, OnMaxAttempts, ServiceManifest, ServiceType,
};
use restate_types::metadata::SCHEMA_REGISTRY_KEY;
use restate_types::schema::{
    Deployment, DeploymentHttpVersion, DeploymentService, ModifyServiceError, RegisterFlags, Registered, SchemaError,
    SchemaRegistry, ServiceOverrides,
};
use serde::{Deserialize, Serialize};

use crate::discovery::{self, DiscoveryError, DiscoveryRequest, HttpVersion};
use restate_types::durations::{friendly_duration, parse_duration};

/// The admin API version a router is mounted for; it changes only `POST /deployments`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ApiVersion {
    /// Unprefixed paths.
    Unknown,
    V2,
    V3,
    V4,
}

#[derive(Clone)]
struct ApiState {
    metadata: MetadataClient,
    version: ApiVersion,
}

pub(crate) fn router(metadata: MetadataClient, version: ApiVersion) -> Router {
    Router::new()
        .route("/deployments", post(register).get(list_deployments))
        .route(
            "/deployments/{id}",
            get(get_deployment)
                .patch(crate::not_implemented)
                .put(crate::not_implemented)
                .delete(delete_deployment),
        )
        .route("/services", get(list_services))
        .route("/services/{service}", get(get_service).patch(modify_service))
        .route("/services/{service}/handlers", get(list_handlers))
        .route("/services/{service}/openapi", get(get_openapi))
        .route("/services/{service}/handlers/{handler}", get(get_handler))
        .with_state(ApiState { metadata, version })
}

// ---------------------------------------------------------------------------------------------
// Errors

/// An error answer in the shape the `restate` CLI parses: `{"message", "restate_code"}`.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    message: String,
    restate_code: Option<&'static str>,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            restate_code: None,
        }
    }

    fn coded(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            restate_code: Some(code),
        }
    }

    fn invalid_field(field: &str, reason: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            format!("The request field '{field}' is invalid. Reason: {reason}"),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(serde_json::json!({ "message": self.message, "restate_code": self.restate_code })),
        )
            .into_response()
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        Self::new(rejection.status(), rejection.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        Self::new(rejection.status(), rejection.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        Self::new(rejection.status(), rejection.body_text())
    }
}

impl From<ModifyServiceError> for ApiError {
    fn from(error: ModifyServiceError) -> Self {
        match error {
            ModifyServiceError::UnknownService(name) => service_not_found(&name),
            ModifyServiceError::NotAWorkflow(_) => Self::invalid_field("workflow_completion_retention", error),
        }
    }
}

impl From<ReadError> for ApiError {
    fn from(error: ReadError) -> Self {
        let status = match error {
            ReadError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self::new(status, format!("Cannot read the schema registry: {error}"))
    }
}

impl From<WriteError> for ApiError {
    fn from(error: WriteError) -> Self {
        let status = match error {
            WriteError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            WriteError::UnknownOutcome(_) => StatusCode::GATEWAY_TIMEOUT,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self::new(status, format!("Cannot store the schema registry: {error}"))
    }
}

impl From<SchemaError> for ApiError {
    fn from(error: SchemaError) -> Self {
        Self::coded(StatusCode::CONFLICT, error.code(), error.to_string())
    }
}

impl From<DiscoveryError> for ApiError {
    fn from(error: DiscoveryError) -> Self {
        let message = error.to_string();
        match &error {
            DiscoveryError::BadUri { .. } => Self::invalid_field("uri", message),
            DiscoveryError::Unreachable { .. }
            | DiscoveryError::Status { .. }
            | DiscoveryError::ContentType { .. }
            | DiscoveryError::TooLarge { .. } => Self::coded(StatusCode::INTERNAL_SERVER_ERROR, "META0003", message),
            DiscoveryError::Manifest { error, .. } => match error {
                ManifestError::ProtocolRange { .. } => {
                    Self::coded(StatusCode::INTERNAL_SERVER_ERROR, "META0012", message)
                }
                ManifestError::Json(_) => Self::coded(StatusCode::INTERNAL_SERVER_ERROR, "META0013", message),
                ManifestError::ReservedServiceName(_) => Self::coded(StatusCode::BAD_REQUEST, "META0005", message),
                _ => Self::new(StatusCode::BAD_REQUEST, message),
            },
        }
    }
}

fn service_not_found(service: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("The requested service '{service}' does not exist"),
    )
}

// ---------------------------------------------------------------------------------------------
// Response shapes

/// Server defaults shown for unset settings (Restate 1.7).
mod defaults {
    pub const IDEMPOTENCY_RETENTION: u64 = 86_400_000;
    pub const JOURNAL_RETENTION: u64 = 86_400_000;
    pub const WORKFLOW_COMPLETION_RETENTION: u64 = 86_400_000;
    pub const INACTIVITY_TIMEOUT: u64 = 60_000;
    pub const ABORT_TIMEOUT: u64 = 600_000;
    pub const RETRY_INITIAL_INTERVAL: u64 = 500;
    pub const RETRY_EXPONENTIATION_FACTOR: f64 = 2.0;
    pub const RETRY_MAX_ATTEMPTS: u64 = 70;
    pub const RETRY_MAX_INTERVAL: u64 = 60_000;
}

fn service_type_name(ty: ServiceType) -> &'static str {
    match ty {
        ServiceType::Service => "Service",
        ServiceType::VirtualObject => "VirtualObject",
        ServiceType::Workflow => "Workflow",
    }
}

fn handler_type_name(ty: HandlerType) -> &'static str {
    match ty {
        HandlerType::Exclusive => "Exclusive",
        HandlerType::Shared => "Shared",
        HandlerType::Workflow => "Workflow",
    }
}

fn on_max_attempts_name(value: OnMaxAttempts) -> &'static str {
    match value {
        OnMaxAttempts::Pause => "Pause",
        OnMaxAttempts::Kill => "Kill",
    }
}

fn non_empty(metadata: &Option<BTreeMap<String, String>>) -> Option<BTreeMap<String, String>> {
    metadata.clone().filter(|m| !m.is_empty())
}

#[derive(Debug, Serialize)]
pub(crate) struct ServiceRetryPolicy {
    initial_interval: String,
    exponentiation_factor: f64,
    max_attempts: Option<u64>,
    max_interval: String,
    on_max_attempts: &'static str,
}

/// Only what the handler overrides; `max_attempts` is always present (`null` = inherited).
#[derive(Debug, Serialize)]
pub(crate) struct HandlerRetryPolicy {
    #[serde(skip_serializing_if = "Option::is_none")]
    initial_interval: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    exponentiation_factor: Option<f64>,
    max_attempts: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_interval: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    on_max_attempts: Option<&'static str>,
}

#[derive(Debug, Serialize)]
pub(crate) struct HandlerMetadata {
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    ty: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    documentation: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<BTreeMap<String, String>>,
    public: bool,
    input_description: String,
    output_description: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    input_json_schema: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    output_json_schema: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    idempotency_retention: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    journal_retention: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    workflow_completion_retention: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    inactivity_timeout: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    abort_timeout: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    enable_lazy_state: Option<bool>,
    retry_policy: HandlerRetryPolicy,
}

#[derive(Debug, Serialize)]
pub(crate) struct ServiceMetadata {
    name: String,
    ty: &'static str,
    handlers: Vec<HandlerMetadata>,
    deployment_id: DeploymentId,
    revision: u32,
    public: bool,
    idempotency_retention: String,
    journal_retention: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    workflow_completion_retention: Option<String>,
    inactivity_timeout: String,
    abort_timeout: String,
    enable_lazy_state: bool,
    retry_policy: ServiceRetryPolicy,
    #[serde(skip_serializing_if = "Option::is_none")]
    documentation: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<BTreeMap<String, String>>,
}

/// What a handler accepts, for humans: the content type, or `none`/`any` without one.
fn input_description(handler: &HandlerManifest) -> String {
    match &handler.input {
        None => "any".into(),
        Some(input) => input.content_type.clone().unwrap_or_else(|| "none".into()),
    }
}

fn output_description(handler: &HandlerManifest) -> String {
    match &handler.output {
        None => "any".into(),
        Some(output) => output.content_type.clone().unwrap_or_else(|| "none".into()),
    }
}

fn handler_metadata(service: &ServiceManifest, handler: &HandlerManifest) -> HandlerMetadata {
    let settings = &handler.settings;
    let private = settings
        .ingress_private
        .or(service.settings.ingress_private)
        .unwrap_or(false);
    let ty = match service.ty {
        ServiceType::Service => None,
        other => other.handler_type(handler.ty).map(handler_type_name),
    };
    HandlerMetadata {
        name: handler.name.clone(),
        ty,
        documentation: handler.documentation.clone(),
        metadata: non_empty(&handler.metadata),
        public: !private,
        input_description: input_description(handler),
        output_description: output_description(handler),
        input_json_schema: handler.input.as_ref().and_then(|i| i.json_schema.clone()),
        output_json_schema: handler.output.as_ref().and_then(|o| o.json_schema.clone()),
        idempotency_retention: settings.idempotency_retention.map(friendly_duration),
        journal_retention: settings.journal_retention.map(friendly_duration),
        workflow_completion_retention: handler.workflow_completion_retention.map(friendly_duration),
        inactivity_timeout: settings.inactivity_timeout.map(friendly_duration),
        abort_timeout: settings.abort_timeout.map(friendly_duration),
        enable_lazy_state: settings.enable_lazy_state,
        retry_policy: HandlerRetryPolicy {
            initial_interval: settings.retry_policy_initial_interval.map(friendly_duration),
            exponentiation_factor: settings.retry_policy_exponentiation_factor,
            max_attempts: settings.retry_policy_max_attempts,
            max_interval: settings.retry_policy_max_interval.map(friendly_duration),
            on_max_attempts: settings.retry_policy_on_max_attempts.map(on_max_attempts_name),
        },
    }
}

/// The admin API view of one service revision, with server defaults for unset settings.
pub(crate) fn service_metadata(deployment_id: DeploymentId, service: &DeploymentService) -> ServiceMetadata {
    let manifest = &service.effective_manifest();
    let settings = &manifest.settings;
    let workflow_completion_retention = (manifest.ty == ServiceType::Workflow).then(|| {
        let explicit = manifest.handlers.iter().find_map(|h| h.workflow_completion_retention);
        friendly_duration(explicit.unwrap_or(defaults::WORKFLOW_COMPLETION_RETENTION))
    });
    let duration = |value: Option<u64>, default: u64| friendly_duration(value.unwrap_or(default));
    ServiceMetadata {
        name: manifest.name.clone(),
        ty: service_type_name(manifest.ty),
        handlers: manifest
            .handlers
            .iter()
            .map(|handler| handler_metadata(manifest, handler))
            .collect(),
        deployment_id,
        revision: service.revision,
        public: !settings.ingress_private.unwrap_or(false),
        idempotency_retention: duration(settings.idempotency_retention, defaults::IDEMPOTENCY_RETENTION),
        journal_retention: duration(settings.journal_retention, defaults::JOURNAL_RETENTION),
        workflow_completion_retention,
        inactivity_timeout: duration(settings.inactivity_timeout, defaults::INACTIVITY_TIMEOUT),
        abort_timeout: duration(settings.abort_timeout, defaults::ABORT_TIMEOUT),
        enable_lazy_state: settings.enable_lazy_state.unwrap_or(false),
        retry_policy: ServiceRetryPolicy {
            initial_interval: duration(settings.retry_policy_initial_interval, defaults::RETRY_INITIAL_INTERVAL),
            exponentiation_factor: settings
                .retry_policy_exponentiation_factor
                .unwrap_or(defaults::RETRY_EXPONENTIATION_FACTOR),
            max_attempts: Some(
                settings
                    .retry_policy_max_attempts
                    .unwrap_or(defaults::RETRY_MAX_ATTEMPTS),
            ),
            max_interval: duration(settings.retry_policy_max_interval, defaults::RETRY_MAX_INTERVAL),
            on_max_attempts: on_max_attempts_name(
                settings.retry_policy_on_max_attempts.unwrap_or(OnMaxAttempts::Pause),
            ),
        },
        documentation: manifest.documentation.clone(),
        metadata: non_empty(&manifest.metadata),
    }
}

#[derive(Debug, Serialize)]
struct RegisterResponse {
    id: DeploymentId,
    services: Vec<ServiceMetadata>,
    min_protocol_version: i64,
    max_protocol_version: i64,
    sdk_version: Option<String>,
}

#[derive(Debug, Serialize)]
struct ServiceRevision {
    name: String,
    revision: u32,
}

/// What the admin API shows in place of a deployment's additional header values.
const REDACTED: &str = "<redacted>";

/// A deployment as listed (`S` = `ServiceRevision`) or detailed (`S` = `ServiceMetadata`).
#[derive(Debug, Serialize)]
struct DeploymentResponse<S> {
    id: DeploymentId,
    uri: String,
    protocol_type: &'static str,
    http_version: &'static str,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    additional_headers: BTreeMap<String, String>,
    created_at: String,
    min_protocol_version: i64,
    max_protocol_version: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    sdk_version: Option<String>,
    services: Vec<S>,
}

fn deployment_response<S>(deployment: &Deployment, service: impl Fn(&DeploymentService) -> S) -> DeploymentResponse<S> {
    DeploymentResponse {
        id: deployment.id,
        uri: deployment.uri.clone(),
        protocol_type: match deployment.protocol_type {
            restate_types::manifest::ProtocolMode::BidiStream => "BidiStream",
            restate_types::manifest::ProtocolMode::RequestResponse => "RequestResponse",
        },
        http_version: deployment.http_version.as_str(),
        // Names only: the values are often credentials, and reading the deployment list must
        // not hand them out.
        additional_headers: deployment
            .additional_headers
            .keys()
            .map(|name| (name.clone(), REDACTED.to_owned()))
            .collect(),
        created_at: deployment.created_at.clone(),
        min_protocol_version: deployment.min_protocol_version,
        max_protocol_version: deployment.max_protocol_version,
        sdk_version: deployment.sdk_version.clone(),
        services: deployment.services.iter().map(service).collect(),
    }
}

fn register_response(deployment: &Deployment) -> RegisterResponse {
    RegisterResponse {
        id: deployment.id,
        services: deployment
            .services
            .iter()
            .map(|s| service_metadata(deployment.id, s))
            .collect(),
        min_protocol_version: deployment.min_protocol_version,
        max_protocol_version: deployment.max_protocol_version,
        sdk_version: deployment.sdk_version.clone(),
    }
}

// ---------------------------------------------------------------------------------------------
// Handlers

async fn read_registry(metadata: &MetadataClient) -> Result<SchemaRegistry, ApiError> {
    Ok(metadata
        .get_json::<SchemaRegistry>(SCHEMA_REGISTRY_KEY)
        .await?
        .map(|(_, registry)| registry)
        .unwrap_or_default())
}

/// `RegisterDeploymentRequest`; only the HTTP variant is served.
#[derive(Debug, Deserialize)]
/// Every field may be absent or `null` (the `restate` CLI sends `"additional_headers": null`).
struct RegisterRequest {
    uri: Option<String>,
    arn: Option<String>,
    additional_headers: Option<BTreeMap<String, String>>,
    use_http_11: Option<bool>,
    force: Option<bool>,
    breaking: Option<bool>,
    dry_run: Option<bool>,
}

async fn register(
    State(state): State<ApiState>,
    body: Result<Json<RegisterRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(request) = body?;
    if request.arn.is_some() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "Lambda deployments are not supported by this server: register an HTTP deployment with `uri`",
        ));
    }
    let uri = request
        .uri
        .ok_or_else(|| ApiError::invalid_field("uri", "it is missing"))?;
    // Normalized (`http://host:port/`), so that the same address is recognised again.
    let uri = discovery::endpoint_url(&uri, "").map_err(ApiError::from)?;
    let flags = RegisterFlags {
        force: request.force.unwrap_or(state.version == ApiVersion::V2),
        breaking: request.breaking.unwrap_or(false),
    };
    let headers = request.additional_headers.unwrap_or_default();

    let current = read_registry(&state.metadata).await?;
    if !flags.force
        && let Some(existing) = current.find_by_identity(&uri, &headers)
    {
        return unchanged(state.version, existing);
    }

    let discovered = discovery::discover(&DiscoveryRequest {
        uri: uri.clone(),
        additional_headers: headers.clone(),
        use_http_11: request.use_http_11.unwrap_or(false),
    })
    .await?;
    let candidate = Deployment {
        id: DeploymentId::generate(),
        uri,
        additional_headers: headers,
        use_http_11: request.use_http_11.unwrap_or(false),
        http_version: match discovered.http_version {
            HttpVersion::Http11 => DeploymentHttpVersion::Http11,
            HttpVersion::Http2 => DeploymentHttpVersion::Http2,
        },
        protocol_type: discovered.protocol_mode,
        min_protocol_version: discovered.manifest.min_protocol_version,
        max_protocol_version: discovered.manifest.max_protocol_version,
        sdk_version: discovered.sdk_version,
        created_at: humantime::format_rfc3339_nanos(SystemTime::now()).to_string(),
        services: discovered
            .manifest
            .services
            .into_iter()
            .map(DeploymentService::new)
            .collect(),
    };

    let (outcome, registry) = match request.dry_run.unwrap_or(false) {
        true => {
            let mut copy = current;
            let outcome = copy.register(candidate, flags)?;
            (outcome, copy)
        }
        false => store(&state.metadata, candidate, flags).await?,
    };
    let Some(deployment) = registry.deployment(outcome.id()) else {
        return Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("deployment {} vanished from the schema registry", outcome.id()),
        ));
    };
    let status = match (outcome, state.version) {
        (Registered::Unchanged(_), _) => return unchanged(state.version, deployment),
        (Registered::Created(_), _) | (Registered::Overwritten(_), ApiVersion::V2) => StatusCode::CREATED,
        (Registered::Overwritten(_), _) => StatusCode::OK,
    };
    Ok(with_location(status, deployment))
}

/// Applies the registration to the stored registry (retrying on concurrent changes).
async fn store(
    metadata: &MetadataClient,
    candidate: Deployment,
    flags: RegisterFlags,
) -> Result<(Registered, SchemaRegistry), ApiError> {
    let mut refused = None;
    let mut outcome = None;
    let stored = metadata
        .read_modify_write(SCHEMA_REGISTRY_KEY, |current: Option<&SchemaRegistry>| {
            let mut next = current.cloned().unwrap_or_default();
            match next.register(candidate.clone(), flags) {
                Ok(registered) => {
                    outcome = Some(registered);
                    match (registered, current.is_some()) {
                        (Registered::Unchanged(_), true) => Ok(ReadModifyWrite::Keep),
                        _ => Ok(ReadModifyWrite::Write(next)),
                    }
                }
                Err(error) => {
                    refused = Some(error);
                    Err(WriteError::Rejected("the registration was refused".into()))
                }
            }
        })
        .await;
    if let Some(error) = refused {
        return Err(error.into());
    }
    let (_, registry) = stored?;
    let outcome = outcome.ok_or_else(|| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the schema registry update ended without an outcome",
        )
    })?;
    Ok((outcome, registry))
}

fn with_location(status: StatusCode, deployment: &Deployment) -> Response {
    let location = format!("deployments/{}", deployment.id);
    (
        status,
        [(header::LOCATION, location)],
        Json(register_response(deployment)),
    )
        .into_response()
}

/// The same address and headers are registered and `force` was not given.
fn unchanged(version: ApiVersion, existing: &Deployment) -> Result<Response, ApiError> {
    match version {
        ApiVersion::V2 => Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("Conflict: deployment {} already exists", existing.id),
        )),
        ApiVersion::Unknown | ApiVersion::V3 | ApiVersion::V4 => Ok(with_location(StatusCode::OK, existing)),
    }
}

async fn list_deployments(State(state): State<ApiState>) -> Result<Response, ApiError> {
    let registry = read_registry(&state.metadata).await?;
    let deployments: Vec<_> = registry
        .deployments
        .iter()
        .map(|d| {
            deployment_response(d, |s| ServiceRevision {
                name: s.manifest.name.clone(),
                revision: s.revision,
            })
        })
        .collect();
    Ok(Json(serde_json::json!({ "deployments": deployments })).into_response())
}

async fn get_deployment(
    State(state): State<ApiState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path(id) = id?;
    let parsed = parse_deployment_id(&id)?;
    let registry = read_registry(&state.metadata).await?;
    let deployment = registry.deployment(parsed).ok_or_else(|| deployment_not_found(&id))?;
    Ok(Json(deployment_response(deployment, |s| service_metadata(deployment.id, s))).into_response())
}

/// Applies `change` to the stored registry (retrying on concurrent changes); `Ok(false)` from
/// `change` means nothing to write. Returns the registry as stored.
async fn update_registry(
    metadata: &MetadataClient,
    mut change: impl FnMut(&mut SchemaRegistry) -> Result<bool, ApiError>,
) -> Result<SchemaRegistry, ApiError> {
    let mut refused = None;
    let stored = metadata
        .read_modify_write(SCHEMA_REGISTRY_KEY, |current: Option<&SchemaRegistry>| {
            refused = None;
            let mut next = current.cloned().unwrap_or_default();
            match change(&mut next) {
                Ok(true) => Ok(ReadModifyWrite::Write(next)),
                Ok(false) => Ok(ReadModifyWrite::Keep),
                Err(error) => {
                    refused = Some(error);
                    Err(WriteError::Rejected("the schema registry change was refused".into()))
                }
            }
        })
        .await;
    if let Some(error) = refused {
        return Err(error);
    }
    let (_, registry) = stored?;
    Ok(registry)
}

fn parse_deployment_id(id: &str) -> Result<DeploymentId, ApiError> {
    id.parse()
        .map_err(|error| ApiError::invalid_field("deployment_id", error))
}

fn deployment_not_found(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("The requested deployment '{id}' does not exist"),
    )
}

#[derive(Debug, Deserialize)]
struct DeleteDeploymentParams {
    force: Option<bool>,
}

/// `DELETE /deployments/{id}?force=true`: removes the deployment at once (the `restate` CLI
/// checks for active invocations itself). Graceful removal is not supported (501, as Restate).
async fn delete_deployment(
    State(state): State<ApiState>,
    id: Result<Path<String>, PathRejection>,
    params: Result<Query<DeleteDeploymentParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Path(id) = id?;
    let parsed = parse_deployment_id(&id)?;
    let Query(params) = params?;
    if params.force != Some(true) {
        return Err(ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "Graceful removal of a deployment is not supported: only forced removal is \
             (`DELETE /deployments/{id}?force=true`), which does not check for running invocations",
        ));
    }
    update_registry(&state.metadata, |registry| {
        registry
            .remove_deployment(parsed)
            .map(|_| true)
            .ok_or_else(|| deployment_not_found(&id))
    })
    .await?;
    Ok(StatusCode::ACCEPTED.into_response())
}

/// `ModifyServiceRequest`: every field may be absent or `null` (unchanged).
#[derive(Debug, Deserialize)]
struct ModifyServiceRequest {
    public: Option<bool>,
    idempotency_retention: Option<String>,
    journal_retention: Option<String>,
    workflow_completion_retention: Option<String>,
    inactivity_timeout: Option<String>,
    abort_timeout: Option<String>,
}

impl ModifyServiceRequest {
    fn overrides(&self) -> Result<ServiceOverrides, ApiError> {
        let duration = |field: &str, value: &Option<String>| {
            value
                .as_deref()
                .map(|text| parse_duration(text).map_err(|reason| ApiError::invalid_field(field, reason)))
                .transpose()
        };
        Ok(ServiceOverrides {
            public: self.public,
            idempotency_retention: duration("idempotency_retention", &self.idempotency_retention)?,
            journal_retention: duration("journal_retention", &self.journal_retention)?,
            workflow_completion_retention: duration(
                "workflow_completion_retention",
                &self.workflow_completion_retention,
            )?,
            inactivity_timeout: duration("inactivity_timeout", &self.inactivity_timeout)?,
            abort_timeout: duration("abort_timeout", &self.abort_timeout)?,
        })
    }
}

/// `PATCH /services/{s}`: changes settings of the active revision until the next registration
/// of the service; answers the new `ServiceMetadata`.
async fn modify_service(
    State(state): State<ApiState>,
    name: Result<Path<String>, PathRejection>,
    body: Result<Json<ModifyServiceRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Path(name) = name?;
    let Json(request) = body?;
    let changes = request.overrides()?;
    let registry = update_registry(&state.metadata, |registry| {
        registry.modify_service(&name, &changes)?;
        Ok(true)
    })
    .await?;
    let (deployment, service) = registry.active_service(&name).ok_or_else(|| service_not_found(&name))?;
    Ok(Json(service_metadata(deployment.id, service)).into_response())
}

async fn list_services(State(state): State<ApiState>) -> Result<Response, ApiError> {
    let registry = read_registry(&state.metadata).await?;
    let services: Vec<_> = registry
        .active_services()
        .into_iter()
        .map(|(deployment, service)| service_metadata(deployment.id, service))
        .collect();
    Ok(Json(serde_json::json!({ "services": services })).into_response())
}

async fn active_service(state: &ApiState, name: &str) -> Result<ServiceMetadata, ApiError> {
    let registry = read_registry(&state.metadata).await?;
    let (deployment, service) = registry.active_service(name).ok_or_else(|| service_not_found(name))?;
    Ok(service_metadata(deployment.id, service))
}

async fn get_service(
    State(state): State<ApiState>,
    name: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path(name) = name?;
    Ok(Json(active_service(&state, &name).await?).into_response())
}

/// How to call the service through the ingress, as an OpenAPI document.
async fn get_openapi(
    State(state): State<ApiState>,
    name: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path(name) = name?;
    let registry = read_registry(&state.metadata).await?;
    let (_, service) = registry.active_service(&name).ok_or_else(|| service_not_found(&name))?;
    Ok(Json(crate::openapi::service_openapi(&service.manifest, service.revision)).into_response())
}

async fn list_handlers(
    State(state): State<ApiState>,
    name: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path(name) = name?;
    let service = active_service(&state, &name).await?;
    Ok(Json(serde_json::json!({ "handlers": service.handlers })).into_response())
}

async fn get_handler(
    State(state): State<ApiState>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path((name, handler)) = path?;
    let service = active_service(&state, &name).await?;
    let found = service
        .handlers
        .into_iter()
        .find(|h| h.name == handler)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                format!("The requested handler '{handler}' on service '{name}' does not exist"),
            )
        })?;
    Ok(Json(found).into_response())
}

#[cfg(test)]
#[path = "deployments_tests.rs"]
mod tests;
