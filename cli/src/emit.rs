//! `baton emit`: an EventBridge-style event on the embedded backend, matched
//! against every deployed workflow's triggers (the matching EventBridge does
//! on AWS, written once in `baton_core::trigger`); each match starts one
//! execution, whose id comes from the event's id.

use std::path::Path;

use baton_runtime::Clock;
use baton_runtime::SystemClock;
use baton_runtime::triggers::{EventOutcome, TriggerError, start_matching};
use serde_json::{Value, json};

use crate::app::{bad, coordinator, open_backend, parse_json_arg};
use crate::display::{errln, outln};

/// What the command line says of the event.
pub struct EmitArgs<'a> {
    pub source: &'a str,
    pub detail_type: &'a str,
    /// JSON, or @path to a JSON file.
    pub detail: &'a str,
    pub id: Option<&'a str>,
    pub json: bool,
}

/// The event as EventBridge would deliver it.
fn event(args: &EmitArgs<'_>, now: u64) -> anyhow::Result<Value> {
    let detail = parse_json_arg("the detail", args.detail)?;
    if !detail.is_object() {
        return Err(bad(format!(
            "the detail must be a JSON object, as EventBridge's is, not `{detail}`"
        )));
    }
    let id = match args.id {
        Some(id) => id.to_string(),
        None => new_event_id(now),
    };
    Ok(json!({
        "version": "0",
        "id": id,
        "detail-type": args.detail_type,
        "source": args.source,
        "account": "",
        "time": baton_core::schedule::scheduled_time(now),
        "region": "",
        "resources": [],
        "detail": detail,
    }))
}

/// A fresh id for an event given none: unique per process and instant.
fn new_event_id(now: u64) -> String {
    static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{now:x}-{:x}-{n:x}", std::process::id())
}

/// Exit codes: 0 when everything that matched started (or had started);
/// 2 for an event or a trigger input no retry fixes; 1 when a start failed
/// for a reason that may pass (emitting the same event again retries it).
pub async fn emit(db: &Path, args: EmitArgs<'_>) -> anyhow::Result<u8> {
    let now = SystemClock.now();
    let event = event(&args, now)?;
    let event_id = event["id"].as_str().unwrap_or_default().to_string();
    let coordinator = coordinator(open_backend(db)?);
    let outcome = match start_matching(&coordinator, &event).await {
        Ok(outcome) => outcome,
        Err(e @ TriggerError::Malformed(_)) => return Err(bad(e.to_string())),
        Err(e) => return Err(e.into()),
    };
    print(&event_id, &outcome, args.json)?;
    Ok(if outcome.failed.is_empty() {
        0
    } else if outcome.is_retryable() {
        1
    } else {
        2
    })
}

fn print(event_id: &str, outcome: &EventOutcome, json: bool) -> anyhow::Result<()> {
    if json {
        let started: Vec<Value> = outcome
            .started
            .iter()
            .map(|s| {
                json!({
                    "id": s.execution_id, "workflow": s.workflow, "version": s.version,
                    "trigger": s.trigger, "created": s.created,
                })
            })
            .collect();
        let failed: Vec<Value> = outcome
            .failed
            .iter()
            .map(|e| json!({ "error": e.to_string(), "retryable": e.is_retryable() }))
            .collect();
        outln!(
            "{}",
            json!({ "event": event_id, "started": started, "failed": failed })
        );
        return Ok(());
    }
    if outcome.started.is_empty() && outcome.failed.is_empty() {
        outln!("event {event_id} matched no trigger");
    }
    for s in &outcome.started {
        if s.created {
            outln!(
                "started {} (workflow `{}` version {}, trigger `{}`)",
                s.execution_id,
                s.workflow,
                s.version,
                s.trigger
            );
        } else {
            outln!(
                "{} already started by event {event_id} (workflow `{}`, trigger `{}`)",
                s.execution_id,
                s.workflow,
                s.trigger
            );
        }
    }
    for e in &outcome.failed {
        errln!("error: {e}");
    }
    Ok(())
}
