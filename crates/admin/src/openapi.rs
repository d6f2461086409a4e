//! `GET /services/{service}/openapi`: an OpenAPI 3.1 document of how to call a service through
//! the ingress, built from what its deployment declared at discovery (handlers, content types,
//! JSON schemas). The web UI's playground and API clients read it.

use restate_types::manifest::{HandlerManifest, ServiceManifest, ServiceType};
use serde_json::{Map, Value, json};

/// The document for `service` at `revision`.
pub(crate) fn service_openapi(service: &ServiceManifest, revision: u32) -> Value {
    let keyed = service.ty != ServiceType::Service;
    let service_private = service.settings.ingress_private.unwrap_or(false);
    let mut paths = Map::new();
    for handler in &service.handlers {
        if handler.settings.ingress_private.unwrap_or(service_private) {
            continue;
        }
        let base = match keyed {
            true => format!("/{}/{{key}}/{}", service.name, handler.name),
            false => format!("/{}/{}", service.name, handler.name),
        };
        paths.insert(base.clone(), json!({ "post": call(service, handler, keyed) }));
        paths.insert(format!("{base}/send"), json!({ "post": send(service, handler, keyed) }));
    }
    let mut info = json!({ "title": service.name, "version": revision.to_string() });
    if let Some(documentation) = &service.documentation {
        info["description"] = json!(documentation);
    }
    json!({
        "openapi": "3.1.0",
        "info": info,
        "paths": paths,
        "components": {
            "schemas": {
                "Error": {
                    "type": "object",
                    "properties": { "code": { "type": "integer" }, "message": { "type": "string" } },
                    "required": ["message"],
                },
            },
        },
    })
}

fn parameters(keyed: bool, send: bool) -> Vec<Value> {
    let mut parameters = Vec::new();
    if keyed {
        parameters.push(json!({
            "name": "key", "in": "path", "required": true, "schema": { "type": "string" },
            "description": "The key of the virtual object or workflow",
        }));
    }
    parameters.push(json!({
        "name": "idempotency-key", "in": "header", "required": false, "schema": { "type": "string" },
        "description": "Calls with the same key run once; later ones get the first one's result",
    }));
    if send {
        parameters.push(json!({
            "name": "delay", "in": "query", "required": false, "schema": { "type": "string" },
            "description": "Start the invocation after this long, e.g. 10s",
        }));
    }
    parameters
}

/// The request body the handler accepts, if any.
fn request_body(handler: &HandlerManifest) -> Option<Value> {
    let input = handler.input.as_ref();
    let content_type = match input {
        // No input declared: the handler takes any body.
        None => "*/*".to_owned(),
        Some(input) => input.content_type.clone()?,
    };
    let schema = input.and_then(|i| i.json_schema.clone()).unwrap_or_else(|| json!({}));
    let required = input.and_then(|i| i.required).unwrap_or(false);
    Some(json!({ "required": required, "content": { content_type: { "schema": schema } } }))
}

fn errors(responses: &mut Map<String, Value>) {
    let error = json!({
        "description": "Error",
        "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } },
    });
    responses.insert("default".into(), error);
}

fn operation(service: &ServiceManifest, handler: &HandlerManifest, keyed: bool, send: bool) -> Map<String, Value> {
    let mut operation = Map::new();
    let id = match send {
        true => format!("{}_send", handler.name),
        false => handler.name.clone(),
    };
    operation.insert("operationId".into(), json!(id));
    operation.insert("tags".into(), json!([service.name]));
    let summary = handler.documentation.clone().unwrap_or_else(|| handler.name.clone());
    operation.insert("summary".into(), json!(summary));
    operation.insert("parameters".into(), json!(parameters(keyed, send)));
    if let Some(body) = request_body(handler) {
        operation.insert("requestBody".into(), body);
    }
    operation
}

fn call(service: &ServiceManifest, handler: &HandlerManifest, keyed: bool) -> Value {
    let mut operation = operation(service, handler, keyed, false);
    let mut success = json!({ "description": "The handler's result" });
    if let Some(output) = &handler.output
        && let Some(content_type) = &output.content_type
    {
        let schema = output.json_schema.clone().unwrap_or_else(|| json!({}));
        success["content"] = json!({ content_type: { "schema": schema } });
    }
    let mut responses = Map::new();
    responses.insert("200".into(), success);
    errors(&mut responses);
    operation.insert("responses".into(), Value::Object(responses));
    Value::Object(operation)
}

fn send(service: &ServiceManifest, handler: &HandlerManifest, keyed: bool) -> Value {
    let mut operation = operation(service, handler, keyed, true);
    let accepted = json!({
        "description": "Accepted: the invocation runs in the background",
        "content": { "application/json": { "schema": {
            "type": "object",
            "properties": {
                "invocationId": { "type": "string" },
                "status": { "type": "string", "enum": ["Accepted", "PreviouslyAccepted"] },
            },
            "required": ["invocationId", "status"],
        } } },
    });
    let mut responses = Map::new();
    responses.insert("202".into(), accepted);
    errors(&mut responses);
    operation.insert("responses".into(), Value::Object(responses));
    Value::Object(operation)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(text: Value) -> ServiceManifest {
        serde_json::from_value(text).unwrap()
    }

    #[test]
    fn keyed_services_take_the_key_in_the_path_and_private_handlers_are_left_out() {
        let counter = manifest(json!({
            "name": "Counter", "ty": "VIRTUAL_OBJECT",
            "handlers": [
                {"name": "add", "ty": "EXCLUSIVE",
                 "input": {"contentType": "application/json", "jsonSchema": {"type": "number"}},
                 "output": {"contentType": "application/json"}},
                {"name": "reset", "ty": "EXCLUSIVE", "ingressPrivate": true},
            ],
        }));
        let document = service_openapi(&counter, 3);
        assert_eq!(document["info"], json!({"title": "Counter", "version": "3"}));
        let add = &document["paths"]["/Counter/{key}/add"]["post"];
        assert_eq!(add["operationId"], "add");
        assert_eq!(
            add["requestBody"]["content"]["application/json"]["schema"],
            json!({"type": "number"})
        );
        assert_eq!(add["parameters"][0]["name"], "key");
        assert!(add["responses"]["200"]["content"]["application/json"].is_object());
        let send = &document["paths"]["/Counter/{key}/add/send"]["post"];
        assert!(send["responses"]["202"].is_object());
        assert!(document["paths"].get("/Counter/{key}/reset").is_none());
    }

    #[test]
    fn a_service_without_declared_input_takes_any_body() {
        let greeter = manifest(json!({
            "name": "Greeter", "ty": "SERVICE",
            "handlers": [{"name": "greet"}],
        }));
        let document = service_openapi(&greeter, 1);
        let greet = &document["paths"]["/Greeter/greet"]["post"];
        assert!(greet["requestBody"]["content"]["*/*"].is_object(), "{greet}");
        assert_eq!(greet["parameters"].as_array().map(Vec::len), Some(1));
    }
}
