//! `baton emit`: an EventBridge-style event on the embedded backend, matched
//! against every deployed workflow's triggers (the matching EventBridge does
//! on AWS, written once in `baton_core::trigger`); each match starts one
//! execution, whose id comes from the event's id.
//!
//! `baton --aws emit` puts the event on the stack's bus instead, where the
//! rules `baton --aws deploy` made deliver it to the coordinator queue.

use std::path::Path;
use std::sync::Arc;

use baton_core::trigger::Trigger;
use baton_runtime::ports::WorkflowStore;

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

fn detail(args: &EmitArgs<'_>) -> anyhow::Result<Value> {
    let detail = parse_json_arg("the detail", args.detail)?;
    if !detail.is_object() {
        return Err(bad(format!(
            "the detail must be a JSON object, as EventBridge's is, not `{detail}`"
        )));
    }
    Ok(detail)
}

/// The event as EventBridge would deliver it.
fn event(args: &EmitArgs<'_>, now: u64) -> anyhow::Result<Value> {
    let detail = detail(args)?;
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

/// Refuses what `baton --aws emit` cannot do, before AWS is reached.
pub fn check_aws_args(args: &EmitArgs<'_>) -> anyhow::Result<()> {
    if args.id.is_some() {
        return Err(bad(
            "on AWS, EventBridge gives the event its id: drop --id (each `baton --aws emit` is a new event)",
        ));
    }
    detail(args).map(drop)
}

/// Puts the event on the settings' bus and prints its id, with the
/// executions the deployed triggers it matches start once the coordinator
/// has it (the rules match as `baton_core::trigger` does, so the same
/// matching here names them).
/// Call [`check_aws_args`] first.
pub async fn emit_aws(
    backend: Arc<baton_aws::AwsBackend>,
    args: EmitArgs<'_>,
) -> anyhow::Result<u8> {
    let detail = detail(&args)?;
    let bus = &backend.settings().event_bus;
    let event_id = baton_aws::rules::put_event(
        &backend.clients().eventbridge,
        bus,
        args.source,
        args.detail_type,
        &detail,
    )
    .await?;
    // What EventBridge delivers, but for fields no trigger can tell apart here.
    let event = json!({
        "id": event_id, "source": args.source, "detail-type": args.detail_type, "detail": detail,
    });
    let mut matches = Vec::new();
    for stored in backend.list_workflows().await? {
        for definition in &stored.definition.triggers {
            if Trigger::compile(definition).is_ok_and(|t| t.matches(&event)) {
                matches.push((stored.name.clone(), definition.name.clone()));
            }
        }
    }
    if args.json {
        let matched: Vec<Value> = matches
            .iter()
            .map(|(workflow, trigger)| {
                json!({
                    "id": baton_core::trigger::execution_id(workflow, trigger, &event_id),
                    "workflow": workflow, "trigger": trigger,
                })
            })
            .collect();
        outln!(
            "{}",
            json!({ "event": event_id, "bus": bus, "matches": matched })
        );
        return Ok(0);
    }
    outln!("put event {event_id} on bus {bus}");
    if matches.is_empty() {
        outln!("it matches no deployed trigger");
    }
    for (workflow, trigger) in &matches {
        outln!(
            "  trigger `{trigger}` of workflow `{workflow}` matches: it starts {}",
            baton_core::trigger::execution_id(workflow, trigger, &event_id)
        );
    }
    Ok(0)
}
