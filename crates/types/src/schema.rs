//! The schema registry: every registered SDK deployment and the services it provides, kept
//! under [`crate::metadata::SCHEMA_REGISTRY_KEY`] in the metadata store so that every node
//! routes and validates invocations against the same schema.
//!
//! The registration rules live here, free of HTTP and storage, so they can be applied inside
//! a read-modify-write of the metadata store and tested on their own.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::DeploymentId;
use crate::manifest::{HandlerType, ProtocolMode, ServiceManifest, ServiceType};

/// The registry as stored (JSON) under `schema_registry`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SchemaRegistry {
    /// In registration order; an overwritten deployment keeps its place.
    #[serde(default)]
    pub deployments: Vec<Deployment>,
    /// Per service name, the highest revision over all deployments: where new invocations go.
    #[serde(default)]
    pub active_service_revisions: BTreeMap<String, ActiveRevision>,
}

/// The revision of a service that new invocations use, and the deployment serving it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActiveRevision {
    pub revision: u32,
    pub deployment_id: DeploymentId,
}

/// The HTTP version invocations of a deployment use (the one discovery negotiated).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeploymentHttpVersion {
    #[serde(rename = "HTTP/1.1")]
    Http11,
    #[serde(rename = "HTTP/2.0")]
    Http2,
}

impl DeploymentHttpVersion {
    /// The text the admin API shows, e.g. `HTTP/2.0`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http11 => "HTTP/1.1",
            Self::Http2 => "HTTP/2.0",
        }
    }
}

/// A registered HTTP deployment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deployment {
    pub id: DeploymentId,
    /// Normalized address; with `additional_headers` it is the deployment's identity.
    pub uri: String,
    #[serde(default)]
    pub additional_headers: BTreeMap<String, String>,
    #[serde(default)]
    pub use_http_11: bool,
    pub http_version: DeploymentHttpVersion,
    pub protocol_type: ProtocolMode,
    pub min_protocol_version: i64,
    pub max_protocol_version: i64,
    pub sdk_version: Option<String>,
    /// RFC 3339 with nanoseconds, UTC.
    pub created_at: String,
    pub services: Vec<DeploymentService>,
}

/// A service as one deployment provides it, at the revision it got when registered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeploymentService {
    pub revision: u32,
    pub manifest: ServiceManifest,
    /// Settings changed through the admin API (`PATCH /services/{s}`) while this revision was
    /// active. They belong to this revision only: a new revision starts from its manifest.
    #[serde(default, skip_serializing_if = "ServiceOverrides::is_empty")]
    pub overrides: ServiceOverrides,
}

/// Service settings set through the admin API; `None` keeps the manifest's value.
/// Durations are in milliseconds, as in the manifest.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceOverrides {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_retention: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub journal_retention: Option<u64>,
    /// Workflows only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow_completion_retention: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inactivity_timeout: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort_timeout: Option<u64>,
}

impl ServiceOverrides {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Applies `newer` on top: the fields it sets win, the others stay.
    pub fn merge(&mut self, newer: &Self) {
        fn take<T: Copy>(slot: &mut Option<T>, newer: Option<T>) {
            if newer.is_some() {
                *slot = newer;
            }
        }
        take(&mut self.public, newer.public);
        take(&mut self.idempotency_retention, newer.idempotency_retention);
        take(&mut self.journal_retention, newer.journal_retention);
        take(
            &mut self.workflow_completion_retention,
            newer.workflow_completion_retention,
        );
        take(&mut self.inactivity_timeout, newer.inactivity_timeout);
        take(&mut self.abort_timeout, newer.abort_timeout);
    }
}

impl DeploymentService {
    /// A service as a deployment announced it, before any revision is assigned.
    pub fn new(manifest: ServiceManifest) -> Self {
        Self {
            revision: 0,
            manifest,
            overrides: ServiceOverrides::default(),
        }
    }

    /// The manifest with the admin API's overrides applied: what invocations of this revision
    /// use and what the admin API shows. A service made private makes all its handlers
    /// private; made public, handlers that are not private themselves become public.
    pub fn effective_manifest(&self) -> ServiceManifest {
        let mut manifest = self.manifest.clone();
        let overrides = &self.overrides;
        let settings = &mut manifest.settings;
        if let Some(public) = overrides.public {
            settings.ingress_private = Some(!public);
        }
        let set = |slot: &mut Option<u64>, value: Option<u64>| {
            if value.is_some() {
                *slot = value;
            }
        };
        set(&mut settings.idempotency_retention, overrides.idempotency_retention);
        set(&mut settings.journal_retention, overrides.journal_retention);
        set(&mut settings.inactivity_timeout, overrides.inactivity_timeout);
        set(&mut settings.abort_timeout, overrides.abort_timeout);
        let service_ty = manifest.ty;
        for handler in &mut manifest.handlers {
            if overrides.public == Some(false) {
                handler.settings.ingress_private = Some(true);
            }
            if overrides.workflow_completion_retention.is_some()
                && service_ty.handler_type(handler.ty) == Some(HandlerType::Workflow)
            {
                handler.workflow_completion_retention = overrides.workflow_completion_retention;
            }
        }
        manifest
    }
}

/// What a registration may do beyond adding a new deployment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RegisterFlags {
    /// Overwrite an existing deployment with the same identity, and allow breaking changes.
    pub force: bool,
    /// Allow breaking changes, without overwriting.
    pub breaking: bool,
}

/// How a registration changed the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registered {
    /// A new deployment was added.
    Created(DeploymentId),
    /// A deployment with the same identity exists and was not forced: nothing changed.
    Unchanged(DeploymentId),
    /// An existing deployment was re-discovered under its id and its services replaced.
    Overwritten(DeploymentId),
}

impl Registered {
    /// The deployment the answer describes, whatever the outcome.
    pub fn id(self) -> DeploymentId {
        match self {
            Self::Created(id) | Self::Unchanged(id) | Self::Overwritten(id) => id,
        }
    }
}

/// Why a registration is refused by the registry (the manifest itself was valid).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemaError {
    #[error(
        "detected a new service revision for '{service}' changing the service type from previous revision. \
         Service type cannot be changed across revisions."
    )]
    ServiceTypeChanged {
        service: String,
        previous: ServiceType,
        new: ServiceType,
    },
}

impl SchemaError {
    /// The Restate error code the admin API reports.
    pub fn code(&self) -> &'static str {
        match self {
            Self::ServiceTypeChanged { .. } => "META0006",
        }
    }
}

/// Why `PATCH /services/{s}` is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModifyServiceError {
    #[error("The requested service '{0}' does not exist")]
    UnknownService(String),
    #[error("workflow_completion_retention can be set only on workflows, and '{0}' is not a workflow")]
    NotAWorkflow(String),
}

impl SchemaRegistry {
    /// The newest deployment with this address and these headers.
    pub fn find_by_identity(&self, uri: &str, additional_headers: &BTreeMap<String, String>) -> Option<&Deployment> {
        self.deployments
            .iter()
            .rev()
            .find(|d| d.uri == uri && d.additional_headers == *additional_headers)
    }

    /// Looks a deployment up by id (`GET /deployments/{id}`, and to answer a registration).
    pub fn deployment(&self, id: DeploymentId) -> Option<&Deployment> {
        self.deployments.iter().find(|d| d.id == id)
    }

    /// The active revision of `name`: its deployment and the service as registered there.
    pub fn active_service(&self, name: &str) -> Option<(&Deployment, &DeploymentService)> {
        let active = self.active_service_revisions.get(name)?;
        let deployment = self.deployment(active.deployment_id)?;
        let service = deployment
            .services
            .iter()
            .find(|s| s.manifest.name == name && s.revision == active.revision)?;
        Some((deployment, service))
    }

    /// Every active service, by name.
    pub fn active_services(&self) -> Vec<(&Deployment, &DeploymentService)> {
        self.active_service_revisions
            .keys()
            .filter_map(|name| self.active_service(name))
            .collect()
    }

    /// Registers `candidate` (a discovered deployment; the revisions of its services are
    /// assigned here). With the same identity as an existing deployment it is returned
    /// unchanged unless `force`, which keeps the existing id and replaces its services.
    /// A changed service type is refused unless `force` or `breaking`.
    pub fn register(&mut self, mut candidate: Deployment, flags: RegisterFlags) -> Result<Registered, SchemaError> {
        let existing = self
            .find_by_identity(&candidate.uri, &candidate.additional_headers)
            .map(|d| (d.id, d.created_at.clone()));
        if let Some((id, _)) = existing
            && !flags.force
        {
            return Ok(Registered::Unchanged(id));
        }
        let allow_breaking = flags.force || flags.breaking;
        for service in &mut candidate.services {
            let name = &service.manifest.name;
            let previous = self.active_service(name).map(|(_, s)| (s.revision, s.manifest.ty));
            if let Some((_, previous_ty)) = previous
                && previous_ty != service.manifest.ty
                && !allow_breaking
            {
                return Err(SchemaError::ServiceTypeChanged {
                    service: name.clone(),
                    previous: previous_ty,
                    new: service.manifest.ty,
                });
            }
            service.revision = previous.map_or(1, |(revision, _)| revision.saturating_add(1));
        }
        let outcome = match existing {
            Some((id, created_at)) => {
                candidate.id = id;
                candidate.created_at = created_at;
                if let Some(slot) = self.deployments.iter_mut().find(|d| d.id == id) {
                    *slot = candidate;
                }
                Registered::Overwritten(id)
            }
            None => {
                let id = candidate.id;
                self.deployments.push(candidate);
                Registered::Created(id)
            }
        };
        self.recompute_active();
        Ok(outcome)
    }

    /// Removes a deployment and recomputes the active revisions: a service it alone provided
    /// disappears, otherwise the highest remaining revision becomes active. Returns the
    /// removed deployment, `None` if the id is unknown.
    pub fn remove_deployment(&mut self, id: DeploymentId) -> Option<Deployment> {
        let index = self.deployments.iter().position(|d| d.id == id)?;
        let removed = self.deployments.remove(index);
        self.recompute_active();
        Some(removed)
    }

    /// Applies `changes` to the settings of the active revision of `name` (kept until the next
    /// registration of that service gives it a new revision).
    pub fn modify_service(&mut self, name: &str, changes: &ServiceOverrides) -> Result<(), ModifyServiceError> {
        let unknown = || ModifyServiceError::UnknownService(name.to_owned());
        let active = *self.active_service_revisions.get(name).ok_or_else(unknown)?;
        let service = self
            .deployments
            .iter_mut()
            .find(|d| d.id == active.deployment_id)
            .and_then(|d| {
                d.services
                    .iter_mut()
                    .find(|s| s.manifest.name == name && s.revision == active.revision)
            })
            .ok_or_else(unknown)?;
        if changes.workflow_completion_retention.is_some() && service.manifest.ty != ServiceType::Workflow {
            return Err(ModifyServiceError::NotAWorkflow(name.to_owned()));
        }
        service.overrides.merge(changes);
        Ok(())
    }

    /// Rebuilds the active revision index: the highest revision of each name wins.
    fn recompute_active(&mut self) {
        let mut active: BTreeMap<String, ActiveRevision> = BTreeMap::new();
        for deployment in &self.deployments {
            for service in &deployment.services {
                let candidate = ActiveRevision {
                    revision: service.revision,
                    deployment_id: deployment.id,
                };
                active
                    .entry(service.manifest.name.clone())
                    .and_modify(|current| {
                        if candidate.revision > current.revision {
                            *current = candidate;
                        }
                    })
                    .or_insert(candidate);
            }
        }
        self.active_service_revisions = active;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Settings;

    fn service(name: &str, ty: ServiceType) -> DeploymentService {
        DeploymentService::new(ServiceManifest {
            name: name.into(),
            ty,
            handlers: vec![],
            documentation: None,
            metadata: None,
            settings: Settings::default(),
        })
    }

    fn deployment(uri: &str, services: Vec<DeploymentService>) -> Deployment {
        Deployment {
            id: DeploymentId::generate(),
            uri: uri.into(),
            additional_headers: BTreeMap::new(),
            use_http_11: false,
            http_version: DeploymentHttpVersion::Http2,
            protocol_type: ProtocolMode::BidiStream,
            min_protocol_version: 5,
            max_protocol_version: 7,
            sdk_version: None,
            created_at: "2026-01-01T00:00:00.000000000Z".into(),
            services,
        }
    }

    fn revisions(registry: &SchemaRegistry) -> Vec<(String, u32, DeploymentId)> {
        registry
            .active_service_revisions
            .iter()
            .map(|(name, a)| (name.clone(), a.revision, a.deployment_id))
            .collect()
    }

    #[test]
    fn new_services_get_revision_one_and_later_deployments_the_next() {
        let mut registry = SchemaRegistry::default();
        let first = deployment("http://a/", vec![service("Greeter", ServiceType::Service)]);
        let first_id = registry.register(first, RegisterFlags::default()).unwrap();
        assert!(matches!(first_id, Registered::Created(_)));
        let second = deployment(
            "http://b/",
            vec![
                service("Greeter", ServiceType::Service),
                service("Counter", ServiceType::VirtualObject),
            ],
        );
        let second_id = registry.register(second, RegisterFlags::default()).unwrap().id();
        assert_eq!(
            revisions(&registry),
            vec![("Counter".into(), 1, second_id), ("Greeter".into(), 2, second_id)]
        );
        // The old deployment keeps its revision.
        let old = registry.deployment(first_id.id()).unwrap();
        assert_eq!(old.services[0].revision, 1);
        assert_eq!(registry.active_services().len(), 2);
    }

    #[test]
    fn same_identity_is_unchanged_unless_forced_and_force_keeps_the_id() {
        let mut registry = SchemaRegistry::default();
        let original = deployment("http://a/", vec![service("Greeter", ServiceType::Service)]);
        let id = registry.register(original, RegisterFlags::default()).unwrap().id();
        let before = registry.clone();

        let again = deployment("http://a/", vec![service("Greeter", ServiceType::Service)]);
        assert_eq!(
            registry.register(again, RegisterFlags::default()),
            Ok(Registered::Unchanged(id))
        );
        assert_eq!(registry, before);

        // Other headers: another deployment.
        let mut with_headers = deployment("http://a/", vec![service("Other", ServiceType::Service)]);
        with_headers.additional_headers.insert("x-a".into(), "1".into());
        let other = registry.register(with_headers, RegisterFlags::default()).unwrap();
        assert!(matches!(other, Registered::Created(o) if o != id));

        let forced = deployment("http://a/", vec![service("Counter", ServiceType::VirtualObject)]);
        let flags = RegisterFlags {
            force: true,
            breaking: false,
        };
        assert_eq!(registry.register(forced, flags), Ok(Registered::Overwritten(id)));
        let replaced = registry.deployment(id).unwrap();
        assert_eq!(replaced.created_at, before.deployments[0].created_at);
        assert_eq!(replaced.services.len(), 1);
        // Greeter vanished with the overwrite; Counter is new.
        assert!(registry.active_service("Greeter").is_none());
        assert_eq!(registry.active_service_revisions["Counter"].revision, 1);

        let forced_again = deployment("http://a/", vec![service("Counter", ServiceType::VirtualObject)]);
        registry.register(forced_again, flags).unwrap();
        assert_eq!(registry.active_service_revisions["Counter"].revision, 2);
        assert_eq!(registry.deployments.len(), 2);
    }

    #[test]
    fn a_changed_service_type_needs_breaking_or_force() {
        let mut registry = SchemaRegistry::default();
        registry
            .register(
                deployment("http://a/", vec![service("Svc", ServiceType::Service)]),
                RegisterFlags::default(),
            )
            .unwrap();
        let before = registry.clone();
        let changed = || deployment("http://b/", vec![service("Svc", ServiceType::VirtualObject)]);
        let error = registry.register(changed(), RegisterFlags::default()).unwrap_err();
        assert_eq!(error.code(), "META0006");
        assert_eq!(
            error.to_string(),
            "detected a new service revision for 'Svc' changing the service type from previous revision. \
             Service type cannot be changed across revisions."
        );
        assert_eq!(registry, before, "a refused registration changes nothing");

        let breaking = RegisterFlags {
            force: false,
            breaking: true,
        };
        registry.register(changed(), breaking).unwrap();
        let (_, active) = registry.active_service("Svc").unwrap();
        assert_eq!((active.revision, active.manifest.ty), (2, ServiceType::VirtualObject));
    }

    #[test]
    fn removing_a_deployment_recomputes_the_active_revisions() {
        let mut registry = SchemaRegistry::default();
        let first = registry
            .register(
                deployment(
                    "http://a/",
                    vec![
                        service("Greeter", ServiceType::Service),
                        service("Counter", ServiceType::VirtualObject),
                    ],
                ),
                RegisterFlags::default(),
            )
            .unwrap()
            .id();
        let second = registry
            .register(
                deployment("http://b/", vec![service("Greeter", ServiceType::Service)]),
                RegisterFlags::default(),
            )
            .unwrap()
            .id();
        let third = registry
            .register(
                deployment("http://c/", vec![service("Greeter", ServiceType::Service)]),
                RegisterFlags::default(),
            )
            .unwrap()
            .id();
        assert_eq!(
            revisions(&registry),
            vec![("Counter".into(), 1, first), ("Greeter".into(), 3, third)]
        );

        // Removing an inactive revision changes nothing active.
        assert_eq!(registry.remove_deployment(second).map(|d| d.id), Some(second));
        assert_eq!(
            revisions(&registry),
            vec![("Counter".into(), 1, first), ("Greeter".into(), 3, third)]
        );
        // Removing the active one: the highest remaining revision takes over.
        registry.remove_deployment(third).unwrap();
        assert_eq!(
            revisions(&registry),
            vec![("Counter".into(), 1, first), ("Greeter".into(), 1, first)]
        );
        assert_eq!(registry.remove_deployment(third), None, "already gone");
        // The last deployment of a service: the service disappears.
        registry.remove_deployment(first).unwrap();
        assert!(registry.active_service_revisions.is_empty());
        assert!(registry.active_service("Greeter").is_none());
        assert!(registry.deployments.is_empty());
    }

    #[test]
    fn overrides_apply_to_the_active_revision_until_the_next_registration() {
        let mut registry = SchemaRegistry::default();
        let mut flow = service("Flow", ServiceType::Workflow);
        flow.manifest.handlers.push(crate::manifest::HandlerManifest {
            name: "run".into(),
            ty: Some(HandlerType::Workflow),
            documentation: None,
            metadata: None,
            input: None,
            output: None,
            workflow_completion_retention: None,
            settings: Settings::default(),
        });
        registry
            .register(
                deployment(
                    "http://a/",
                    vec![service("Greeter", ServiceType::Service), flow.clone()],
                ),
                RegisterFlags::default(),
            )
            .unwrap();

        let changes = ServiceOverrides {
            public: Some(false),
            inactivity_timeout: Some(300_000),
            ..ServiceOverrides::default()
        };
        registry.modify_service("Greeter", &changes).unwrap();
        // A later change keeps the earlier ones it does not touch.
        let more = ServiceOverrides {
            journal_retention: Some(3_600_000),
            ..ServiceOverrides::default()
        };
        registry.modify_service("Greeter", &more).unwrap();
        let (_, greeter) = registry.active_service("Greeter").unwrap();
        let effective = greeter.effective_manifest();
        assert_eq!(effective.settings.ingress_private, Some(true));
        assert_eq!(effective.settings.inactivity_timeout, Some(300_000));
        assert_eq!(effective.settings.journal_retention, Some(3_600_000));
        assert_eq!(
            greeter.manifest.settings,
            Settings::default(),
            "the manifest stays as discovered"
        );

        assert_eq!(
            registry.modify_service(
                "Greeter",
                &ServiceOverrides {
                    workflow_completion_retention: Some(1_000),
                    ..ServiceOverrides::default()
                }
            ),
            Err(ModifyServiceError::NotAWorkflow("Greeter".into()))
        );
        assert_eq!(
            registry.modify_service("Nope", &changes),
            Err(ModifyServiceError::UnknownService("Nope".into()))
        );
        let retention = ServiceOverrides {
            workflow_completion_retention: Some(7_200_000),
            ..ServiceOverrides::default()
        };
        registry.modify_service("Flow", &retention).unwrap();
        let (_, flow_active) = registry.active_service("Flow").unwrap();
        assert_eq!(
            flow_active.effective_manifest().handlers[0].workflow_completion_retention,
            Some(7_200_000)
        );

        // Stored with the registry, and read back.
        let back: SchemaRegistry = serde_json::from_value(serde_json::to_value(&registry).unwrap()).unwrap();
        assert_eq!(back, registry);

        // The next registration of Greeter: revision 2 from its manifest only.
        registry
            .register(
                deployment("http://b/", vec![service("Greeter", ServiceType::Service)]),
                RegisterFlags::default(),
            )
            .unwrap();
        let (_, greeter) = registry.active_service("Greeter").unwrap();
        assert_eq!(greeter.revision, 2);
        assert!(greeter.overrides.is_empty());
        assert_eq!(greeter.effective_manifest(), greeter.manifest);
        // Flow was not registered again: its override stays.
        let (_, flow_active) = registry.active_service("Flow").unwrap();
        assert_eq!(flow_active.overrides.workflow_completion_retention, Some(7_200_000));
    }

    #[test]
    fn the_registry_round_trips_through_json() {
        let mut registry = SchemaRegistry::default();
        registry
            .register(
                deployment("http://a/", vec![service("Svc", ServiceType::Workflow)]),
                RegisterFlags::default(),
            )
            .unwrap();
        let json = serde_json::to_value(&registry).unwrap();
        assert!(json["deployments"][0]["id"].as_str().unwrap().starts_with("dp_1"));
        assert_eq!(json["deployments"][0]["http_version"], "HTTP/2.0");
        let back: SchemaRegistry = serde_json::from_value(json).unwrap();
        assert_eq!(back, registry);
    }
}
