//! How long a new invocation keeps its result and journal: decided by whoever creates it (the
//! ingress, or a calling invocation on the worker), from the same configuration and schema.

use std::time::Duration;

use restate_config::Configuration;
use restate_types::manifest::HandlerType;
use restate_types::schema::DeploymentService;

use crate::model::{InvocationTarget, Retention};

/// The configured defaults (`default-*-retention`); services and handlers override them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionDefaults {
    pub idempotency: Duration,
    pub workflow_completion: Duration,
    pub journal: Duration,
}

impl RetentionDefaults {
    pub fn from_config(config: &Configuration) -> Self {
        Self {
            idempotency: config.default_idempotency_retention,
            workflow_completion: config.default_workflow_completion_retention,
            journal: config.default_journal_retention,
        }
    }

    /// How long (ms) a new invocation of `target` keeps its result and its journal once it
    /// ended, fixed at creation. A workflow's `run` keeps its result for the workflow completion
    /// retention and an idempotent one for the idempotency retention (duplicates must find it);
    /// their journal is kept no longer than that. Any other keeps both for the journal retention.
    pub fn retention_of(
        &self,
        service: &DeploymentService,
        target: &InvocationTarget,
        idempotency_key: Option<&str>,
    ) -> Retention {
        let handler = service.manifest.handlers.iter().find(|h| h.name == target.handler);
        let journal = handler
            .and_then(|h| h.settings.journal_retention)
            .or(service.overrides.journal_retention)
            .or(service.manifest.settings.journal_retention)
            .unwrap_or(self.journal.as_millis() as u64);
        let completion = if target.handler_type == HandlerType::Workflow {
            handler
                .and_then(|h| h.workflow_completion_retention)
                .or(service.overrides.workflow_completion_retention)
                .unwrap_or(self.workflow_completion.as_millis() as u64)
        } else if idempotency_key.is_some() {
            self.idempotency_retention_of(service, &target.handler)
        } else {
            return Retention {
                completion: journal,
                journal,
            };
        };
        Retention {
            completion,
            journal: journal.min(completion),
        }
    }

    /// How long (ms) an idempotent invocation of `handler` keeps its result: the handler's
    /// setting, the service's as the admin API overrode it, the manifest's, or ours.
    pub fn idempotency_retention_of(&self, service: &DeploymentService, handler: &str) -> u64 {
        let handler = service.manifest.handlers.iter().find(|h| h.name == handler);
        handler
            .and_then(|h| h.settings.idempotency_retention)
            .or(service.overrides.idempotency_retention)
            .or(service.manifest.settings.idempotency_retention)
            .unwrap_or(self.idempotency.as_millis() as u64)
    }
}
