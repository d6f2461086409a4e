//! Response shapes, defaults and duration parsing of the deployments API.

use restate_types::manifest::EndpointManifest;

use super::*;

/// What the TypeScript example (`examples/typescript`) answers to discovery, trimmed.
fn example_manifest() -> EndpointManifest {
    EndpointManifest::from_json(
        br#"{"protocolMode":"BIDI_STREAM","minProtocolVersion":5,"maxProtocolVersion":7,"services":[
          {"name":"Greeter","ty":"SERVICE","handlers":[{"name":"greet",
            "input":{"required":false,"contentType":"application/json"},
            "output":{"setContentTypeIfEmpty":false,"contentType":"application/json"}}]},
          {"name":"Counter","ty":"VIRTUAL_OBJECT","handlers":[
            {"name":"add","ty":"EXCLUSIVE","input":{"contentType":"application/json"},"output":{"contentType":"application/json"}},
            {"name":"get","ty":"SHARED","input":{"contentType":"application/json"},"output":{"contentType":"application/json"}}]},
          {"name":"Flow","ty":"WORKFLOW","ingressPrivate":true,"abortTimeout":90000,"retryPolicyMaxAttempts":3,
            "handlers":[{"name":"run","ty":"WORKFLOW","workflowCompletionRetention":3600000,"retryPolicyOnMaxAttempts":"KILL"}]}
        ]}"#,
    )
    .unwrap()
}

fn metadata_of(index: usize) -> serde_json::Value {
    let service = DeploymentService {
        revision: 1,
        ..DeploymentService::new(example_manifest().services[index].clone())
    };
    let id: DeploymentId = "dp_15XG8pQ441EfJoPWt4F7AT7".parse().unwrap();
    serde_json::to_value(service_metadata(id, &service)).unwrap()
}

#[test]
fn unset_settings_show_the_server_defaults() {
    assert_eq!(
        metadata_of(0),
        serde_json::json!({
            "name": "Greeter", "ty": "Service",
            "handlers": [{"name": "greet", "public": true, "input_description": "application/json",
              "output_description": "application/json", "retry_policy": {"max_attempts": null}}],
            "deployment_id": "dp_15XG8pQ441EfJoPWt4F7AT7", "revision": 1, "public": true,
            "idempotency_retention": "1d", "journal_retention": "1d", "inactivity_timeout": "1m",
            "abort_timeout": "10m", "enable_lazy_state": false,
            "retry_policy": {"initial_interval": "500ms", "exponentiation_factor": 2.0, "max_attempts": 70,
              "max_interval": "1m", "on_max_attempts": "Pause"}
        })
    );
    let counter = metadata_of(1);
    assert_eq!(counter["ty"], "VirtualObject");
    assert_eq!(counter["handlers"][0]["ty"], "Exclusive");
    assert_eq!(counter["handlers"][1]["ty"], "Shared");
}

#[test]
fn explicit_settings_override_the_defaults() {
    let flow = metadata_of(2);
    assert_eq!(flow["ty"], "Workflow");
    assert_eq!(flow["public"], false);
    assert_eq!(flow["abort_timeout"], "1m 30s");
    assert_eq!(flow["workflow_completion_retention"], "1h");
    assert_eq!(flow["retry_policy"]["max_attempts"], 3);
    let run = &flow["handlers"][0];
    assert_eq!(run["ty"], "Workflow");
    assert_eq!(run["public"], false);
    assert_eq!(run["input_description"], "any");
    assert_eq!(
        run["retry_policy"],
        serde_json::json!({"max_attempts": null, "on_max_attempts": "Kill"})
    );
    assert_eq!(run["workflow_completion_retention"], "1h");
}

#[test]
fn durations_are_friendly() {
    assert_eq!(friendly_duration(0), "0s");
    assert_eq!(friendly_duration(500), "500ms");
    assert_eq!(friendly_duration(86_400_000), "1d");
    assert_eq!(friendly_duration(90_061_001), "1d 1h 1m 1s 1ms");
}

#[test]
fn durations_are_accepted_friendly_or_iso8601() {
    assert_eq!(parse_duration("1h"), Ok(3_600_000));
    assert_eq!(parse_duration("30s"), Ok(30_000));
    assert_eq!(parse_duration("500ms"), Ok(500));
    assert_eq!(parse_duration("1h 30m"), Ok(5_400_000));
    assert_eq!(parse_duration("5 hours"), Ok(18_000_000));
    assert_eq!(parse_duration("1d"), Ok(86_400_000));
    assert_eq!(parse_duration("PT1H"), Ok(3_600_000));
    assert_eq!(parse_duration("P1DT12H"), Ok(129_600_000));
    assert_eq!(parse_duration("PT1M30.5S"), Ok(90_500));
    assert_eq!(parse_duration("P2W"), Ok(1_209_600_000));
    for bad in ["", "soon", "P", "PT", "P1M", "PT5", "P1H", "PT1X"] {
        let error = parse_duration(bad).unwrap_err();
        assert!(error.contains("PT1H30M"), "{bad}: {error}");
    }
    // Round trip with what GET shows.
    assert_eq!(parse_duration(&friendly_duration(90_061_001)), Ok(90_061_001));
}

#[test]
fn overrides_show_in_the_service_metadata() {
    let mut flow = DeploymentService {
        revision: 1,
        ..DeploymentService::new(example_manifest().services[2].clone())
    };
    let request: ModifyServiceRequest = serde_json::from_value(serde_json::json!({
        "public": true, "idempotency_retention": null, "journal_retention": "2h",
        "workflow_completion_retention": "PT3H", "inactivity_timeout": "5m", "abort_timeout": "30s"
    }))
    .unwrap();
    flow.overrides = request.overrides().unwrap();
    let id: DeploymentId = "dp_15XG8pQ441EfJoPWt4F7AT7".parse().unwrap();
    let shown = serde_json::to_value(service_metadata(id, &flow)).unwrap();
    assert_eq!(shown["public"], true);
    assert_eq!(shown["handlers"][0]["public"], true);
    assert_eq!(shown["idempotency_retention"], "1d");
    assert_eq!(shown["journal_retention"], "2h");
    assert_eq!(shown["workflow_completion_retention"], "3h");
    assert_eq!(shown["handlers"][0]["workflow_completion_retention"], "3h");
    assert_eq!(shown["inactivity_timeout"], "5m");
    assert_eq!(shown["abort_timeout"], "30s");

    let bad: ModifyServiceRequest = serde_json::from_value(serde_json::json!({"abort_timeout": "later"})).unwrap();
    let error = bad.overrides().unwrap_err();
    assert_eq!(error.status, StatusCode::BAD_REQUEST);
    assert!(
        error
            .message
            .starts_with("The request field 'abort_timeout' is invalid."),
        "{}",
        error.message
    );
}

#[test]
fn a_dry_run_registers_on_a_copy_only() {
    let registry = SchemaRegistry::default();
    let mut copy = registry.clone();
    let candidate = Deployment {
        id: DeploymentId::generate(),
        uri: "http://127.0.0.1:9080/".into(),
        additional_headers: BTreeMap::new(),
        use_http_11: false,
        http_version: DeploymentHttpVersion::Http2,
        protocol_type: restate_types::manifest::ProtocolMode::BidiStream,
        min_protocol_version: 5,
        max_protocol_version: 7,
        sdk_version: None,
        created_at: "2026-01-01T00:00:00.000000000Z".into(),
        services: vec![DeploymentService::new(example_manifest().services[0].clone())],
    };
    let outcome = copy.register(candidate, RegisterFlags::default()).unwrap();
    let response = serde_json::to_value(register_response(copy.deployment(outcome.id()).unwrap())).unwrap();
    assert_eq!(response["services"][0]["revision"], 1);
    assert!(registry.deployments.is_empty());
}

#[test]
fn errors_carry_the_restate_code() {
    let unreachable = ApiError::from(DiscoveryError::Unreachable {
        url: "http://127.0.0.1:1/discover".into(),
        reason: "connection refused".into(),
        use_http_11: false,
    });
    assert_eq!(
        (unreachable.status, unreachable.restate_code),
        (StatusCode::INTERNAL_SERVER_ERROR, Some("META0003"))
    );
    let range = ApiError::from(DiscoveryError::Manifest {
        url: "u".into(),
        error: ManifestError::ProtocolRange { min: 1, max: 2 },
    });
    assert_eq!(range.restate_code, Some("META0012"));
}
