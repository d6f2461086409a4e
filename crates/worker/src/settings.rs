//! Per-invocation settings: the node's configuration with each service's and handler's
//! manifest overrides (timeouts, retry policy, lazy state) on top.

use std::time::Duration;

use restate_config::{Configuration, OnMaxAttempts};
use restate_invoker::{AttemptError, ErrorBehavior};
use restate_service_protocol::ServiceProtocolVersion;
use restate_types::DeploymentId;
use restate_types::manifest;
use restate_types::schema::SchemaRegistry;

use restate_partition_api::RetentionDefaults;

use crate::model::{InvocationStatus, InvocationTarget, RetryPolicy};
use crate::processor::{PreparedAttempt, deployment_of};
use crate::wal::Effect;

#[derive(Debug, Clone)]
pub struct WorkerSettings {
    pub inactivity_timeout: Duration,
    pub abort_timeout: Duration,
    pub retry: RetryPolicy,
    pub max_protocol: ServiceProtocolVersion,
    pub message_size_limit: usize,
    pub retention: RetentionDefaults,
    pub cleanup_interval: Duration,
    /// Timers a leader holds in memory per partition.
    pub timers_in_memory: usize,
}

impl WorkerSettings {
    pub fn from_config(config: &Configuration) -> Self {
        let policy = &config.default_retry_policy;
        Self {
            inactivity_timeout: config.worker.invoker.inactivity_timeout,
            abort_timeout: config.worker.invoker.abort_timeout,
            retry: RetryPolicy {
                initial_interval: policy.initial_interval,
                factor: policy.exponentiation_factor,
                max_interval: policy.max_interval,
                max_attempts: policy.max_attempts.limit(),
                kill_on_max_attempts: policy.on_max_attempts == OnMaxAttempts::Kill,
            },
            max_protocol: match config.experimental_enable_protocol_v7 {
                true => ServiceProtocolVersion::V7,
                false => ServiceProtocolVersion::DEFAULT_MAX,
            },
            message_size_limit: usize::try_from(config.networking.message_size_limit.0).unwrap_or(usize::MAX),
            retention: RetentionDefaults::from_config(config),
            cleanup_interval: config.worker.cleanup_interval.max(Duration::from_millis(100)),
            timers_in_memory: config.worker.num_timers_in_memory_limit.max(1),
        }
    }

    /// The retry policy of a handler: the handler's keys, then the service's, then ours.
    pub fn retry_policy(&self, schema: &SchemaRegistry, target: &InvocationTarget) -> RetryPolicy {
        let mut policy = self.retry.clone();
        let Some((_, service)) = schema.active_service(&target.service) else {
            return policy;
        };
        let manifest = service.effective_manifest();
        let handler = manifest.handlers.iter().find(|h| h.name == target.handler);
        let pick = |get: &dyn Fn(&manifest::Settings) -> Option<u64>| {
            handler
                .and_then(|h| get(&h.settings))
                .or_else(|| get(&manifest.settings))
        };
        if let Some(ms) = pick(&|s| s.retry_policy_initial_interval) {
            policy.initial_interval = Duration::from_millis(ms);
        }
        if let Some(ms) = pick(&|s| s.retry_policy_max_interval) {
            policy.max_interval = Duration::from_millis(ms);
        }
        if let Some(max) = pick(&|s| s.retry_policy_max_attempts) {
            policy.max_attempts = Some(u32::try_from(max).unwrap_or(u32::MAX).max(1));
        }
        if let Some(factor) = handler
            .and_then(|h| h.settings.retry_policy_exponentiation_factor)
            .or(manifest.settings.retry_policy_exponentiation_factor)
        {
            policy.factor = factor;
        }
        if let Some(on_max) = handler
            .and_then(|h| h.settings.retry_policy_on_max_attempts)
            .or(manifest.settings.retry_policy_on_max_attempts)
        {
            policy.kill_on_max_attempts = on_max == manifest::OnMaxAttempts::Kill;
        }
        policy
    }

    /// Picks the deployment (the pinned one, else the service's active one), the protocol
    /// version and the timeouts of the next attempt.
    pub(crate) fn prepare(
        &self,
        schema: &SchemaRegistry,
        status: &InvocationStatus,
    ) -> Result<PreparedAttempt, AttemptError> {
        let unavailable = |message: String| AttemptError {
            code: 503,
            message,
            retry_after: None,
            behavior: ErrorBehavior::Retry,
        };
        let service_name = &status.target.service;
        let (deployment, manifest, pin) = match status.pinned {
            Some(pinned) => {
                let deployment = schema.deployment(DeploymentId(pinned.deployment_id)).ok_or_else(|| {
                    unavailable(format!(
                        "the deployment {} this invocation runs on was removed; register it again to let the invocation finish",
                        DeploymentId(pinned.deployment_id)
                    ))
                })?;
                let service = deployment
                    .services
                    .iter()
                    .rev()
                    .find(|s| &s.manifest.name == service_name)
                    .ok_or_else(|| unavailable(format!("the deployment no longer has service '{service_name}'")))?;
                let version = ServiceProtocolVersion::from_u32(pinned.protocol_version).ok_or_else(|| {
                    unavailable(format!("unknown pinned protocol version {}", pinned.protocol_version))
                })?;
                (deployment, service, (version, None))
            }
            None => {
                let (deployment, service) = schema.active_service(service_name).ok_or_else(|| {
                    unavailable(format!("no deployment serves '{service_name}' any more; register one"))
                })?;
                let max = self
                    .max_protocol
                    .as_u32()
                    .min(u32::try_from(deployment.max_protocol_version).unwrap_or(0));
                let version = ServiceProtocolVersion::from_u32(max)
                    .filter(|v| i64::from(v.as_u32()) >= deployment.min_protocol_version)
                    .ok_or_else(|| {
                        unavailable(format!(
                            "deployment {} speaks protocol {}..={}, this server {}..={}",
                            deployment.id,
                            deployment.min_protocol_version,
                            deployment.max_protocol_version,
                            ServiceProtocolVersion::MIN.as_u32(),
                            self.max_protocol.as_u32()
                        ))
                    })?;
                let pin = Effect::Pin {
                    deployment_id: deployment.id.0,
                    protocol_version: version.as_u32(),
                };
                (deployment, service, (version, Some(pin)))
            }
        };
        // By reference (this runs per attempt); the admin API may override the timeouts.
        let (overrides, manifest) = (&manifest.overrides, &manifest.manifest);
        let handler = manifest.handlers.iter().find(|h| h.name == status.target.handler);
        let (version, pin) = pin;
        // A handler's own value, then the service's as overridden, then the manifest's.
        let pick = |own: Option<u64>, overridden: Option<u64>, service: Option<u64>, default: Duration| {
            own.or(overridden).or(service).map_or(default, Duration::from_millis)
        };
        let inactivity = pick(
            handler.and_then(|h| h.settings.inactivity_timeout),
            overrides.inactivity_timeout,
            manifest.settings.inactivity_timeout,
            self.inactivity_timeout,
        );
        let abort = pick(
            handler.and_then(|h| h.settings.abort_timeout),
            overrides.abort_timeout,
            manifest.settings.abort_timeout,
            self.abort_timeout,
        );
        let lazy = handler
            .and_then(|h| h.settings.enable_lazy_state)
            .or(manifest.settings.enable_lazy_state)
            .unwrap_or(false);
        let mut attempt_deployment = deployment_of(deployment);
        if inactivity.is_zero() {
            attempt_deployment.request_response = true;
        }
        Ok(PreparedAttempt {
            deployment_id: deployment.id,
            server: deployment.sdk_version.clone(),
            deployment: attempt_deployment,
            version,
            pin,
            lazy_state: lazy,
            inactivity_timeout: if inactivity.is_zero() { abort } else { inactivity },
            abort_timeout: abort,
        })
    }
}
