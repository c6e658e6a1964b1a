//! Completes the generated OpenAPI document with what holds for every operation, so the
//! document states the real contract (schemathesis checks it): the answers the shared
//! layers give (400 for a malformed parameter or body, 401, 408, 413, 414, 415, 500, 503;
//! 422 where query or body content is validated),
//! the bounds of integer parameters, the configured page size, and the operational routes
//! served beside the API (`/federate`, `/metrics`, `/healthz`, `/readyz`), and the
//! `X-Request-Id` header every answer carries (`api::request_id`). Per-route annotations
//! say the rest; what they say is never replaced here.

use serde_json::{json, Map, Value};

const METHODS: [&str; 5] = ["get", "post", "put", "delete", "patch"];

fn request_id_header() -> Value {
    json!({
        "description": "The request's id: the client's own X-Request-Id when it is 1 to 64 \
                        characters of A-Z a-z 0-9 . _ -, else one generated. Also in the \
                        request's audit record and log lines.",
        "schema": {"type": "string", "pattern": "^[A-Za-z0-9._-]{1,64}$"}
    })
}

fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
    })
}

/// The document served at `/api/v1/openapi.json`: `doc` completed (see the module's
/// comment). `max_page` is `[api] max_page`, the largest `limit` a list takes.
pub fn complete(doc: &utoipa::openapi::OpenApi, max_page: usize) -> Value {
    // utoipa's document types serialize to JSON without fail (string keys, no floats).
    complete_json(
        serde_json::to_value(doc).unwrap_or_else(|_| json!({})),
        max_page,
    )
}

fn complete_json(mut doc: Value, max_page: usize) -> Value {
    if let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) {
        for item in paths.values_mut() {
            let Some(item) = item.as_object_mut() else {
                continue;
            };
            for method in METHODS {
                if let Some(op) = item.get_mut(method).and_then(Value::as_object_mut) {
                    complete_operation(op, max_page);
                }
            }
        }
        add_operational_routes(paths);
        for item in paths.values_mut() {
            for method in METHODS {
                let responses = item
                    .get_mut(method)
                    .and_then(|op| op.get_mut("responses"))
                    .and_then(Value::as_object_mut);
                for response in responses.into_iter().flat_map(|r| r.values_mut()) {
                    if let Some(r) = response.as_object_mut() {
                        let headers = r.entry("headers").or_insert_with(|| json!({}));
                        headers["X-Request-Id"] = request_id_header();
                    }
                }
            }
        }
    }
    if let Some(schemes) = doc
        .pointer_mut("/components/securitySchemes")
        .and_then(Value::as_object_mut)
    {
        schemes.insert(
            "scrape_token".into(),
            json!({"type": "http", "scheme": "bearer",
                   "description": "`[api] federation_token`, when one is configured"}),
        );
    }
    doc
}

fn complete_operation(op: &mut Map<String, Value>, max_page: usize) {
    let params_in = |place: &str| {
        op.get("parameters")
            .and_then(Value::as_array)
            .is_some_and(|ps| ps.iter().any(|p| place.is_empty() || p["in"] == place))
    };
    let has_params = params_in("");
    let has_query = params_in("query");
    let has_body = op.contains_key("requestBody");
    if let Some(params) = op.get_mut("parameters").and_then(Value::as_array_mut) {
        for p in params.iter_mut() {
            bound_parameter(p, max_page);
        }
    }
    let open = op
        .get("security")
        .and_then(Value::as_array)
        .is_some_and(|s| s.iter().any(|r| r.as_object().is_some_and(Map::is_empty)));
    let responses = op
        .entry("responses")
        .or_insert_with(|| json!({}))
        .as_object_mut();
    let Some(responses) = responses else { return };
    let mut add = |status: &str, description: &str| {
        responses
            .entry(status)
            .or_insert_with(|| error_response(description));
    };
    if has_params || has_body {
        add(
            "400",
            "The request does not fit this document: a malformed path or query parameter, \
             malformed JSON, or a body of the wrong shape or type",
        );
    }
    if has_query || has_body {
        add(
            "422",
            "The request fits this document but its content is refused; the message says \
             why (a matcher or selector that does not parse or can never match, a regex \
             that does not compile, a value out of its allowed range...)",
        );
    }
    if !open {
        add(
            "401",
            "No valid session or token (or an expired or revoked one)",
        );
    }
    add(
        "408",
        "The request took longer than `[http] request_timeout`",
    );
    if has_body {
        add("413", "The body is larger than `[http] max_body_size`");
        add("415", "The body is not `Content-Type: application/json`");
    }
    add("414", "The URI is longer than 8 KiB");
    add(
        "500",
        "An internal error (logged; the answer never says more)",
    );
    add(
        "503",
        "The store is busy or shutting down, or the feature is not available here; retry",
    );
}

/// Integer parameters take what fits an `i64` (anything else is a 400); `limit` takes
/// 1 to `max_page`.
fn bound_parameter(p: &mut Value, max_page: usize) {
    let name = p
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let Some(schema) = p.get_mut("schema").and_then(Value::as_object_mut) else {
        return;
    };
    let integer = match schema.get("type") {
        Some(Value::String(t)) => t == "integer",
        Some(Value::Array(ts)) => ts.iter().any(|t| t == "integer"),
        _ => false,
    };
    if !integer {
        return;
    }
    if name == "limit" {
        schema.insert("minimum".into(), json!(1));
        schema.insert("maximum".into(), json!(max_page));
        schema.remove("format");
        return;
    }
    schema.entry("minimum").or_insert(json!(i64::MIN));
    schema.entry("maximum").or_insert(json!(i64::MAX));
}

fn text_response(description: &str, media: &[&str]) -> Value {
    let content: Map<String, Value> = media
        .iter()
        .map(|m| ((*m).to_owned(), json!({"schema": {"type": "string"}})))
        .collect();
    json!({"description": description, "content": content})
}

/// `/federate`, `/metrics`, `/healthz` and `/readyz`: served on the same listener, outside
/// `/api/v1` (see `api::federation` and `crate::http`).
fn add_operational_routes(paths: &mut Map<String, Value>) {
    let exposition = [mcpwatch_common::exposition::PROMETHEUS_TEXT_CONTENT_TYPE];
    let scrape = json!([{}, {"scrape_token": []}]);
    let common = |op: &mut Value| {
        let responses = op["responses"].as_object_mut();
        if let Some(r) = responses {
            r.insert("414".into(), error_response("The URI is longer than 8 KiB"));
            r.insert(
                "408".into(),
                error_response("The request took longer than `[http] request_timeout`"),
            );
        }
    };
    let mut federate = json!({
        "tags": ["prometheus"],
        "summary": "Every host's latest values, with a `host` label, for a Prometheus to scrape",
        "security": scrape,
        "responses": {
            "200": text_response("Prometheus text exposition", &exposition),
            "401": error_response("`[api] federation_token` is set and was not presented"),
            "500": error_response("An internal error (logged)"),
            "503": error_response("The store is busy or shutting down; retry"),
        }
    });
    common(&mut federate);
    let mut metrics = json!({
        "tags": ["prometheus"],
        "summary": "The collector's own metrics (Prometheus text, or OpenMetrics when asked for)",
        "security": scrape,
        "responses": {
            "200": text_response(
                "The collector's metrics",
                &[exposition[0], mcpwatch_common::exposition::OPENMETRICS_CONTENT_TYPE],
            ),
            "401": error_response("`[api] federation_token` is set and was not presented"),
        }
    });
    common(&mut metrics);
    let mut healthz = json!({
        "tags": ["health"],
        "summary": "The process is alive",
        "security": [{}],
        "responses": {"200": text_response("`ok`", &["text/plain; charset=utf-8"])}
    });
    common(&mut healthz);
    let mut readyz = json!({
        "tags": ["health"],
        "summary": "Listeners bound, store open, not shutting down",
        "security": [{}],
        "responses": {
            "200": text_response("`ready`", &["text/plain; charset=utf-8"]),
            "503": text_response("`not ready`", &["text/plain; charset=utf-8"]),
        }
    });
    common(&mut readyz);
    for (path, op) in [
        ("/federate", federate),
        ("/metrics", metrics),
        ("/healthz", healthz),
        ("/readyz", readyz),
    ] {
        paths.insert(path.into(), json!({ "get": op }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_contract_completes_every_operation() {
        let doc = json!({
            "openapi": "3.1.0",
            "info": {"title": "t", "version": "1"},
            "paths": {
                "/api/v1/things/{id}": {
                    "get": {
                        "parameters": [
                            {"name": "id", "in": "path", "required": true,
                             "schema": {"type": "integer", "format": "int64"}},
                            {"name": "limit", "in": "query", "required": false,
                             "schema": {"type": ["integer", "null"], "minimum": 0}}
                        ],
                        "responses": {"200": {"description": "ok"},
                                      "400": {"description": "specific"}}
                    },
                    "put": {
                        "requestBody": {"content": {"application/json": {"schema": {}}}},
                        "security": [{}],
                        "responses": {"204": {"description": "done"}}
                    }
                }
            },
            "components": {"securitySchemes": {}}
        });
        let out = complete_json(doc, 500);
        let get = &out["paths"]["/api/v1/things/{id}"]["get"];
        assert_eq!(get["responses"]["400"]["description"], "specific");
        for s in ["401", "408", "414", "422", "500", "503"] {
            assert!(get["responses"][s].is_object(), "{s}");
        }
        assert!(get["responses"]["413"].is_null());
        assert_eq!(get["parameters"][0]["schema"]["maximum"], json!(i64::MAX));
        assert_eq!(get["parameters"][1]["schema"]["minimum"], 1);
        assert_eq!(get["parameters"][1]["schema"]["maximum"], 500);
        let put = &out["paths"]["/api/v1/things/{id}"]["put"];
        for s in ["400", "413", "415", "422"] {
            assert!(put["responses"][s].is_object(), "{s}");
        }
        assert!(put["responses"]["401"].is_null(), "open operation");
        for p in ["/federate", "/metrics", "/healthz", "/readyz"] {
            assert!(
                out["paths"][p]["get"]["responses"]["200"].is_object(),
                "{p}"
            );
        }
        assert!(out["components"]["securitySchemes"]["scrape_token"].is_object());
        for p in ["/federate", "/api/v1/things/{id}"] {
            assert!(
                out["paths"][p]["get"]["responses"]["200"]["headers"]["X-Request-Id"].is_object(),
                "{p}"
            );
        }
    }
}
