//! The OpenAPI document (`shared/api/openapi.json`) against the API itself:
//! it is OpenAPI 3.1 whose references all resolve, it documents exactly the
//! routes of [`baton_api::ROUTES`] (the list the router matches), it is what
//! `GET /openapi.json` serves, its examples fit its schemas, and real
//! responses from the embedded backend fit the schemas it gives for them.
//!
//! The schemas are checked with a small validator of the JSON Schema subset
//! the document uses, stricter than JSON Schema in one way: an object schema
//! that lists `properties` is closed unless it says `additionalProperties`, so
//! a field the API sends but the document does not name fails.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;

use baton_api::{OPENAPI_JSON, ROUTES};
use baton_core::{ErrorInfo, Event, TaskKind, TaskRef};
use baton_embedded::SqliteOptions;
use bytes::Bytes;
use common::*;
use http::{HeaderMap, Method, StatusCode};
use serde_json::{Value, json};

fn doc() -> Value {
    serde_json::from_str(OPENAPI_JSON).expect("openapi.json is JSON")
}

/// The value a local `$ref` (`#/components/...`) points to.
fn pointer<'a>(doc: &'a Value, reference: &str) -> &'a Value {
    let path = reference
        .strip_prefix('#')
        .unwrap_or_else(|| panic!("`{reference}` is not a local reference"));
    doc.pointer(path)
        .unwrap_or_else(|| panic!("`{reference}` points to nothing"))
}

/// Follows `$ref`s until the value is not one.
fn resolved<'a>(doc: &'a Value, mut value: &'a Value) -> &'a Value {
    while let Some(reference) = value.get("$ref").and_then(Value::as_str) {
        value = pointer(doc, reference);
    }
    value
}

fn every_ref(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("$ref", Value::String(r)) => out.push(r.clone()),
                    _ => every_ref(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| every_ref(v, out)),
        _ => {}
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Why `value` does not fit `schema`, naming where (`at`); `None` when it fits.
fn mismatch(doc: &Value, schema: &Value, value: &Value, at: &str) -> Option<String> {
    let schema = resolved(doc, schema);
    if let Some(types) = schema.get("type") {
        let allowed: Vec<&str> = match types {
            Value::String(t) => vec![t.as_str()],
            Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
            other => return Some(format!("{at}: the schema's type is {other}")),
        };
        let actual = type_name(value);
        let fits = allowed
            .iter()
            .any(|t| *t == actual || (*t == "number" && actual == "integer"));
        if !fits {
            return Some(format!("{at}: {value} is {actual}, not {allowed:?}"));
        }
    }
    if let Some(options) = schema.get("enum").and_then(Value::as_array)
        && !options.contains(value)
    {
        return Some(format!("{at}: {value} is not one of {options:?}"));
    }
    if let Some(constant) = schema.get("const")
        && constant != value
    {
        return Some(format!("{at}: {value} is not {constant}"));
    }
    if let Some(minimum) = schema.get("minimum").and_then(Value::as_f64)
        && value.as_f64().is_some_and(|n| n < minimum)
    {
        return Some(format!("{at}: {value} is below {minimum}"));
    }
    if let Some(choices) = schema.get("oneOf").and_then(Value::as_array) {
        let fitting = choices
            .iter()
            .filter(|c| mismatch(doc, c, value, at).is_none())
            .count();
        if fitting != 1 {
            let why: Vec<String> = choices
                .iter()
                .filter_map(|c| mismatch(doc, c, value, at))
                .collect();
            return Some(format!(
                "{at}: {value} fits {fitting} of the oneOf choices, not 1 ({why:?})"
            ));
        }
    }
    if let (Some(items), Value::Array(elements)) = (schema.get("items"), value) {
        for (i, element) in elements.iter().enumerate() {
            if let Some(why) = mismatch(doc, items, element, &format!("{at}[{i}]")) {
                return Some(why);
            }
        }
    }
    if let Value::Object(fields) = value {
        let properties = schema.get("properties").and_then(Value::as_object);
        for name in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            if !fields.contains_key(name) {
                return Some(format!("{at}: required field `{name}` is missing"));
            }
        }
        let additional = schema.get("additionalProperties");
        for (name, field) in fields {
            let at = format!("{at}.{name}");
            match (properties.and_then(|p| p.get(name)), additional) {
                (Some(property), _) => {
                    if let Some(why) = mismatch(doc, property, field, &at) {
                        return Some(why);
                    }
                }
                (None, Some(Value::Bool(false))) => {
                    return Some(format!("{at}: not allowed here"));
                }
                (None, None) if properties.is_some() => {
                    return Some(format!("{at}: not in the documented schema"));
                }
                (None, Some(extra)) if extra.is_object() => {
                    if let Some(why) = mismatch(doc, extra, field, &at) {
                        return Some(why);
                    }
                }
                (None, _) => {}
            }
        }
    }
    None
}

/// The documented path template that a concrete path fits.
fn template_of(doc: &Value, path: &str) -> String {
    let path = path.split('?').next().unwrap_or(path);
    let segments: Vec<&str> = path.split('/').collect();
    doc["paths"]
        .as_object()
        .expect("paths")
        .keys()
        .find(|template| {
            let parts: Vec<&str> = template.split('/').collect();
            parts.len() == segments.len()
                && parts
                    .iter()
                    .zip(&segments)
                    .all(|(p, s)| p.starts_with('{') || p == s)
        })
        .unwrap_or_else(|| panic!("no documented path fits {path}"))
        .clone()
}

/// The documented response (resolved) for a status of an operation.
fn documented_response<'a>(doc: &'a Value, method: &Method, path: &str, status: u16) -> &'a Value {
    let template = template_of(doc, path);
    let operation = &doc["paths"][&template][method.as_str().to_ascii_lowercase()];
    let response = operation["responses"]
        .get(status.to_string())
        .unwrap_or_else(|| panic!("{method} {template} documents no {status} response"));
    resolved(doc, response)
}

/// Checks a real response against the document: its status is documented
/// for the operation, its body fits that response's JSON schema, and the
/// headers clients act on are documented with it.
fn check_reply(
    doc: &Value,
    method: &Method,
    path: &str,
    status: StatusCode,
    headers: &HeaderMap,
    body: &Value,
) {
    let response = documented_response(doc, method, path, status.as_u16());
    check_against(
        doc,
        response,
        &format!("{method} {path} → {status}"),
        headers,
        body,
    );
}

fn check_against(doc: &Value, response: &Value, what: &str, headers: &HeaderMap, body: &Value) {
    let schema = &response["content"]["application/json"]["schema"];
    assert!(!schema.is_null(), "{what}: no JSON schema documented");
    if let Some(why) = mismatch(doc, schema, body, "body") {
        panic!("{what}: the body does not fit the documented schema: {why}\n{body:#}");
    }
    let documented: BTreeSet<String> = response
        .get("headers")
        .and_then(Value::as_object)
        .map(|h| h.keys().map(|k| k.to_ascii_lowercase()).collect())
        .unwrap_or_default();
    for header in ["location", "allow", "retry-after"] {
        if headers.contains_key(header) {
            assert!(
                documented.contains(header),
                "{what}: sends `{header}`, which is not documented"
            );
        }
    }
}

#[test]
fn the_document_is_openapi_3_1_and_every_reference_resolves() {
    let doc = doc();
    let version = doc["openapi"].as_str().expect("an `openapi` version");
    assert!(version.starts_with("3.1."), "OpenAPI {version}");
    assert!(doc["info"]["title"].is_string());
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
    let mut refs = Vec::new();
    every_ref(&doc, &mut refs);
    assert!(refs.len() > 50, "the document reuses its components");
    for reference in &refs {
        pointer(&doc, reference);
    }
    // Every component is used, so none describes a shape the API dropped.
    for kind in ["schemas", "parameters"] {
        for name in doc["components"][kind].as_object().expect(kind).keys() {
            let reference = format!("#/components/{kind}/{name}");
            assert!(refs.contains(&reference), "{reference} is never used");
        }
    }
    // Operation ids are unique, and each path parameter is declared.
    let mut ids = BTreeSet::new();
    for (template, item) in doc["paths"].as_object().expect("paths") {
        let in_template: BTreeSet<&str> = template
            .split('/')
            .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
            .collect();
        for (method, operation) in item.as_object().expect("a path item") {
            if method == "parameters" {
                continue;
            }
            let id = operation["operationId"].as_str().expect("an operationId");
            assert!(ids.insert(id.to_string()), "operationId {id} twice");
            assert!(
                operation["summary"].is_string(),
                "{method} {template}: no summary"
            );
            let declared: BTreeSet<&str> = item["parameters"]
                .as_array()
                .into_iter()
                .chain(operation["parameters"].as_array())
                .flatten()
                .map(|p| resolved(&doc, p))
                .filter(|p| p["in"] == "path")
                .filter_map(|p| p["name"].as_str())
                .collect();
            assert_eq!(
                declared, in_template,
                "{method} {template}: path parameters"
            );
        }
    }
}

/// The document and the router's list name the same (method, path) pairs:
/// a route added to the router without documenting it fails here.
#[test]
fn the_document_has_every_route_the_router_serves_and_no_other() {
    let doc = doc();
    let served: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|r| (r.method.to_string(), r.path.to_string()))
        .collect();
    let mut documented = BTreeSet::new();
    for (template, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("a path item").keys() {
            if [
                "get", "put", "post", "delete", "patch", "head", "options", "trace",
            ]
            .contains(&method.as_str())
            {
                documented.insert((method.to_ascii_uppercase(), template.clone()));
            }
        }
    }
    let undocumented: Vec<_> = served.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "served but not documented: {undocumented:?}"
    );
    let unserved: Vec<_> = documented.difference(&served).collect();
    assert!(
        unserved.is_empty(),
        "documented but not served: {unserved:?}"
    );
}

#[tokio::test]
async fn get_openapi_json_serves_the_document() {
    let h = harness_with(
        SqliteOptions::default(),
        baton_api::ApiOptions::default().base_path("/prod"),
    );
    for path in ["/openapi.json", "/prod/openapi.json"] {
        let request = http::Request::get(path)
            .body(Bytes::new())
            .expect("a request");
        let response = baton_api::handle(&h.api, request).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        assert_eq!(response.headers()["content-type"], "application/json");
        assert_eq!(response.body().as_ref(), OPENAPI_JSON.as_bytes(), "{path}");
    }
    let r = call(&h.api, Method::POST, "/openapi.json", &[], Bytes::new()).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.headers["allow"], "GET");
}

/// Every example in the document fits the schema beside it.
#[test]
fn the_examples_fit_their_schemas() {
    let doc = doc();
    let mut checked = 0;
    let mut media = Vec::new();
    for (template, item) in doc["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("a path item") {
            let Some(operation) = operation.as_object() else {
                continue;
            };
            if let Some(body) = operation.get("requestBody") {
                media.push((format!("{method} {template} request"), resolved(&doc, body)));
            }
            for (status, response) in operation
                .get("responses")
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
            {
                media.push((
                    format!("{method} {template} {status}"),
                    resolved(&doc, response),
                ));
            }
        }
    }
    for (name, response) in doc["components"]["responses"]
        .as_object()
        .expect("responses")
    {
        media.push((format!("response {name}"), response));
    }
    for (what, holder) in media {
        let Some(json) = holder["content"].get("application/json") else {
            continue;
        };
        let schema = &json["schema"];
        let examples = json.get("example").into_iter().chain(
            json.get("examples")
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
                .map(|(_, e)| &e["value"]),
        );
        for example in examples {
            if let Some(why) = mismatch(&doc, schema, example, "example") {
                panic!("{what}: {why}");
            }
            checked += 1;
        }
    }
    for (name, schema) in doc["components"]["schemas"].as_object().expect("schemas") {
        if let Some(example) = schema.get("example") {
            if let Some(why) = mismatch(&doc, schema, example, "example") {
                panic!("schema {name}: {why}");
            }
            checked += 1;
        }
    }
    assert!(checked > 40, "only {checked} examples");
}

/// Reports that the `reserve` step's first attempt succeeded, as a worker would.
async fn finish_reserve(h: &Harness, id: &str) {
    task_result(h, id, Ok(json!({"reservationId": "r-1"}))).await;
}

async fn task_result(h: &Harness, id: &str, result: Result<Value, ErrorInfo>) {
    let task = TaskRef {
        step: Arc::from("reserve"),
        index: None,
        attempt: 1,
        kind: TaskKind::Step,
    };
    let event = match result {
        Ok(output) => Event::TaskSucceeded { task, output },
        Err(error) => Event::TaskFailed { task, error },
    };
    h.api
        .coordinator()
        .handle(id, event)
        .await
        .expect("the result is applied");
}

/// Sends requests through the router and checks each reply against the document.
struct Checked<'a> {
    h: &'a Harness,
    doc: Value,
    /// (method, documented path, status) of every reply checked.
    seen: BTreeSet<(String, String, u16)>,
}

const GET: Method = Method::GET;
const PUT: Method = Method::PUT;
const POST: Method = Method::POST;

impl Checked<'_> {
    /// Sends a request, expects `status`, and checks the reply against the document.
    async fn expect(
        &mut self,
        status: StatusCode,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Reply {
        let reply = call(&self.h.api, method.clone(), path, headers, body.to_string()).await;
        assert_eq!(reply.status, status, "{method} {path}: {}", reply.body);
        check_reply(
            &self.doc,
            &method,
            path,
            status,
            &reply.headers,
            &reply.body,
        );
        let template = template_of(&self.doc, path);
        self.seen
            .insert((method.to_string(), template, status.as_u16()));
        reply
    }
}

/// Real responses of every route, successes and errors, fit the schemas the
/// document gives for their status: the document cannot drift from the
/// shapes the handlers send.
#[tokio::test]
async fn real_responses_fit_their_documented_schemas() {
    use StatusCode as S;
    let h = harness_with(
        SqliteOptions {
            payload_limit: 2048,
            ..SqliteOptions::default()
        },
        baton_api::ApiOptions::default().body_limit(8192),
    );
    let mut c = Checked {
        h: &h,
        doc: doc(),
        seen: BTreeSet::new(),
    };
    let yaml = [("content-type", "application/yaml")];
    let deep = format!("{}{}", "[".repeat(70), "]".repeat(70));

    // Workflows.
    c.expect(S::CREATED, PUT, "/workflows/approval", &yaml, APPROVAL_YAML)
        .await;
    c.expect(S::OK, PUT, "/workflows/approval", &yaml, APPROVAL_YAML)
        .await;
    c.expect(S::CREATED, PUT, "/workflows/waiter", &[], WAIT_JSON)
        .await;
    c.expect(S::BAD_REQUEST, PUT, "/workflows/other", &[], WAIT_JSON)
        .await;
    let invalid = "name: broken\nsteps:\n  first: { function: f, mutates: false, timeout: soon, retry: { max_attempts: 1 } }\n";
    let r = c
        .expect(
            S::UNPROCESSABLE_ENTITY,
            PUT,
            "/workflows/broken",
            &yaml,
            invalid,
        )
        .await;
    assert!(r.body["problems"][0]["step"].is_string(), "{}", r.body);
    c.expect(S::UNPROCESSABLE_ENTITY, PUT, "/workflows/deep", &[], &deep)
        .await;
    let r = c.expect(S::OK, GET, "/workflows", &[], "").await;
    assert_eq!(r.body.as_array().map(Vec::len), Some(2));
    let r = c
        .expect(S::OK, GET, "/workflows/approval?version=1", &[], "")
        .await;
    assert!(r.body["definition"]["steps"].is_object());
    c.expect(
        S::BAD_REQUEST,
        GET,
        "/workflows/approval?version=x",
        &[],
        "",
    )
    .await;
    c.expect(S::NOT_FOUND, GET, "/workflows/nope", &[], "")
        .await;

    // Starting.
    let start = "/workflows/approval/executions";
    let key = [("idempotency-key", "e1")];
    let body = r#"{"input": {"orderId": "o-1"}}"#;
    c.expect(S::CREATED, POST, start, &key, body).await;
    c.expect(S::OK, POST, start, &key, body).await;
    c.expect(S::CONFLICT, POST, start, &key, r#"{"input": 2}"#)
        .await;
    c.expect(S::BAD_REQUEST, POST, start, &[], r#"{"orderId": 1}"#)
        .await;
    c.expect(
        S::UNPROCESSABLE_ENTITY,
        POST,
        start,
        &[],
        r#"{"id": "a/b"}"#,
    )
    .await;
    c.expect(
        S::UNPROCESSABLE_ENTITY,
        POST,
        start,
        &[],
        &format!(r#"{{"input": {deep}}}"#),
    )
    .await;
    let big = format!(r#"{{"input": "{}"}}"#, "x".repeat(4000));
    let r = c.expect(S::PAYLOAD_TOO_LARGE, POST, start, &[], &big).await;
    assert_eq!(r.body["limit"], 2048);
    let huge = format!(r#"{{"input": "{}"}}"#, "x".repeat(9000));
    let r = c
        .expect(S::PAYLOAD_TOO_LARGE, POST, start, &[], &huge)
        .await;
    assert_eq!(r.body["limit"], 8192);
    c.expect(S::NOT_FOUND, POST, "/workflows/nope/executions", &[], "")
        .await;
    for id in ["e2", "e3", "e4"] {
        let body = format!(r#"{{"id": "{id}", "input": {{"n": 1}}, "retention": "7d"}}"#);
        c.expect(S::CREATED, POST, start, &[], &body).await;
    }

    // Reading.
    let r = c
        .expect(
            S::OK,
            GET,
            "/executions?limit=2&status=running&since=0",
            &[],
            "",
        )
        .await;
    let next = r.body["next"]
        .as_str()
        .expect("a next page")
        .replace('#', "%23");
    c.expect(
        S::OK,
        GET,
        &format!("/executions?limit=2&after={next}"),
        &[],
        "",
    )
    .await;
    c.expect(S::BAD_REQUEST, GET, "/executions?status=done", &[], "")
        .await;
    finish_reserve(&h, "e1").await;
    let r = c.expect(S::OK, GET, "/executions/e1", &[], "").await;
    assert_eq!(r.body["steps"][1]["status"], "waiting", "{}", r.body);
    c.expect(S::NOT_FOUND, GET, "/executions/ghost", &[], "")
        .await;

    // Signals and cancels, then the history they leave.
    let approval = "/executions/e1/signals/approval";
    let r = c
        .expect(S::ACCEPTED, POST, approval, &[], r#"{"by": "ann"}"#)
        .await;
    assert_eq!(r.body["status"], "succeeded", "{}", r.body);
    c.expect(S::CONFLICT, POST, approval, &[], "1").await;
    c.expect(
        S::BAD_REQUEST,
        POST,
        "/executions/e2/signals/approval",
        &[],
        "{",
    )
    .await;
    c.expect(S::NOT_FOUND, POST, "/executions/ghost/signals/go", &[], "")
        .await;
    c.expect(
        S::UNPROCESSABLE_ENTITY,
        POST,
        "/executions/e2/signals/approval",
        &[],
        &deep,
    )
    .await;
    let large = format!("\"{}\"", "y".repeat(3000));
    c.expect(
        S::PAYLOAD_TOO_LARGE,
        POST,
        "/executions/e2/signals/approval",
        &[],
        &large,
    )
    .await;
    c.expect(S::BAD_REQUEST, POST, "/executions/e2/signals/go", &[], "{}")
        .await;
    finish_reserve(&h, "e2").await;
    let cancel = "/executions/e2/cancel";
    let r = c
        .expect(
            S::ACCEPTED,
            POST,
            cancel,
            &[],
            r#"{"reason": "changed my mind"}"#,
        )
        .await;
    assert_eq!(r.body["status"], "compensating", "{}", r.body);
    let r = c.expect(S::ACCEPTED, POST, cancel, &[], "").await;
    assert_eq!(r.body["outcome"], "ignored", "{}", r.body);
    let r = c
        .expect(
            S::ACCEPTED,
            POST,
            "/executions/e2/signals/approval",
            &[],
            "",
        )
        .await;
    assert_eq!(r.body["outcome"], "ignored", "{}", r.body);
    c.expect(S::BAD_REQUEST, POST, cancel, &[], r#"{"because": 1}"#)
        .await;
    c.expect(S::UNPROCESSABLE_ENTITY, POST, cancel, &[], &deep)
        .await;
    c.expect(S::NOT_FOUND, POST, "/executions/ghost/cancel", &[], "")
        .await;
    let compensation = TaskRef {
        step: Arc::from("reserve"),
        index: None,
        attempt: 1,
        kind: TaskKind::Compensation,
    };
    let failed = ErrorInfo::new("Unavailable", "the inventory service is down", true);
    let event = Event::TaskFailed {
        task: compensation,
        error: failed,
    };
    h.api
        .coordinator()
        .handle("e2", event)
        .await
        .expect("the result is applied");
    let r = c.expect(S::OK, GET, "/executions/e2", &[], "").await;
    assert!(
        r.body["steps"][0]["compensation"]["error"].is_object(),
        "{}",
        r.body
    );
    assert!(r.body["error"].is_object(), "{}", r.body);
    task_result(
        &h,
        "e3",
        Err(ErrorInfo::new("PermanentDeclined", "no", false)),
    )
    .await;
    let r = c.expect(S::OK, GET, "/executions/e3", &[], "").await;
    assert!(r.body["finished_at"].is_u64(), "{}", r.body);
    c.expect(S::CONFLICT, POST, "/executions/e3/cancel", &[], "")
        .await;
    // e3 failed with nothing to undo: it runs again; a second redrive finds
    // it running, and one of the compensated e2 is refused too.
    let redrive = "/executions/e3/redrive";
    let r = c
        .expect(S::ACCEPTED, POST, redrive, &[], r#"{"reason": "back"}"#)
        .await;
    assert_eq!(r.body["status"], "running", "{}", r.body);
    c.expect(S::CONFLICT, POST, redrive, &[], "").await;
    c.expect(S::CONFLICT, POST, "/executions/e2/redrive", &[], "")
        .await;
    c.expect(S::BAD_REQUEST, POST, redrive, &[], r#"{"because": 1}"#)
        .await;
    c.expect(S::NOT_FOUND, POST, "/executions/ghost/redrive", &[], "")
        .await;
    let mut types = BTreeSet::new();
    for path in [
        "/executions/e1/history",
        "/executions/e2/history?view=events",
        "/executions/e3/history",
    ] {
        let r = c.expect(S::OK, GET, path, &[], "").await;
        let events = r.body.as_array().cloned().unwrap_or_default();
        assert!(events.len() >= 2, "{}", r.body);
        types.extend(
            events
                .iter()
                .filter_map(|e| e["event"]["type"].as_str().map(String::from)),
        );
    }
    // Between them the histories hold every kind of event a client sees here.
    for t in [
        "started",
        "task_succeeded",
        "cancel_requested",
        "signal_received",
        "task_failed",
    ] {
        assert!(types.contains(t), "no {t} in {types:?}");
    }
    c.expect(
        S::BAD_REQUEST,
        GET,
        "/executions/e1/history?view=x",
        &[],
        "",
    )
    .await;
    c.expect(S::NOT_FOUND, GET, "/executions/ghost/history", &[], "")
        .await;

    // Events: a workflow whose triggers match them.
    let triggered = r#"
name: orders
triggers:
  - name: placed
    pattern: { source: [shop], detail-type: [Order Placed] }
    input: { customer: "${ event.detail.customer.id }" }
  - name: audit
    pattern: { source: [shop] }
steps:
  hold: { wait_for: { signal: go } }
"#;
    c.expect(S::CREATED, PUT, "/workflows/orders", &yaml, triggered)
        .await;
    let event = r#"{"id": "evt-1", "source": "shop", "detail-type": "Order Placed", "detail": {"customer": {"id": "c-1"}}}"#;
    let r = c.expect(S::ACCEPTED, POST, "/events", &[], event).await;
    assert_eq!(r.body["started"].as_array().map(Vec::len), Some(2));
    let r = c.expect(S::ACCEPTED, POST, "/events", &[], event).await;
    assert_eq!(r.body["started"][0]["created"], false, "{}", r.body);
    let r = c
        .expect(
            S::ACCEPTED,
            POST,
            "/events",
            &[],
            r#"{"source": "warehouse", "detail-type": "Order Placed", "detail": {}}"#,
        )
        .await;
    assert_eq!(r.body["started"], json!([]));
    c.expect(S::BAD_REQUEST, POST, "/events", &[], "{").await;
    c.expect(
        S::BAD_REQUEST,
        POST,
        "/events",
        &[],
        r#"{"id": "e", "detail-type": "Order Placed", "detail": {}}"#,
    )
    .await;
    let r = c
        .expect(
            S::UNPROCESSABLE_ENTITY,
            POST,
            "/events",
            &[],
            r#"{"id": "evt-2", "source": "shop", "detail-type": "Order Placed", "detail": {}}"#,
        )
        .await;
    assert!(r.error().contains("its input fails"), "{}", r.body);
    c.expect(
        S::UNPROCESSABLE_ENTITY,
        POST,
        "/events",
        &[],
        &format!(r#"{{"source": "shop", "detail-type": "t", "detail": {{"a": {deep}}}}}"#),
    )
    .await;
    // The same event id with other content: another input for the same execution.
    c.expect(
        S::CONFLICT,
        POST,
        "/events",
        &[],
        r#"{"id": "evt-1", "source": "shop", "detail-type": "Order Placed", "detail": {"customer": {"id": "c-2"}}}"#,
    )
    .await;
    let r = c
        .expect(
            S::PAYLOAD_TOO_LARGE,
            POST,
            "/events",
            &[],
            &format!(
                r#"{{"source": "shop", "detail-type": "Order Shipped", "detail": {{"note": "{}"}}}}"#,
                "z".repeat(3000)
            ),
        )
        .await;
    assert_eq!(r.body["limit"], 2048, "{}", r.body);

    // A workflow that runs another as a child: refused while the child is
    // missing; once deployed, the child execution names its parent.
    let boss = "name: boss\nsteps:\n  approve: { workflow: approval, input: { orderId: b-1 } }\n";
    let r = c
        .expect(
            S::UNPROCESSABLE_ENTITY,
            PUT,
            "/workflows/boss",
            &yaml,
            &boss.replace("approval,", "approval-v,"),
        )
        .await;
    assert!(
        r.body["problems"][0]
            .as_str()
            .is_some_and(|p| p.contains("`approval-v` is not deployed")),
        "{}",
        r.body
    );
    c.expect(S::CREATED, PUT, "/workflows/boss", &yaml, boss)
        .await;
    c.expect(
        S::CREATED,
        POST,
        "/workflows/boss/executions",
        &[],
        r#"{"id": "b-1"}"#,
    )
    .await;
    let r = c
        .expect(S::OK, GET, "/executions/b-1:approve", &[], "")
        .await;
    assert_eq!(r.body["parent"]["execution_id"], "b-1", "{}", r.body);
    assert_eq!(r.body["parent"]["step"], "approve");
    let r = c
        .expect(S::OK, GET, "/executions/b-1:approve/history", &[], "")
        .await;
    assert_eq!(
        r.body[0]["event"]["parent"]["execution_id"], "b-1",
        "{}",
        r.body
    );

    // The document itself, through the JSON it serves.
    let r = c.expect(S::OK, GET, "/openapi.json", &[], "").await;
    assert_eq!(r.body, c.doc);

    // What answers the methods and paths that have no operation.
    let doc = &c.doc;
    let r = call(&h.api, Method::DELETE, "/executions/e1", &[], Bytes::new()).await;
    assert_eq!(r.status, S::METHOD_NOT_ALLOWED);
    let documented = resolved(doc, &doc["components"]["responses"]["MethodNotAllowed"]);
    check_against(
        doc,
        documented,
        "DELETE /executions/e1",
        &r.headers,
        &r.body,
    );
    let r = get(&h.api, "/nothing/here").await;
    assert_eq!(r.status, S::NOT_FOUND);
    let documented = resolved(doc, &doc["components"]["responses"]["NoRoute"]);
    check_against(doc, documented, "GET /nothing/here", &r.headers, &r.body);

    // Every route was called here, and succeeded.
    for spec in ROUTES {
        assert!(
            c.seen
                .iter()
                .any(|(m, p, s)| m == spec.method && p == spec.path && *s < 300),
            "{} {} was never called successfully here",
            spec.method,
            spec.path
        );
    }
}

/// A store that fails: 503 with `Retry-After` or 500, as documented.
#[tokio::test]
async fn storage_failures_fit_the_documented_responses() {
    let h = harness();
    let doc = doc();
    deploy(&h.api, "waiter", WAIT_JSON).await;
    post(&h.api, "/workflows/waiter/executions", r#"{"id": "bad"}"#).await;
    let db = rusqlite::Connection::open(h.db_path()).expect("open the database");
    db.execute_batch(
        "INSERT INTO history (execution_id, seq, at, event)
           SELECT id, version + 1, updated_at, 'not json' FROM executions WHERE id = 'bad';
         UPDATE executions SET version = version + 1 WHERE id = 'bad';",
    )
    .expect("corrupt a row");
    let r = get(&h.api, "/executions/bad").await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR, "{}", r.body);
    check_reply(
        &doc,
        &Method::GET,
        "/executions/bad",
        r.status,
        &r.headers,
        &r.body,
    );
    db.execute_batch("DROP TABLE executions")
        .expect("drop a table");
    let r = get(&h.api, "/executions/bad").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.body);
    check_reply(
        &doc,
        &Method::GET,
        "/executions/bad",
        r.status,
        &r.headers,
        &r.body,
    );
}

/// The validator itself catches what it is there to catch.
#[test]
fn the_validator_refuses_undocumented_fields_and_wrong_types() {
    let doc = doc();
    let schema = json!({"$ref": "#/components/schemas/Started"});
    let good =
        json!({"id": "a", "workflow": "w", "version": 1, "status": "running", "created": true});
    assert_eq!(mismatch(&doc, &schema, &good, "body"), None);
    let mut extra = good.clone();
    extra["surprise"] = json!(1);
    assert!(mismatch(&doc, &schema, &extra, "body").is_some_and(|m| m.contains("surprise")));
    let mut wrong = good.clone();
    wrong["status"] = json!("done");
    assert!(mismatch(&doc, &schema, &wrong, "body").is_some());
    let mut missing = good;
    missing.as_object_mut().map(|o| o.remove("created"));
    assert!(mismatch(&doc, &schema, &missing, "body").is_some());
    let event = json!({"$ref": "#/components/schemas/Event"});
    assert_eq!(
        mismatch(
            &doc,
            &event,
            &json!({"type": "started", "input": null}),
            "e"
        ),
        None
    );
    assert!(mismatch(&doc, &event, &json!({"type": "exploded"}), "e").is_some());
}

/// Every event and status the document names is one the engine has, with
/// the same fields: each event schema's example decodes as an
/// [`Event`] and encodes back unchanged, and each enum value decodes.
#[test]
fn documented_events_and_statuses_are_the_engines() {
    let doc = doc();
    let choices = doc["components"]["schemas"]["Event"]["oneOf"]
        .as_array()
        .expect("Event is a oneOf");
    for choice in choices {
        let schema = resolved(&doc, choice);
        let example = schema.get("example").expect("each event has an example");
        let event: Event = serde_json::from_value(example.clone())
            .unwrap_or_else(|e| panic!("{example} is not an event: {e}"));
        assert_eq!(&serde_json::to_value(&event).expect("encodes"), example);
    }
    fn decodes<T: serde::de::DeserializeOwned>(doc: &Value, pointer: &str) {
        let values = doc
            .pointer(pointer)
            .and_then(Value::as_array)
            .unwrap_or_else(|| panic!("{pointer} is an enum"));
        for value in values {
            assert!(
                serde_json::from_value::<T>(value.clone()).is_ok(),
                "{pointer}: {value} is not one the engine has"
            );
        }
    }
    decodes::<baton_core::ExecutionStatus>(&doc, "/components/schemas/ExecutionStatus/enum");
    decodes::<baton_core::engine::StepStatus>(&doc, "/components/schemas/StepStatus/enum");
    decodes::<baton_core::engine::UnitStatus>(&doc, "/components/schemas/UnitStatus/enum");
    decodes::<TaskKind>(&doc, "/components/schemas/TaskKind/enum");
    decodes::<baton_core::engine::TimerKind>(
        &doc,
        "/components/schemas/TimerId/properties/kind/enum",
    );
}
