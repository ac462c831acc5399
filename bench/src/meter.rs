//! What Baton's AWS requests cost in the units AWS bills, read off the
//! requests themselves: an HTTP client wrapped around the SDK's own sees every
//! request body before it leaves, so no product code needs changing.
//!
//! - DynamoDB: write units from item sizes (1 per KB or part, the larger of
//!   the item before and after the write; twice that inside a transaction)
//!   and read units (1 per 4 KB or part for a strongly consistent read, half
//!   for an eventually consistent one). Sizes follow DynamoDB's rules (name
//!   plus value bytes per attribute). The meter keeps a copy of every item's
//!   attribute sizes so updates, deletes and reads can be sized too.
//! - SQS: billed requests (each 64 KB of a message is one more) and messages
//!   per queue, so the event source mappings' polling can be modelled.
//! - EventBridge: `PutEvents` entries (billed per event, per 64 KB).
//! - S3: object requests by kind (`PutObject`, `GetObject`, `HeadObject`,
//!   billed per request at two prices) and the bytes put. Calls on a bucket
//!   itself (creating it, its lifecycle) are `S3.Other`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
    SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use serde::Serialize;
use serde_json::Value;

/// Billed quantities per `Service.Operation`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Usage {
    pub requests: u64,
    /// DynamoDB write request units.
    pub write_units: u64,
    /// DynamoDB read request units (halves for eventually consistent reads).
    pub read_units: f64,
    /// SQS requests as billed (64 KB chunks) and EventBridge events.
    pub billed: u64,
    /// Bytes of the items written (DynamoDB), messages sent (SQS,
    /// EventBridge) or objects put (S3).
    pub bytes: u64,
}

impl Usage {
    fn add(&mut self, other: &Usage) {
        self.requests += other.requests;
        self.write_units += other.write_units;
        self.read_units += other.read_units;
        self.billed += other.billed;
        self.bytes += other.bytes;
    }

    fn minus(&self, other: &Usage) -> Usage {
        Usage {
            requests: self.requests - other.requests,
            write_units: self.write_units - other.write_units,
            read_units: self.read_units - other.read_units,
            billed: self.billed - other.billed,
            bytes: self.bytes - other.bytes,
        }
    }
}

/// Usage by operation, and SQS messages sent by queue name.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Snapshot {
    pub operations: BTreeMap<String, Usage>,
    pub messages_by_queue: BTreeMap<String, u64>,
}

impl Snapshot {
    /// What happened between `before` and `self`.
    pub fn since(&self, before: &Snapshot) -> Snapshot {
        let mut operations = BTreeMap::new();
        for (op, usage) in &self.operations {
            let delta = usage.minus(&before.operations.get(op).copied().unwrap_or_default());
            if delta != Usage::default() {
                operations.insert(op.clone(), delta);
            }
        }
        let mut messages_by_queue = BTreeMap::new();
        for (queue, n) in &self.messages_by_queue {
            let delta = n - before.messages_by_queue.get(queue).copied().unwrap_or(0);
            if delta > 0 {
                messages_by_queue.insert(queue.clone(), delta);
            }
        }
        Snapshot {
            operations,
            messages_by_queue,
        }
    }

    pub fn add(&mut self, other: &Snapshot) {
        for (op, usage) in &other.operations {
            self.operations.entry(op.clone()).or_default().add(usage);
        }
        for (queue, n) in &other.messages_by_queue {
            *self.messages_by_queue.entry(queue.clone()).or_default() += n;
        }
    }

    pub fn total(&self) -> Usage {
        let mut total = Usage::default();
        for usage in self.operations.values() {
            total.add(usage);
        }
        total
    }
}

type ItemKey = (String, String, String);
/// Attribute name to its billed size (name bytes plus value bytes).
type Sizes = BTreeMap<String, usize>;

#[derive(Default)]
struct State {
    items: HashMap<ItemKey, Sizes>,
    /// The `status` of each item in the store's status index (one with an
    /// `ord`): the index is written when it appears, changes or goes.
    indexed: HashMap<ItemKey, String>,
    snapshot: Snapshot,
}

/// Where index writes are reported: DynamoDB bills a write to a global
/// secondary index like one to the table (a key change as a delete and a
/// put), with no request of its own.
pub const INDEX_WRITES: &str = "DynamoDB.IndexWrite";

#[derive(Clone, Default)]
pub struct Meter {
    state: Arc<Mutex<State>>,
}

impl std::fmt::Debug for Meter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Meter")
    }
}

const KB: usize = 1024;
const SQS_CHUNK: usize = 64 * KB;

fn units(bytes: usize, per: usize) -> u64 {
    bytes.div_ceil(per).max(1) as u64
}

/// Billed size of a number: one byte per two significant digits, plus one.
fn number_size(text: &str) -> usize {
    let digits: String = text.chars().filter(|c| c.is_ascii_digit()).collect();
    let significant = digits
        .trim_start_matches('0')
        .trim_end_matches('0')
        .len()
        .max(1);
    significant.div_ceil(2) + 1
}

/// Billed size of an attribute value in DynamoDB's JSON form (`{"S": ...}`).
fn value_size(value: &Value) -> usize {
    let Some((kind, v)) = value.as_object().and_then(|o| o.iter().next()) else {
        return 0;
    };
    match (kind.as_str(), v) {
        ("S", Value::String(s)) => s.len(),
        ("N", Value::String(s)) => number_size(s),
        ("B", Value::String(s)) => s.len() * 3 / 4,
        ("BOOL", _) | ("NULL", _) => 1,
        ("SS", Value::Array(a)) => a.iter().filter_map(Value::as_str).map(str::len).sum(),
        ("NS", Value::Array(a)) => a.iter().filter_map(Value::as_str).map(number_size).sum(),
        ("BS", Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .map(|s| s.len() * 3 / 4)
            .sum(),
        ("M", Value::Object(m)) => {
            3 + m
                .iter()
                .map(|(k, v)| k.len() + value_size(v) + 1)
                .sum::<usize>()
        }
        ("L", Value::Array(a)) => 3 + a.iter().map(|v| value_size(v) + 1).sum::<usize>(),
        _ => 0,
    }
}

fn sizes_of(item: &serde_json::Map<String, Value>) -> Sizes {
    item.iter()
        .map(|(name, value)| (name.clone(), name.len() + value_size(value)))
        .collect()
}

fn total(sizes: &Sizes) -> usize {
    sizes.values().sum()
}

fn key_of(table: &str, key: &serde_json::Map<String, Value>) -> ItemKey {
    let part = |name: &str| {
        key.get(name)
            .and_then(|v| v.as_object())
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    (table.to_string(), part("pk"), part("sk"))
}

fn str_field<'a>(body: &'a Value, name: &str) -> &'a str {
    body.get(name).and_then(Value::as_str).unwrap_or_default()
}

fn object<'a>(body: &'a Value, name: &str) -> Option<&'a serde_json::Map<String, Value>> {
    body.get(name).and_then(Value::as_object)
}

impl State {
    fn usage(&mut self, operation: &str) -> &mut Usage {
        self.snapshot
            .operations
            .entry(operation.to_string())
            .or_default()
    }

    fn index_writes(&mut self, units: u64) {
        if units > 0 {
            self.usage(INDEX_WRITES).write_units += units;
        }
    }

    /// Applies a write; returns its write units (before doubling) and item bytes.
    fn write(&mut self, kind: &str, body: &Value) -> (u64, usize) {
        let table = str_field(body, "TableName");
        match kind {
            "Put" => {
                let Some(item) = object(body, "Item") else {
                    return (1, 0);
                };
                let key = key_of(table, item);
                if item.contains_key("ord") {
                    let status = item
                        .get("status")
                        .and_then(|v| v.get("S"))
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string();
                    let writes = match self.indexed.insert(key.clone(), status.clone()) {
                        Some(before) if before == status => 0,
                        Some(_) => 2,
                        None => 1,
                    };
                    self.index_writes(writes);
                }
                let after = sizes_of(item);
                let before = self.items.get(&key).map_or(0, total);
                let bytes = total(&after);
                self.items.insert(key, after);
                (units(before.max(bytes), KB), bytes)
            }
            "Update" => {
                let Some(key_attrs) = object(body, "Key") else {
                    return (1, 0);
                };
                let key = key_of(table, key_attrs);
                if let Some(status) = set_value(body, "status")
                    && let Some(before) = self.indexed.get_mut(&key)
                    && *before != status
                {
                    *before = status;
                    self.index_writes(2);
                }
                let before_sizes = self.items.get(&key).cloned();
                let before = before_sizes.as_ref().map_or(0, total);
                let mut after = before_sizes.unwrap_or_else(|| sizes_of(key_attrs));
                apply_update(&mut after, body);
                let bytes = total(&after);
                self.items.insert(key, after);
                (units(before.max(bytes), KB), bytes)
            }
            "Delete" => {
                let Some(key_attrs) = object(body, "Key") else {
                    return (1, 0);
                };
                let key = key_of(table, key_attrs);
                if self.indexed.remove(&key).is_some() {
                    self.index_writes(1);
                }
                let before = self.items.remove(&key).map_or(0, |s| total(&s));
                (units(before, KB), 0)
            }
            // A condition check in a transaction is billed as a write of the item's size.
            "ConditionCheck" => {
                let Some(key_attrs) = object(body, "Key") else {
                    return (1, 0);
                };
                let size = self.items.get(&key_of(table, key_attrs)).map_or(0, total);
                (units(size, KB), 0)
            }
            _ => (0, 0),
        }
    }

    fn read_units(&self, bytes: usize, consistent: bool) -> f64 {
        let u = units(bytes, 4 * KB) as f64;
        if consistent { u } else { u / 2.0 }
    }

    fn observe_dynamodb(&mut self, operation: &str, body: &Value) {
        let op = format!("DynamoDB.{operation}");
        let consistent = body
            .get("ConsistentRead")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let table = str_field(body, "TableName").to_string();
        let mut usage = Usage {
            requests: 1,
            ..Usage::default()
        };
        match operation {
            "PutItem" | "UpdateItem" | "DeleteItem" => {
                let kind = operation.trim_end_matches("Item");
                let (wu, bytes) = self.write(kind, body);
                usage.write_units = wu;
                usage.bytes = bytes as u64;
            }
            "TransactWriteItems" => {
                let items = body
                    .get("TransactItems")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                for entry in &items {
                    if let Some((kind, inner)) = entry.as_object().and_then(|o| o.iter().next()) {
                        let (wu, bytes) = self.write(kind, inner);
                        usage.write_units += 2 * wu;
                        usage.bytes += bytes as u64;
                    }
                }
            }
            "GetItem" => {
                let size = object(body, "Key")
                    .and_then(|k| self.items.get(&key_of(&table, k)))
                    .map_or(0, total);
                usage.read_units = self.read_units(size, consistent);
            }
            "Query" => {
                let size = self.query_bytes(&table, body);
                usage.read_units = self.read_units(size, consistent);
            }
            "Scan" => {
                let size: usize = self
                    .items
                    .iter()
                    .filter(|((t, _, _), _)| *t == table)
                    .map(|(_, s)| total(s))
                    .sum();
                usage.read_units = self.read_units(size, consistent);
            }
            _ => {}
        }
        self.usage(&op).add(&usage);
    }

    /// Bytes a query reads before any filter: the items its key condition selects.
    fn query_bytes(&self, table: &str, body: &Value) -> usize {
        let values = object(body, "ExpressionAttributeValues");
        let value = |name: &str| {
            values
                .and_then(|v| v.get(name))
                .and_then(|v| v.as_object())
                .and_then(|o| o.values().next())
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        let condition = str_field(body, "KeyConditionExpression");
        let pk = value(":pk");
        let prefix = if condition.contains("begins_with") {
            value(":p")
        } else {
            String::new()
        };
        let mut matching: Vec<(&String, usize)> = self
            .items
            .iter()
            .filter(|((t, p, s), _)| t == table && *p == pk && s.starts_with(&prefix))
            .map(|((_, _, s), sizes)| (s, total(sizes)))
            .collect();
        matching.sort();
        if body.get("ScanIndexForward").and_then(Value::as_bool) == Some(false) {
            matching.reverse();
        }
        if let Some(limit) = body.get("Limit").and_then(Value::as_u64) {
            matching.truncate(limit as usize);
        }
        matching.iter().map(|(_, size)| size).sum()
    }

    fn observe_sqs(&mut self, operation: &str, body: &Value) {
        let queue = str_field(body, "QueueUrl")
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_string();
        let mut usage = Usage {
            requests: 1,
            billed: 1,
            ..Usage::default()
        };
        match operation {
            "SendMessage" => {
                let bytes = str_field(body, "MessageBody").len();
                usage.bytes = bytes as u64;
                usage.billed = units(bytes, SQS_CHUNK);
                *self.snapshot.messages_by_queue.entry(queue).or_default() += 1;
            }
            "SendMessageBatch" => {
                let entries = body
                    .get("Entries")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                let bytes: usize = entries
                    .iter()
                    .map(|e| str_field(e, "MessageBody").len())
                    .sum();
                usage.bytes = bytes as u64;
                usage.billed = units(bytes, SQS_CHUNK);
                *self.snapshot.messages_by_queue.entry(queue).or_default() += entries.len() as u64;
            }
            _ => {}
        }
        self.usage(&format!("SQS.{operation}")).add(&usage);
    }

    fn observe_eventbridge(&mut self, operation: &str, body: &Value) {
        let mut usage = Usage {
            requests: 1,
            ..Usage::default()
        };
        if operation == "PutEvents" {
            for entry in body
                .get("Entries")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let bytes = serde_json::to_string(entry).map_or(0, |s| s.len());
                usage.bytes += bytes as u64;
                usage.billed += units(bytes, SQS_CHUNK);
            }
        }
        self.usage(&format!("EventBridge.{operation}")).add(&usage);
    }

    fn observe_s3(&mut self, operation: &str, bytes: u64) {
        let usage = Usage {
            requests: 1,
            bytes,
            ..Usage::default()
        };
        self.usage(&format!("S3.{operation}")).add(&usage);
    }
}

/// The service a request is signed for: the fourth part of its SigV4
/// credential scope (`Credential=AKID/20261130/us-east-1/s3/aws4_request`).
fn signing_service(authorization: &str) -> Option<&str> {
    let (_, credential) = authorization.split_once("Credential=")?;
    let scope = credential.split([',', ' ']).next()?;
    scope.split('/').nth(3)
}

/// The operation of an S3 request, read off its method and URI. Path-style
/// (`/{bucket}/{key}`), as against the emulator: a key after the bucket makes
/// an object request. A virtual-hosted request (`/{key}`) reads the same for
/// a key holding a `/`, as every payload key does. A subresource in the query
/// (`?tagging`, `?uploads`) or a call on the bucket itself is `Other`; the
/// SDK's `x-id` parameter only names the operation.
fn s3_operation(method: &str, uri: &str) -> &'static str {
    let path = match uri.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("", |at| &rest[at..]),
        None => uri,
    };
    let (path, query) = path.split_once('?').unwrap_or((path, ""));
    let object = path
        .trim_start_matches('/')
        .split_once('/')
        .is_some_and(|(bucket, key)| !bucket.is_empty() && !key.is_empty());
    let plain = query
        .split('&')
        .all(|p| p.is_empty() || p.starts_with("x-id="));
    match (method, object && plain) {
        ("PUT", true) => "PutObject",
        ("GET", true) => "GetObject",
        ("HEAD", true) => "HeadObject",
        _ => "Other",
    }
}

/// Bytes of an S3 request's object: the decoded length when the body is sent
/// in aws-chunked encoding (its framing and trailing checksum are not the
/// object), else the body's, else the declared length.
fn s3_body_bytes(request: &HttpRequest) -> u64 {
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    header("x-amz-decoded-content-length")
        .or_else(|| request.body().bytes().map(|b| b.len() as u64))
        .or_else(|| header("content-length"))
        .unwrap_or(0)
}

/// Applies the `SET a = :v, ...` and `REMOVE a, ...` clauses of an update to
/// the item's sizes. Values of other forms (functions, arithmetic) are sized
/// by the first placeholder they name.
/// The string an update's `SET` gives `attribute`, if it sets one.
fn set_value(body: &Value, attribute: &str) -> Option<String> {
    let names = object(body, "ExpressionAttributeNames");
    let values = object(body, "ExpressionAttributeValues")?;
    clauses(str_field(body, "UpdateExpression"))
        .into_iter()
        .filter(|(section, _)| *section == "SET")
        .find_map(|(_, text)| {
            text.split(',').find_map(|part| {
                let (path, value) = part.split_once('=')?;
                (attribute_name(names, path) == attribute)
                    .then(|| {
                        values
                            .get(value.trim())?
                            .get("S")?
                            .as_str()
                            .map(str::to_string)
                    })
                    .flatten()
            })
        })
}

/// The top-level attribute a path in an expression names.
fn attribute_name(names: Option<&serde_json::Map<String, Value>>, token: &str) -> String {
    let top = token.trim().split(['.', '[']).next().unwrap_or_default();
    names
        .and_then(|n| n.get(top))
        .and_then(Value::as_str)
        .unwrap_or(top)
        .to_string()
}

/// An update expression's clauses: section (`SET`, `REMOVE`, `ADD`,
/// `DELETE`) and its text.
fn clauses(expression: &str) -> Vec<(&'static str, String)> {
    let mut section = "";
    let mut clause = String::new();
    let mut clauses = Vec::new();
    for word in expression.split_whitespace() {
        let keyword = match word.to_ascii_uppercase().as_str() {
            "SET" => Some("SET"),
            "REMOVE" => Some("REMOVE"),
            "ADD" => Some("ADD"),
            "DELETE" => Some("DELETE"),
            _ => None,
        };
        match keyword {
            Some(keyword) => {
                if !clause.trim().is_empty() {
                    clauses.push((section, std::mem::take(&mut clause)));
                }
                section = keyword;
            }
            None => {
                clause.push(' ');
                clause.push_str(word);
            }
        }
    }
    if !clause.trim().is_empty() {
        clauses.push((section, clause));
    }
    clauses
}

fn apply_update(sizes: &mut Sizes, body: &Value) {
    let names = object(body, "ExpressionAttributeNames");
    let values = object(body, "ExpressionAttributeValues");
    let resolve = |token: &str| attribute_name(names, token);
    for (section, text) in clauses(str_field(body, "UpdateExpression")) {
        for part in text.split(',') {
            match section {
                "SET" => {
                    let Some((path, rhs)) = part.split_once('=') else {
                        continue;
                    };
                    let name = resolve(path);
                    let placeholder = rhs
                        .split(|c: char| !(c.is_alphanumeric() || c == ':' || c == '_'))
                        .find(|t| t.starts_with(':'))
                        .unwrap_or_default();
                    let size = values
                        .and_then(|v| v.get(placeholder))
                        .map_or(0, value_size);
                    sizes.insert(name.clone(), name.len() + size);
                }
                "REMOVE" => {
                    sizes.remove(&resolve(part));
                }
                _ => {}
            }
        }
    }
}

impl Meter {
    pub fn new() -> Meter {
        Meter::default()
    }

    /// Items the table holds now, and their billed bytes.
    pub fn stored_items(&self) -> (u64, u64) {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let bytes = state.items.values().map(|s| total(s) as u64).sum();
        (state.items.len() as u64, bytes)
    }

    pub fn snapshot(&self) -> Snapshot {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .snapshot
            .clone()
    }

    fn observe(&self, request: &HttpRequest) {
        // S3 is REST: no `X-Amz-Target`, and its bodies (objects, XML) are
        // no service's JSON, so it is known by the service the request is
        // signed for.
        if request
            .headers()
            .get("authorization")
            .and_then(signing_service)
            == Some("s3")
        {
            let operation = s3_operation(request.method(), request.uri());
            let bytes = if operation == "PutObject" {
                s3_body_bytes(request)
            } else {
                0
            };
            let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            state.observe_s3(operation, bytes);
            return;
        }
        let Some(target) = request.headers().get("x-amz-target") else {
            return;
        };
        let Some((service, operation)) = target.split_once('.') else {
            return;
        };
        let body: Value = request
            .body()
            .bytes()
            .and_then(|b| serde_json::from_slice(b).ok())
            .unwrap_or(Value::Null);
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if service.starts_with("DynamoDB") {
            state.observe_dynamodb(operation, &body);
        } else if service.starts_with("AmazonSQS") {
            state.observe_sqs(operation, &body);
        } else if service.starts_with("AWSEvents") {
            state.observe_eventbridge(operation, &body);
        }
    }

    /// An HTTP client that meters every request, then sends it with `inner`.
    pub fn client(&self, inner: SharedHttpClient) -> SharedHttpClient {
        SharedHttpClient::new(MeteredClient {
            inner,
            meter: self.clone(),
        })
    }
}

#[derive(Debug)]
struct MeteredClient {
    inner: SharedHttpClient,
    meter: Meter,
}

impl HttpClient for MeteredClient {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        SharedHttpConnector::new(MeteredConnector {
            inner: self.inner.http_connector(settings, components),
            meter: self.meter.clone(),
        })
    }
}

#[derive(Debug)]
struct MeteredConnector {
    inner: SharedHttpConnector,
    meter: Meter,
}

impl HttpConnector for MeteredConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        self.meter.observe(&request);
        self.inner.call(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn item_sizes_follow_dynamodbs_rules() {
        assert_eq!(value_size(&json!({"S": "abc"})), 3);
        assert_eq!(value_size(&json!({"N": "12345"})), 4);
        assert_eq!(value_size(&json!({"BOOL": true})), 1);
        assert_eq!(value_size(&json!({"M": {"a": {"S": "xy"}}})), 3 + 1 + 2 + 1);
    }

    #[test]
    fn updates_are_billed_on_the_larger_of_before_and_after() {
        let mut state = State::default();
        let big = "x".repeat(3000);
        state.observe_dynamodb(
            "PutItem",
            &json!({"TableName": "t", "Item": {"pk": {"S": "a"}, "sk": {"S": "b"}, "outbox": {"S": big}}}),
        );
        state.observe_dynamodb(
            "UpdateItem",
            &json!({"TableName": "t", "Key": {"pk": {"S": "a"}, "sk": {"S": "b"}}, "UpdateExpression": "REMOVE pending, outbox"}),
        );
        let ops = &state.snapshot.operations;
        assert_eq!(ops["DynamoDB.PutItem"].write_units, 3);
        assert_eq!(ops["DynamoDB.UpdateItem"].write_units, 3);
        state.observe_dynamodb(
            "GetItem",
            &json!({"TableName": "t", "Key": {"pk": {"S": "a"}, "sk": {"S": "b"}}, "ConsistentRead": true}),
        );
        assert_eq!(
            state.snapshot.operations["DynamoDB.GetItem"].read_units,
            1.0
        );
    }

    #[test]
    fn transactions_count_double() {
        let mut state = State::default();
        state.observe_dynamodb(
            "TransactWriteItems",
            &json!({"TransactItems": [
                {"Put": {"TableName": "t", "Item": {"pk": {"S": "a"}, "sk": {"S": "S"}}}},
                {"Update": {"TableName": "t", "Key": {"pk": {"S": "a"}, "sk": {"S": "H"}},
                    "UpdateExpression": "SET #v = :v", "ExpressionAttributeNames": {"#v": "version"},
                    "ExpressionAttributeValues": {":v": {"N": "2"}}}}
            ]}),
        );
        assert_eq!(
            state.snapshot.operations["DynamoDB.TransactWriteItems"].write_units,
            4
        );
    }

    #[test]
    fn the_status_index_is_written_when_the_status_appears_or_changes() {
        let mut state = State::default();
        let key = json!({"pk": {"S": "X#e"}, "sk": {"S": "S"}});
        state.observe_dynamodb(
            "PutItem",
            &json!({"TableName": "t", "Item": {"pk": {"S": "X#e"}, "sk": {"S": "S"},
                "status": {"S": "running"}, "ord": {"S": "000000000000001#e"}}}),
        );
        let commit = |status: &str| {
            json!({"TableName": "t", "Key": key,
                "UpdateExpression": "SET #v = :v, #st = :st REMOVE #state",
                "ExpressionAttributeNames": {"#v": "version", "#st": "status", "#state": "state"},
                "ExpressionAttributeValues": {":v": {"N": "2"}, ":st": {"S": status}}})
        };
        state.observe_dynamodb("UpdateItem", &commit("running"));
        assert_eq!(
            state.snapshot.operations[INDEX_WRITES].write_units, 1,
            "a commit that keeps the status writes no index entry"
        );
        state.observe_dynamodb("UpdateItem", &commit("succeeded"));
        assert_eq!(
            state.snapshot.operations[INDEX_WRITES].write_units, 3,
            "a status change is a delete and a put"
        );
        // An item outside the index (no `ord`) never writes it.
        state.observe_dynamodb(
            "PutItem",
            &json!({"TableName": "t", "Item": {"pk": {"S": "X#e"}, "sk": {"S": "H#1"}, "status": {"S": "x"}}}),
        );
        assert_eq!(state.snapshot.operations[INDEX_WRITES].write_units, 3);
    }

    /// A request as the S3 client sends it to the emulator, signed.
    fn s3_request(method: &str, path: &str, body: &str) -> HttpRequest {
        let mut request = HttpRequest::get(format!("http://localhost:5000{path}")).unwrap();
        request.set_method(method).unwrap();
        request.headers_mut().insert(
            "authorization",
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261130/us-east-1/s3/aws4_request, \
             SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature=0f1e",
        );
        *request.body_mut() = body.to_string().into();
        request
    }

    #[test]
    fn s3_object_requests_are_counted_by_kind_with_the_bytes_put() {
        let meter = Meter::new();
        let payload = format!("{{\"blob\":\"{}\"}}", "x".repeat(5_000));
        let key = "/baton-payloads/payloads/ex-1/9f86d081884c7d65";
        meter.observe(&s3_request(
            "PUT",
            &format!("{key}?x-id=PutObject"),
            &payload,
        ));
        meter.observe(&s3_request("GET", &format!("{key}?x-id=GetObject"), ""));
        meter.observe(&s3_request("HEAD", key, ""));
        // Setting up the bucket is not an object request, and its XML body
        // is not read as DynamoDB's or SQS's JSON.
        meter.observe(&s3_request("PUT", "/baton-payloads", ""));
        meter.observe(&s3_request(
            "PUT",
            "/baton-payloads?lifecycle",
            "<LifecycleConfiguration><Rule><Prefix>payloads/</Prefix></Rule></LifecycleConfiguration>",
        ));
        let ops = meter.snapshot().operations;
        assert_eq!(
            ops.keys().map(String::as_str).collect::<Vec<_>>(),
            ["S3.GetObject", "S3.HeadObject", "S3.Other", "S3.PutObject"]
        );
        let put = ops["S3.PutObject"];
        assert_eq!((put.requests, put.bytes), (1, payload.len() as u64));
        let get = ops["S3.GetObject"];
        assert_eq!((get.requests, get.bytes), (1, 0));
        assert_eq!(ops["S3.HeadObject"].requests, 1);
        assert_eq!(ops["S3.Other"].requests, 2);
        assert_eq!(ops["S3.Other"].bytes, 0);
    }

    #[test]
    fn an_s3_put_in_aws_chunked_encoding_counts_the_objects_bytes() {
        let meter = Meter::new();
        let mut request = s3_request(
            "PUT",
            "/b/payloads/ex-1/k?x-id=PutObject",
            "1000;chunk-signature=0\r\n...",
        );
        request
            .headers_mut()
            .insert("x-amz-decoded-content-length", "4096");
        meter.observe(&request);
        assert_eq!(meter.snapshot().operations["S3.PutObject"].bytes, 4096);
        // A request signed for another service is not S3's, whatever its path.
        let mut other = s3_request("PUT", "/b/k", "");
        other.headers_mut().insert(
            "authorization",
            "AWS4-HMAC-SHA256 Credential=AKID/20261130/us-east-1/sqs/aws4_request, Signature=0",
        );
        meter.observe(&other);
        assert_eq!(meter.snapshot().operations.len(), 1);
    }
}
