//! Large payloads in S3, by reference.
//!
//! A step output, an input or a signal payload larger than
//! [`INLINE_PAYLOAD_BYTES`] is not written into DynamoDB: it is put once as
//! an S3 object under `payloads/{execution}/{sha256}` (so writing it again
//! is harmless and the same value is one object), and the item holds a
//! reference `{"$baton_payload": "<key>"}` in its place. Reading an item
//! puts the value back before anything else sees it: the engine, its
//! expressions and the next step's input never meet a reference.
//!
//! Which values are payloads is decided by where they sit in the stored JSON:
//! the members named `input`, `output` and `payload` (the names the engine's
//! events, commands and state give them) and signal queues. That keeps the
//! item's structure (its steps and units) inline however large it grows.
//!
//! Functions meet references too, at the edges Lambda limits: an attempt's
//! input larger than [`INLINE_INVOKE_BYTES`] reaches its function as a
//! reference (the function, or Baton's step SDK, reads the object), and a
//! function may return a reference to an object it wrote under its
//! execution's prefix instead of an output too large for a destination
//! record. The coordinator checks such an object's size before reading it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::SdkError;
use aws_sdk_s3::primitives::ByteStream;
use baton_runtime::ports::{StoreError, StoreResult};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::store::sdk_error;

/// Payloads larger than this go to S3: an S3 put and get cost less than
/// writing the value into DynamoDB twice from about 2 KiB up (see
/// BENCHMARKS.md, "AWS cost per million steps").
pub const INLINE_PAYLOAD_BYTES: usize = 4 * 1024;

/// An attempt's input larger than this reaches its function by reference:
/// Lambda's asynchronous invoke takes 256 KiB in all, the event's context
/// included.
pub const INLINE_INVOKE_BYTES: usize = 200 * 1024;

/// A function's output larger than this leaves by reference: Lambda's
/// destination record and the SQS message that carries it take 256 KiB.
pub const INLINE_RESULT_BYTES: usize = 200 * 1024;

/// The member naming a stored payload's key.
pub const REFERENCE: &str = "$baton_payload";

/// Where payload objects live in the bucket.
pub const PREFIX: &str = "payloads/";

/// Members whose values are payloads wherever they appear.
const PAYLOAD_MEMBERS: [&str; 4] = ["input", "output", "payload", "signals"];

/// Values read back, kept while they total at most this many bytes.
const CACHE_BYTES: usize = 64 * 1024 * 1024;

/// The payload bucket and what this process has put and read.
pub struct PayloadStore {
    client: aws_sdk_s3::Client,
    bucket: String,
    /// Keys this process has put or read, with the value's text.
    known: Mutex<KnownPayloads>,
}

#[derive(Default)]
struct KnownPayloads {
    texts: HashMap<String, Arc<str>>,
    bytes: usize,
}

impl KnownPayloads {
    fn get(&self, key: &str) -> Option<Arc<str>> {
        self.texts.get(key).cloned()
    }

    fn insert(&mut self, key: String, text: Arc<str>) {
        if self.bytes + text.len() > CACHE_BYTES {
            self.texts.clear();
            self.bytes = 0;
        }
        self.bytes += text.len();
        self.texts.insert(key, text);
    }
}

/// A value taken out of a document, to be put before the document is written.
#[derive(Debug, Clone, PartialEq)]
pub struct Extracted {
    pub key: String,
    pub text: String,
}

/// The reference that stands for the object at `key`.
pub fn reference(key: &str) -> Value {
    Value::Object(Map::from_iter([(
        REFERENCE.to_string(),
        Value::String(key.to_string()),
    )]))
}

/// The key a value is a reference to, if it is one.
pub fn referenced_key(value: &Value) -> Option<&str> {
    match value {
        Value::Object(map) if map.len() == 1 => map.get(REFERENCE)?.as_str(),
        _ => None,
    }
}

/// Where a value of execution `id` is stored: its content's hash under the
/// execution's prefix.
pub fn key_for(execution_id: &str, text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("{}{hex}", execution_prefix(execution_id))
}

/// The prefix every payload of execution `id` is stored under.
pub fn execution_prefix(execution_id: &str) -> String {
    format!("{PREFIX}{execution_id}/")
}

/// Replaces every payload in `document` larger than `threshold` bytes by a
/// reference; returns the values taken out. Pure, so the rule is tested
/// without S3.
pub fn extract(document: &mut Value, execution_id: &str, threshold: usize) -> Vec<Extracted> {
    let mut out = Vec::new();
    walk(document, execution_id, threshold, &mut out);
    out
}

fn walk(value: &mut Value, execution_id: &str, threshold: usize, out: &mut Vec<Extracted>) {
    match value {
        Value::Object(map) => {
            for (name, member) in map.iter_mut() {
                if PAYLOAD_MEMBERS.contains(&name.as_str()) {
                    take_if_large(member, execution_id, threshold, out);
                } else {
                    walk(member, execution_id, threshold, out);
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                walk(item, execution_id, threshold, out);
            }
        }
        _ => {}
    }
}

fn take_if_large(
    value: &mut Value,
    execution_id: &str,
    threshold: usize,
    out: &mut Vec<Extracted>,
) {
    if referenced_key(value).is_some()
        || matches!(value, Value::Null | Value::Bool(_) | Value::Number(_))
    {
        return;
    }
    let text = value.to_string();
    if text.len() <= threshold {
        return;
    }
    let key = key_for(execution_id, &text);
    *value = reference(&key);
    out.push(Extracted { key, text });
}

/// Every key `document` refers to.
pub fn references(document: &Value) -> Vec<String> {
    let mut keys = Vec::new();
    collect(document, &mut keys);
    keys
}

fn collect(value: &Value, keys: &mut Vec<String>) {
    if let Some(key) = referenced_key(value) {
        keys.push(key.to_string());
        return;
    }
    match value {
        Value::Object(map) => map.values().for_each(|v| collect(v, keys)),
        Value::Array(items) => items.iter().for_each(|v| collect(v, keys)),
        _ => {}
    }
}

/// Puts back the values of `texts` where `document` refers to them.
fn restore(value: &mut Value, texts: &HashMap<String, Value>) {
    if let Some(key) = referenced_key(value) {
        if let Some(found) = texts.get(key) {
            *value = found.clone();
        }
        return;
    }
    match value {
        Value::Object(map) => map.values_mut().for_each(|v| restore(v, texts)),
        Value::Array(items) => items.iter_mut().for_each(|v| restore(v, texts)),
        _ => {}
    }
}

/// An S3 client's configuration from the shared one: emulators serve
/// buckets by path, not by host name.
pub fn s3_config(shared: &aws_config::SdkConfig) -> aws_sdk_s3::config::Builder {
    aws_sdk_s3::config::Builder::from(shared).force_path_style(shared.endpoint_url().is_some())
}

impl PayloadStore {
    pub fn new(client: aws_sdk_s3::Client, bucket: impl Into<String>) -> PayloadStore {
        PayloadStore {
            client,
            bucket: bucket.into(),
            known: Mutex::new(KnownPayloads::default()),
        }
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    fn known(&self) -> std::sync::MutexGuard<'_, KnownPayloads> {
        // Holds only immutable texts; a panic elsewhere cannot corrupt it.
        self.known.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The JSON text of `document` as stored: payloads over the threshold
    /// put first, so no reader ever meets a reference without its object.
    pub async fn store(&self, document: &Value, execution_id: &str) -> StoreResult<String> {
        let mut stored = document.clone();
        let extracted = extract(&mut stored, execution_id, INLINE_PAYLOAD_BYTES);
        for piece in extracted {
            self.put(piece.key, piece.text).await?;
        }
        Ok(stored.to_string())
    }

    /// Puts `text` at `key`, unless this process already did.
    pub async fn put(&self, key: String, text: String) -> StoreResult<()> {
        if self.known().get(&key).is_some() {
            return Ok(());
        }
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(&key)
            .content_type("application/json")
            .body(ByteStream::from(text.clone().into_bytes()))
            .send()
            .await
            .map_err(sdk_error)?;
        self.known().insert(key, Arc::from(text));
        Ok(())
    }

    /// Stores `value` as one payload of execution `id`; returns its reference.
    pub async fn put_value(&self, execution_id: &str, value: &Value) -> StoreResult<Value> {
        let text = value.to_string();
        let key = key_for(execution_id, &text);
        self.put(key.clone(), text).await?;
        Ok(reference(&key))
    }

    /// What a function's handler is given: its input, read back if it came
    /// by reference (Baton's step SDK and `baton dev` do this).
    pub async fn function_input(&self, input: Value) -> StoreResult<Value> {
        match referenced_key(&input) {
            Some(_) => self.resolve(input).await,
            None => Ok(input),
        }
    }

    /// What a function returns for `output`: itself, or a reference to it
    /// when a destination record could not carry it.
    pub async fn function_output(&self, execution_id: &str, output: Value) -> StoreResult<Value> {
        if output.to_string().len() <= INLINE_RESULT_BYTES {
            return Ok(output);
        }
        self.put_value(execution_id, &output).await
    }

    /// `document` with every reference replaced by its value.
    pub async fn resolve(&self, mut document: Value) -> StoreResult<Value> {
        let keys = references(&document);
        if keys.is_empty() {
            return Ok(document);
        }
        let mut values = HashMap::new();
        for key in keys {
            let text = self.get(&key, None).await?;
            let value: Value = serde_json::from_str(&text).map_err(|e| StoreError::Corrupt {
                what: format!("payload `{key}`"),
                message: e.to_string(),
            })?;
            values.insert(key, value);
        }
        restore(&mut document, &values);
        Ok(document)
    }

    /// Parses stored JSON text, resolving its references when it has any.
    pub async fn parse<T: serde::de::DeserializeOwned>(
        &self,
        what: &str,
        text: &str,
    ) -> StoreResult<T> {
        let corrupt = |e: serde_json::Error| StoreError::Corrupt {
            what: what.to_string(),
            message: e.to_string(),
        };
        if !text.contains(REFERENCE) {
            return serde_json::from_str(text).map_err(corrupt);
        }
        let document: Value = serde_json::from_str(text).map_err(corrupt)?;
        serde_json::from_value(self.resolve(document).await?).map_err(corrupt)
    }

    /// A function's output given by reference: the object must lie under
    /// its execution's prefix and be at most `limit` bytes, which is checked
    /// before it is read.
    pub async fn output(&self, execution_id: &str, key: &str, limit: usize) -> StoreResult<Value> {
        if !key.starts_with(&execution_prefix(execution_id)) {
            return Err(StoreError::Rejected {
                code: "PayloadOutsideExecution".into(),
                message: format!(
                    "payload `{key}` is not under `{}`",
                    execution_prefix(execution_id)
                ),
            });
        }
        // Without s3:ListBucket (the stack grants only objects under
        // payloads/), S3 answers a missing key with 403, not 404.
        let text = match self.get(key, Some(limit)).await {
            Err(StoreError::Denied(_)) => {
                return Err(StoreError::Rejected {
                    code: "PayloadMissing".into(),
                    message: format!("payload `{key}` does not exist or may not be read"),
                });
            }
            other => other?,
        };
        serde_json::from_str(&text).map_err(|e| StoreError::Rejected {
            code: "PayloadNotJson".into(),
            message: format!("payload `{key}` is not JSON: {e}"),
        })
    }

    /// The object's text; with a `limit`, a larger object is refused as
    /// [`StoreError::TooLarge`] without being read.
    async fn get(&self, key: &str, limit: Option<usize>) -> StoreResult<Arc<str>> {
        if let Some(text) = self.known().get(key) {
            return Ok(text);
        }
        if let Some(limit) = limit {
            let head = self
                .client
                .head_object()
                .bucket(&self.bucket)
                .key(key)
                .send()
                .await
                .map_err(|e| missing_or(e, key))?;
            let size = head.content_length().unwrap_or(0).max(0) as usize;
            if size > limit {
                return Err(StoreError::TooLarge {
                    what: format!("payload `{key}`"),
                    size,
                    limit,
                });
            }
        }
        let object = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| missing_or(e, key))?;
        let bytes = object
            .body
            .collect()
            .await
            .map_err(|e| StoreError::Unavailable(format!("reading payload `{key}`: {e}")))?
            .into_bytes();
        let text: Arc<str> =
            Arc::from(
                String::from_utf8(bytes.to_vec()).map_err(|_| StoreError::Corrupt {
                    what: format!("payload `{key}`"),
                    message: "not UTF-8".into(),
                })?,
            );
        self.known().insert(key.to_string(), text.clone());
        Ok(text)
    }
}

/// A missing object is refused for good (`NoSuchKey`, or `NotFound` from a
/// HEAD, which has no body to name it); anything else as the SDK classifies it.
fn missing_or<E>(e: SdkError<E, HttpResponse>, key: &str) -> StoreError
where
    E: aws_sdk_s3::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    if let SdkError::ServiceError(service) = &e
        && matches!(service.err().code(), Some("NoSuchKey" | "NotFound"))
    {
        return StoreError::Rejected {
            code: "PayloadMissing".into(),
            message: format!("payload `{key}` does not exist"),
        };
    }
    sdk_error(e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_large_payload_members_are_taken_out() {
        let big = "x".repeat(5_000);
        let mut document = json!({
            "h": [{"seq": 1, "event": {"TaskSucceeded": {"task": {"step": "a"}, "output": {"blob": big}}}}],
            "o": [{"command": {"Dispatch": {"input": {"small": 1}}}}],
            "steps": [{"name": "b", "output": "short"}],
        });
        let extracted = extract(&mut document, "ex-1", INLINE_PAYLOAD_BYTES);
        assert_eq!(extracted.len(), 1);
        let key = &extracted[0].key;
        assert!(key.starts_with("payloads/ex-1/"), "{key}");
        assert_eq!(
            document["h"][0]["event"]["TaskSucceeded"]["output"],
            reference(key)
        );
        assert_eq!(
            document["o"][0]["command"]["Dispatch"]["input"],
            json!({"small": 1})
        );
        assert_eq!(document["steps"][0]["output"], json!("short"));
        let restored: Value = serde_json::from_str(&extracted[0].text).unwrap();
        assert_eq!(restored, json!({"blob": "x".repeat(5_000)}));
    }

    #[test]
    fn the_same_value_has_the_same_key_and_a_structure_stays_inline() {
        let units: Vec<Value> = (0..2_000)
            .map(|i| json!({"status": "succeeded", "attempt": i}))
            .collect();
        let mut state = json!({"steps": [{"units": units}]});
        assert!(
            extract(&mut state, "ex", 100).is_empty(),
            "units are not payloads"
        );
        assert_eq!(key_for("ex", "[1,2]"), key_for("ex", "[1,2]"));
        assert_ne!(key_for("ex", "[1,2]"), key_for("ex", "[2,1]"));
        assert_ne!(key_for("ex", "[1,2]"), key_for("other", "[1,2]"));
    }

    #[test]
    fn restore_puts_values_back_where_they_were_referenced() {
        let mut document = json!({"a": {"output": reference("k1")}, "b": [reference("k2")]});
        assert_eq!(references(&document), vec!["k1", "k2"]);
        let values = HashMap::from([
            ("k1".to_string(), json!([1, 2])),
            ("k2".to_string(), json!("two")),
        ]);
        restore(&mut document, &values);
        assert_eq!(document, json!({"a": {"output": [1, 2]}, "b": ["two"]}));
    }
}
