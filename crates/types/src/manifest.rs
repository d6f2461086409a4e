//! The endpoint manifest an SDK deployment answers discovery with (`GET /discover`), and the
//! checks the runtime applies before a deployment is registered. Shared by the admin API
//! (registration) and the ingress (input rules), so both judge a request the same way.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

/// The service protocol versions this server speaks.
pub const SUPPORTED_PROTOCOL_VERSIONS: std::ops::RangeInclusive<u32> = 5..=7;

/// Manifest media types, by version: `application/vnd.restate.endpointmanifest.vN+json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ManifestVersion {
    V1 = 1,
    V2 = 2,
    V3 = 3,
    V4 = 4,
}

impl ManifestVersion {
    pub const ALL: [ManifestVersion; 4] = [Self::V1, Self::V2, Self::V3, Self::V4];

    pub fn content_type(self) -> String {
        format!("application/vnd.restate.endpointmanifest.v{}+json", self as u8)
    }

    /// The version whose media type is exactly `content_type` (surrounding whitespace aside).
    pub fn from_content_type(content_type: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|version| version.content_type() == content_type.trim())
    }

    /// The `accept` header of a discovery request: every version we read, ascending.
    pub fn accept_header() -> String {
        Self::ALL.map(Self::content_type).join(", ")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ProtocolMode {
    BidiStream,
    RequestResponse,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ServiceType {
    Service,
    VirtualObject,
    Workflow,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum HandlerType {
    Workflow,
    Exclusive,
    Shared,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OnMaxAttempts {
    Pause,
    Kill,
}

/// Timeouts, retention, state loading and retry settings; the same keys on services and
/// handlers (a handler's value wins).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Settings {
    pub inactivity_timeout: Option<u64>,
    pub abort_timeout: Option<u64>,
    pub journal_retention: Option<u64>,
    pub idempotency_retention: Option<u64>,
    pub enable_lazy_state: Option<bool>,
    pub ingress_private: Option<bool>,
    pub retry_policy_initial_interval: Option<u64>,
    pub retry_policy_max_interval: Option<u64>,
    pub retry_policy_max_attempts: Option<u64>,
    pub retry_policy_exponentiation_factor: Option<f64>,
    pub retry_policy_on_max_attempts: Option<OnMaxAttempts>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InputPayload {
    pub required: Option<bool>,
    pub content_type: Option<String>,
    pub json_schema: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OutputPayload {
    pub content_type: Option<String>,
    pub set_content_type_if_empty: Option<bool>,
    pub json_schema: Option<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HandlerManifest {
    pub name: String,
    pub ty: Option<HandlerType>,
    pub documentation: Option<String>,
    pub metadata: Option<BTreeMap<String, String>>,
    pub input: Option<InputPayload>,
    pub output: Option<OutputPayload>,
    pub workflow_completion_retention: Option<u64>,
    #[serde(flatten)]
    pub settings: Settings,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceManifest {
    pub name: String,
    pub ty: ServiceType,
    pub handlers: Vec<HandlerManifest>,
    pub documentation: Option<String>,
    pub metadata: Option<BTreeMap<String, String>>,
    #[serde(flatten)]
    pub settings: Settings,
}

/// What a deployment answers to discovery.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EndpointManifest {
    pub protocol_mode: Option<ProtocolMode>,
    pub min_protocol_version: i64,
    pub max_protocol_version: i64,
    pub lambda_compression: Option<String>,
    pub services: Vec<ServiceManifest>,
}

/// Why a manifest cannot be registered; each names the service/handler and the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("the manifest is not valid JSON for its schema: {0}")]
    Json(String),
    #[error("the manifest has no `protocolMode`: the deployment must say BIDI_STREAM or REQUEST_RESPONSE")]
    NoProtocolMode,
    #[error(
        "the deployment speaks service protocol versions {min}..={max}, this server {}..={} (META0012): \
         upgrade the SDK or the server",
        SUPPORTED_PROTOCOL_VERSIONS.start(),
        SUPPORTED_PROTOCOL_VERSIONS.end()
    )]
    ProtocolRange { min: i64, max: i64 },
    #[error(
        "service name `{0}` is invalid: names start with a letter (or `_` and a letter or digit) and use letters, digits, `.`, `_`, `-`"
    )]
    ServiceName(String),
    #[error("service name `{0}` is reserved (META0005): names must not start with `restate` or be `openapi`")]
    ReservedServiceName(String),
    #[error("service `{0}` appears twice in the manifest")]
    DuplicateService(String),
    #[error(
        "handler name `{service}/{handler}` is invalid: names start with a letter (or `_` and a letter or digit) and use letters, digits, `_`"
    )]
    HandlerName { service: String, handler: String },
    #[error("handler `{service}/{handler}` appears twice")]
    DuplicateHandler { service: String, handler: String },
    #[error("handler `{service}/{handler}` has type {handler_type:?}, which a {service_type:?} cannot have")]
    HandlerType {
        service: String,
        handler: String,
        service_type: ServiceType,
        handler_type: HandlerType,
    },
    #[error(
        "handler `{service}/{handler}`: `workflowCompletionRetention` is only for the WORKFLOW handler of a workflow"
    )]
    WorkflowRetention { service: String, handler: String },
    #[error("handler `{service}/{handler}`: `idempotencyRetention` is not allowed on a WORKFLOW handler")]
    IdempotencyOnWorkflow { service: String, handler: String },
    #[error("handler `{service}/{handler}` is public (`ingressPrivate: false`) in a private service")]
    PublicHandlerInPrivateService { service: String, handler: String },
    #[error(
        "handler `{service}/{handler}`: input content type `{content_type}` is not a valid pattern (type/sub, type/* or */*)"
    )]
    ContentTypePattern {
        service: String,
        handler: String,
        content_type: String,
    },
}

fn valid_name(name: &str, extra: &[char]) -> bool {
    let mut chars = name.chars();
    let start_ok = match chars.next() {
        Some(c) if c.is_ascii_alphabetic() => true,
        Some('_') => chars.next().is_some_and(|c| c.is_ascii_alphanumeric()),
        _ => false,
    };
    start_ok && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || extra.contains(&c))
}

/// A content-type pattern (`type/sub`, `type/*`, `*/*`), without parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ContentTypePattern {
    ty: String,
    sub: String,
}

impl ContentTypePattern {
    fn parse(pattern: &str) -> Option<Self> {
        let essence = pattern.split(';').next()?.trim();
        let (ty, sub) = essence.split_once('/')?;
        let (ty, sub) = (ty.trim(), sub.trim());
        if ty.is_empty() || sub.is_empty() || (ty == "*" && sub != "*") {
            return None;
        }
        Some(Self {
            ty: ty.to_owned(),
            sub: sub.to_owned(),
        })
    }

    /// Case-sensitive, parameters ignored.
    fn matches(&self, content_type: &str) -> bool {
        let essence = content_type.split(';').next().unwrap_or_default().trim();
        let Some((ty, sub)) = essence.split_once('/') else {
            return false;
        };
        (self.ty == "*" || self.ty == ty.trim()) && (self.sub == "*" || self.sub == sub.trim())
    }
}

impl ServiceType {
    /// The effective type of a handler declared with `declared` (None = the default).
    pub fn handler_type(self, declared: Option<HandlerType>) -> Option<HandlerType> {
        match (self, declared) {
            (ServiceType::Service, None | Some(HandlerType::Shared)) => Some(HandlerType::Shared),
            (ServiceType::VirtualObject, None | Some(HandlerType::Exclusive)) => Some(HandlerType::Exclusive),
            (ServiceType::VirtualObject, Some(HandlerType::Shared)) => Some(HandlerType::Shared),
            (ServiceType::Workflow, None | Some(HandlerType::Shared)) => Some(HandlerType::Shared),
            (ServiceType::Workflow, Some(HandlerType::Workflow)) => Some(HandlerType::Workflow),
            _ => None,
        }
    }
}

impl fmt::Display for ServiceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ServiceType::Service => "service",
            ServiceType::VirtualObject => "virtual_object",
            ServiceType::Workflow => "workflow",
        })
    }
}

impl EndpointManifest {
    pub fn from_json(bytes: &[u8]) -> Result<Self, ManifestError> {
        serde_json::from_slice(bytes).map_err(|e| ManifestError::Json(e.to_string()))
    }

    /// Applies the runtime's rules; returns the protocol mode the deployment declared.
    pub fn validate(&self) -> Result<ProtocolMode, ManifestError> {
        let mode = self.protocol_mode.ok_or(ManifestError::NoProtocolMode)?;
        let (min, max) = (self.min_protocol_version, self.max_protocol_version);
        let in_range = |v: i64| (1..=i64::from(i32::MAX)).contains(&v);
        let overlaps = min <= i64::from(*SUPPORTED_PROTOCOL_VERSIONS.end())
            && max >= i64::from(*SUPPORTED_PROTOCOL_VERSIONS.start());
        if !in_range(min) || !in_range(max) || min > max || !overlaps {
            return Err(ManifestError::ProtocolRange { min, max });
        }
        let mut names = BTreeSet::new();
        for service in &self.services {
            service.validate()?;
            if !names.insert(service.name.as_str()) {
                return Err(ManifestError::DuplicateService(service.name.clone()));
            }
        }
        Ok(mode)
    }
}

impl ServiceManifest {
    fn validate(&self) -> Result<(), ManifestError> {
        let name = &self.name;
        if !valid_name(name, &['.', '-']) {
            return Err(ManifestError::ServiceName(name.clone()));
        }
        if name.to_ascii_lowercase().starts_with("restate") || name == "openapi" {
            return Err(ManifestError::ReservedServiceName(name.clone()));
        }
        let mut handlers = BTreeSet::new();
        for handler in &self.handlers {
            let (service, handler_name) = (name.clone(), handler.name.clone());
            if !valid_name(&handler.name, &[]) {
                return Err(ManifestError::HandlerName {
                    service,
                    handler: handler_name,
                });
            }
            if !handlers.insert(handler.name.as_str()) {
                return Err(ManifestError::DuplicateHandler {
                    service,
                    handler: handler_name,
                });
            }
            let Some(effective) = self.ty.handler_type(handler.ty) else {
                return Err(ManifestError::HandlerType {
                    service,
                    handler: handler_name,
                    service_type: self.ty,
                    handler_type: handler.ty.unwrap_or(HandlerType::Shared),
                });
            };
            if handler.workflow_completion_retention.is_some() && effective != HandlerType::Workflow {
                return Err(ManifestError::WorkflowRetention {
                    service,
                    handler: handler_name,
                });
            }
            if handler.settings.idempotency_retention.is_some() && effective == HandlerType::Workflow {
                return Err(ManifestError::IdempotencyOnWorkflow {
                    service,
                    handler: handler_name,
                });
            }
            if self.settings.ingress_private == Some(true) && handler.settings.ingress_private == Some(false) {
                return Err(ManifestError::PublicHandlerInPrivateService {
                    service,
                    handler: handler_name,
                });
            }
            if let Some(content_type) = handler.input.as_ref().and_then(|i| i.content_type.as_ref())
                && ContentTypePattern::parse(content_type).is_none()
            {
                return Err(ManifestError::ContentTypePattern {
                    service,
                    handler: handler_name,
                    content_type: content_type.clone(),
                });
            }
        }
        Ok(())
    }
}

impl HandlerManifest {
    /// Whether a request with this `content-type` header and body passes the handler's input
    /// rules (any rule passing is enough).
    pub fn accepts_input(&self, content_type: Option<&str>, body_empty: bool) -> bool {
        let Some(input) = &self.input else {
            // No input information: an empty request, or anything with a content type.
            return (body_empty && content_type.is_none()) || content_type.is_some();
        };
        if !input.required.unwrap_or(false) && body_empty && content_type.is_none() {
            return true;
        }
        match (&input.content_type, content_type) {
            (Some(pattern), Some(actual)) => {
                let matches = ContentTypePattern::parse(pattern).is_some_and(|p| p.matches(actual));
                matches && (input.json_schema.is_none() || !body_empty)
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(services: serde_json::Value) -> EndpointManifest {
        let json = serde_json::json!({
            "protocolMode": "BIDI_STREAM",
            "minProtocolVersion": 5,
            "maxProtocolVersion": 6,
            "services": services,
        });
        EndpointManifest::from_json(json.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn a_typescript_style_manifest_is_accepted() {
        let m = manifest(serde_json::json!([
            {"name": "Greeter", "ty": "SERVICE", "handlers": [
                {"name": "greet", "input": {"required": false, "contentType": "application/json"},
                 "output": {"contentType": "application/json", "setContentTypeIfEmpty": false}}
            ]},
            {"name": "Counter", "ty": "VIRTUAL_OBJECT", "inactivityTimeout": 60000, "handlers": [
                {"name": "add", "ty": "EXCLUSIVE"}, {"name": "get", "ty": "SHARED"}
            ]},
            {"name": "Signup", "ty": "WORKFLOW", "handlers": [
                {"name": "run", "ty": "WORKFLOW", "workflowCompletionRetention": 86400000},
                {"name": "click"}
            ]}
        ]));
        assert_eq!(m.validate(), Ok(ProtocolMode::BidiStream));
        assert_eq!(m.services[1].settings.inactivity_timeout, Some(60_000));
        assert_eq!(
            m.services[2].ty.handler_type(m.services[2].handlers[1].ty),
            Some(HandlerType::Shared)
        );
    }

    #[test]
    fn bad_manifests_are_refused_naming_what_to_fix() {
        let no_mode =
            EndpointManifest::from_json(br#"{"minProtocolVersion":5,"maxProtocolVersion":5,"services":[]}"#).unwrap();
        assert_eq!(no_mode.validate(), Err(ManifestError::NoProtocolMode));
        let old = EndpointManifest::from_json(
            br#"{"protocolMode":"BIDI_STREAM","minProtocolVersion":1,"maxProtocolVersion":4,"services":[]}"#,
        )
        .unwrap();
        let error = old.validate().unwrap_err();
        assert!(
            error.to_string().contains("1..=4") && error.to_string().contains("META0012"),
            "{error}"
        );
        assert!(
            EndpointManifest::from_json(br#"{"minProtocolVersion":5,"maxProtocolVersion":5,"services":[],"x":1}"#)
                .is_err()
        );

        let refused = |services: serde_json::Value| manifest(services).validate().unwrap_err().to_string();
        assert!(
            refused(serde_json::json!([{"name": "restateInternal", "ty": "SERVICE", "handlers": []}]))
                .contains("reserved")
        );
        assert!(refused(serde_json::json!([{"name": "9lives", "ty": "SERVICE", "handlers": []}])).contains("invalid"));
        assert!(
            refused(
                serde_json::json!([{"name": "S", "ty": "SERVICE", "handlers": [{"name": "h", "ty": "EXCLUSIVE"}]}])
            )
            .contains("which a Service cannot have")
        );
        assert!(
            refused(serde_json::json!([{"name": "S", "ty": "SERVICE", "handlers": [{"name": "h", "workflowCompletionRetention": 1}]}]))
                .contains("workflowCompletionRetention")
        );
        assert!(
            refused(serde_json::json!([{"name": "W", "ty": "WORKFLOW", "handlers": [{"name": "run", "ty": "WORKFLOW", "idempotencyRetention": 1}]}]))
                .contains("idempotencyRetention")
        );
        assert!(
            refused(serde_json::json!([{"name": "P", "ty": "SERVICE", "ingressPrivate": true, "handlers": [{"name": "h", "ingressPrivate": false}]}]))
                .contains("private service")
        );
        assert!(
            refused(serde_json::json!([{"name": "S", "ty": "SERVICE", "handlers": [{"name": "h", "input": {"contentType": "*/json"}}]}]))
                .contains("not a valid pattern")
        );
        assert!(
            refused(serde_json::json!([{"name": "S", "ty": "SERVICE", "handlers": []}, {"name": "S", "ty": "SERVICE", "handlers": []}]))
                .contains("twice")
        );
    }

    #[test]
    fn input_rules_follow_the_reference() {
        let handler = |input: Option<serde_json::Value>| HandlerManifest {
            name: "h".into(),
            ty: None,
            documentation: None,
            metadata: None,
            input: input.map(|i| serde_json::from_value(i).unwrap()),
            output: None,
            workflow_completion_retention: None,
            settings: Settings::default(),
        };
        let anything = handler(None);
        assert!(anything.accepts_input(None, true));
        assert!(anything.accepts_input(Some("text/plain"), false));
        assert!(!anything.accepts_input(None, false));

        let json = handler(Some(
            serde_json::json!({"required": false, "contentType": "application/json"}),
        ));
        assert!(json.accepts_input(None, true));
        assert!(json.accepts_input(Some("application/json; charset=utf-8"), false));
        assert!(
            json.accepts_input(Some("application/json"), true),
            "no schema: empty body allowed"
        );
        assert!(!json.accepts_input(Some("text/plain"), false));
        assert!(!json.accepts_input(Some("Application/JSON"), false), "case-sensitive");

        let schema = handler(Some(
            serde_json::json!({"required": true, "contentType": "application/*", "jsonSchema": {"type": "string"}}),
        ));
        assert!(!schema.accepts_input(None, true), "required");
        assert!(
            !schema.accepts_input(Some("application/json"), true),
            "a schema needs a body"
        );
        assert!(schema.accepts_input(Some("application/json"), false));
    }

    #[test]
    fn manifest_media_types() {
        assert_eq!(
            ManifestVersion::accept_header(),
            "application/vnd.restate.endpointmanifest.v1+json, application/vnd.restate.endpointmanifest.v2+json, \
             application/vnd.restate.endpointmanifest.v3+json, application/vnd.restate.endpointmanifest.v4+json"
        );
        assert_eq!(
            ManifestVersion::from_content_type("application/vnd.restate.endpointmanifest.v3+json"),
            Some(ManifestVersion::V3)
        );
        assert_eq!(ManifestVersion::from_content_type("application/json"), None);
    }
}
