//! The OpenAPI document as served. utoipa builds it from the handlers'
//! annotations (each lists the answers only it gives); what holds for every
//! operation is added here, once: the problem+json schema on every error
//! answer, 401 and 503 on every authenticated operation, the
//! `Idempotency-Key` header and its answers on every POST, the JSON body
//! answers, and the limits that come from the settings. schemathesis checks
//! the result against the running server in the test command.

use serde_json::{Value, json};

use crate::config::ApiSettings;
use crate::idempotency;
use crate::problem::PROBLEM_JSON as PROBLEM;

/// The served document: `generated` (utoipa's) completed for `settings`.
pub fn document(generated: &utoipa::openapi::OpenApi, settings: &ApiSettings) -> Value {
    let mut doc = serde_json::to_value(generated).unwrap_or_default();
    state_runtime_constraints(&mut doc, settings);
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else { return doc };
    for item in paths.values_mut() {
        let Some(item) = item.as_object_mut() else { continue };
        for (method, operation) in item.iter_mut() {
            complete_operation(method, operation, settings);
        }
    }
    doc
}

/// Constraints whose values live elsewhere than in the types: the image
/// limit (a setting), the label sets (`label_sets.json`), and the bodies
/// that must not be empty.
fn state_runtime_constraints(doc: &mut Value, settings: &ApiSettings) {
    let schemas = &mut doc["components"]["schemas"];
    schemas["CreateStudy"]["properties"]["content_length"]["maximum"] = json!(settings.max_image_bytes);
    let sets = cxr_platform::domain::LabelSets::builtin();
    let names: Vec<&str> = sets.iter().map(|s| s.name.as_str()).collect();
    let mut labels: Vec<&str> = sets.iter().flat_map(|s| s.labels.iter().map(String::as_str)).collect();
    labels.sort_unstable();
    labels.dedup();
    schemas["CreateAnnotation"]["properties"]["label_set"]["enum"] = json!(names);
    for body in ["CreateAnnotation", "UpdateAnnotation"] {
        let label = &mut schemas[body]["properties"]["label"];
        // `label` may be `["string", "null"]` (optional in a PATCH): keep null allowed.
        let mut allowed: Vec<Value> = labels.iter().map(|l| json!(l)).collect();
        if label["type"].as_array().is_some_and(|t| t.iter().any(|t| t == "null")) {
            allowed.push(Value::Null);
        }
        label["enum"] = Value::Array(allowed);
    }
    // A PATCH changes something.
    schemas["UpdateAnnotation"]["minProperties"] = json!(1);
}

fn complete_operation(method: &str, operation: &mut Value, settings: &ApiSettings) {
    let public = operation["security"].as_array().is_some_and(|s| s.iter().all(|r| r.as_object().is_some_and(|o| o.is_empty())));
    let json_body = operation.pointer("/requestBody/content/application~1json").is_some();
    if let Some(binary) = operation.pointer_mut("/requestBody/content/application~1octet-stream/schema") {
        binary["minLength"] = json!(1);
    }
    let mut add = |status: u16, description: &str| add_response(operation, status, description);
    if !public {
        add(401, "No or unknown credentials (checked before anything else)");
        add(503, "A backing service is unavailable; retry after Retry-After");
    }
    if json_body {
        add(400, "Malformed JSON body, or a field of the wrong type");
        add(415, "The body is not application/json");
    }
    if method == "post" {
        add(400, "Malformed Idempotency-Key");
        add(409, "A request with this Idempotency-Key is still being handled");
        add(413, &format!("Body over {} bytes", settings.predict_max_bytes));
        add(422, "Idempotency-Key used before for another request");
        add_idempotency_key(operation);
    }
    if let Some(responses) = operation["responses"].as_object_mut() {
        for (status, response) in responses.iter_mut() {
            let status: u16 = status.parse().unwrap_or(0);
            if status >= 400 {
                describe_problem(response, status);
            }
        }
    }
}

/// Adds a response unless the operation documents this status already
/// (its own description is the more specific one).
fn add_response(operation: &mut Value, status: u16, description: &str) {
    let responses = &mut operation["responses"];
    let key = status.to_string();
    if responses.get(&key).is_none() {
        responses[key] = json!({ "description": description });
    }
}

/// An error answer: a problem+json body, and the headers that go with its status.
fn describe_problem(response: &mut Value, status: u16) {
    let content = &mut response["content"];
    if content.as_object().is_some_and(|c| !c.is_empty() && !c.contains_key(PROBLEM)) {
        return; // an error with a body of its own (the health report)
    }
    content[PROBLEM] = json!({ "schema": { "$ref": "#/components/schemas/Problem" } });
    let header = match status {
        401 => Some(("WWW-Authenticate", "`Bearer`")),
        429 | 503 => Some(("Retry-After", "Seconds to wait before retrying")),
        _ => None,
    };
    if let Some((name, description)) = header {
        response["headers"][name] = json!({ "description": description, "required": true, "schema": { "type": "string" } });
    }
}

fn add_idempotency_key(operation: &mut Value) {
    let parameters = &mut operation["parameters"];
    if !parameters.is_array() {
        *parameters = json!([]);
    }
    let Some(parameters) = parameters.as_array_mut() else { return };
    parameters.retain(|p| !p["name"].as_str().is_some_and(|n| n.eq_ignore_ascii_case(idempotency::HEADER)));
    parameters.push(json!({
        "name": "Idempotency-Key",
        "in": "header",
        "required": false,
        "description": "Makes retries of this request safe: a retry with the same key and body gets the first answer again (Idempotent-Replayed: true) and creates nothing twice",
        "schema": { "type": "string", "minLength": 1, "maxLength": idempotency::KEY_MAX_LEN, "pattern": idempotency::KEY_PATTERN },
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_answer_is_a_problem_and_authenticated_operations_list_401_and_503() {
        let (_, generated) = crate::app::routes();
        let doc = document(&generated, &ApiSettings::for_tests(Default::default(), "cxr"));
        let mut operations = 0;
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for (method, operation) in item.as_object().expect("item") {
                operations += 1;
                let responses = operation["responses"].as_object().expect("responses");
                if path != "/v1/health" {
                    assert!(responses.contains_key("401") && responses.contains_key("503"), "{method} {path}");
                }
                for (status, response) in responses {
                    if status.as_str() >= "400" && path != "/v1/health" {
                        assert!(response["content"][PROBLEM]["schema"]["$ref"].is_string(), "{method} {path} {status}");
                    }
                }
                if method == "post" {
                    let key = operation["parameters"].as_array().expect("parameters").iter().find(|p| p["name"] == "Idempotency-Key").expect("key");
                    assert_eq!(key["schema"]["maxLength"], idempotency::KEY_MAX_LEN);
                }
            }
        }
        assert_eq!(operations, 12);
        assert_eq!(doc["components"]["schemas"]["CreateStudy"]["properties"]["content_length"]["maximum"], cxr_infer::MAX_IMAGE_BYTES);
    }
}
