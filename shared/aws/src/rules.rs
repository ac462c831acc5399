//! Workflows' event triggers as EventBridge rules.
//!
//! Registering a definition ([`crate::AwsBackend`]'s `put_workflow`, behind
//! `PUT /workflows/{name}` and `baton deploy --aws`) makes the settings'
//! event bus hold exactly one rule per trigger of the workflow, named from
//! the coordinator queue, workflow and trigger ([`rule_name`]): created or
//! replaced (`PutRule`, `PutTargets`) to match, and deleted (targets first,
//! as EventBridge requires) when the trigger is gone. A rule's pattern is
//! the trigger's, as written, and its one target is the coordinator queue.
//!
//! The target's input transformer wraps the matched event in a `trigger`
//! message naming the workflow and trigger
//! (`{"kind": "trigger", "workflow": ..., "trigger": ..., "event": <aws.events.event.json>}`),
//! so the coordinator reads that one workflow rather than every workflow's
//! triggers; it matches the event against the trigger's current pattern again
//! and starts the execution whose id the event's id gives (see
//! [`baton_runtime::triggers`]). The queue's policy must let
//! `events.amazonaws.com` send from these rules (`template.yaml` does).
//!
//! Rule names carry a hash of the coordinator queue's ARN: two Baton stacks
//! on one bus (the `default` bus is shared by everything in an account and
//! region) never replace or delete each other's rules.

use std::collections::BTreeSet;

use aws_sdk_eventbridge::error::SdkError;
use aws_sdk_eventbridge::types::{InputTransformer, PutEventsRequestEntry, RuleState, Target};
use baton_core::trigger::Trigger;
use baton_core::{TaskKind, WorkflowDefinition};
use baton_runtime::ports::{StoreError, StoreResult};
use tracing::info;

use crate::config::AwsSettings;
use crate::messages::CoordinatorMessage;
use crate::store::sdk_error;

/// EventBridge's limit on a rule name.
pub const MAX_NAME: usize = 64;
/// The id of a rule's one target, the coordinator queue.
pub const TARGET_ID: &str = "baton-coordinator";
/// What EventBridge replaces with the whole matched event, as JSON.
pub const EVENT_JSON: &str = "<aws.events.event.json>";

fn short_hash(text: &str, len: usize) -> String {
    let key = baton_core::idempotency::key(text, "rule", None, TaskKind::Step);
    key[3..3 + len].to_string()
}

/// The prefix of every rule of `workflow` that sends to `queue_arn`:
/// `baton.{queue hash}.{workflow}.`, or `baton.{queue hash}..{hash}.` for a
/// long name. Workflow names have no dots, so no workflow's prefix is the
/// start of another's.
pub fn workflow_prefix(queue_arn: &str, workflow: &str) -> String {
    let stack = short_hash(queue_arn, 8);
    let plain = format!("baton.{stack}.{workflow}.");
    if plain.len() <= 40 {
        plain
    } else {
        format!("baton.{stack}..{}.", short_hash(workflow, 16))
    }
}

/// The name of the rule of a workflow's trigger, at most 64 characters: a
/// long trigger name is cut and ended with a hash of it.
pub fn rule_name(queue_arn: &str, workflow: &str, trigger: &str) -> String {
    let prefix = workflow_prefix(queue_arn, workflow);
    let plain = format!("{prefix}{trigger}");
    if plain.len() <= MAX_NAME {
        return plain;
    }
    let hash = short_hash(trigger, 12);
    let keep = MAX_NAME - prefix.len() - hash.len() - 1;
    let cut: String = trigger.chars().take(keep).collect();
    format!("{prefix}{cut}.{hash}")
}

/// The input transformer's template: a `trigger` coordinator message with
/// the event in it.
pub fn input_template(workflow: &str, trigger: &str) -> String {
    // The message with a placeholder string where the event goes, then the
    // quoted placeholder swapped for EventBridge's bare variable.
    let message = CoordinatorMessage::Trigger {
        workflow: workflow.to_string(),
        trigger: trigger.to_string(),
        event: serde_json::Value::String(EVENT_JSON.into()),
        execution_id: String::new(),
    }
    .to_json();
    message.replace(&format!("\"{EVENT_JSON}\""), EVENT_JSON)
}

/// One rule as it should be on the bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    pub name: String,
    /// The trigger's pattern, as JSON.
    pub pattern: String,
    /// The coordinator queue's ARN.
    pub target: String,
    pub input_template: String,
    pub description: String,
}

fn refused(workflow: &str, message: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        what: format!("the triggers of workflow `{workflow}`"),
        message: message.into(),
    }
}

/// What a definition's triggers should be on the bus. An error names what
/// cannot be registered: a trigger that does not validate, or settings
/// without the coordinator queue's ARN the rules target.
pub fn desired_for(
    definition: &WorkflowDefinition,
    settings: &AwsSettings,
) -> StoreResult<Vec<Desired>> {
    if definition.triggers.is_empty() {
        return Ok(Vec::new());
    }
    let name = &definition.name;
    let Some(queue) = &settings.coordinator_queue_arn else {
        return Err(refused(name, "triggers need BATON_COORDINATOR_QUEUE_ARN"));
    };
    definition
        .triggers
        .iter()
        .map(|t| {
            Trigger::compile(t).map_err(|problems| {
                let list: Vec<String> = problems
                    .iter()
                    .map(|p| format!("`{}`: {}", p.field, p.message))
                    .collect();
                refused(name, format!("`{}`: {}", t.name, list.join("; ")))
            })?;
            Ok(Desired {
                name: rule_name(queue, name, &t.name),
                pattern: t.pattern.0.to_string(),
                target: queue.clone(),
                input_template: input_template(name, &t.name),
                description: format!("Baton: workflow `{name}`, trigger `{}`", t.name),
            })
        })
        .collect()
}

/// What [`sync`] changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Synced {
    pub put: Vec<String>,
    pub deleted: Vec<String>,
}

/// Names of the rules on the bus that start with `prefix`.
pub async fn list_names(
    client: &aws_sdk_eventbridge::Client,
    bus: &str,
    prefix: &str,
) -> StoreResult<BTreeSet<String>> {
    let mut names = BTreeSet::new();
    let mut token = None;
    loop {
        let out = client
            .list_rules()
            .event_bus_name(bus)
            .name_prefix(prefix)
            .set_next_token(token)
            .send()
            .await
            .map_err(sdk_error)?;
        for rule in out.rules() {
            // Filtered again: a stand-in may ignore the prefix.
            if let Some(name) = rule.name().filter(|n| n.starts_with(prefix)) {
                names.insert(name.to_string());
            }
        }
        token = out.next_token().map(str::to_string);
        if token.is_none() {
            return Ok(names);
        }
    }
}

/// Makes the bus hold exactly `desired` among `workflow`'s rules that send
/// to `queue_arn`.
pub async fn sync(
    client: &aws_sdk_eventbridge::Client,
    bus: &str,
    queue_arn: &str,
    workflow: &str,
    desired: &[Desired],
) -> StoreResult<Synced> {
    let existing = list_names(client, bus, &workflow_prefix(queue_arn, workflow)).await?;
    let mut synced = Synced::default();
    for rule in desired {
        put(client, bus, rule).await?;
        synced.put.push(rule.name.clone());
    }
    let keep: BTreeSet<&str> = desired.iter().map(|d| d.name.as_str()).collect();
    for name in existing.iter().filter(|n| !keep.contains(n.as_str())) {
        delete(client, bus, name).await?;
        synced.deleted.push(name.clone());
    }
    if synced != Synced::default() {
        info!(workflow.name = %workflow, event_bus = %bus, put = ?synced.put, deleted = ?synced.deleted, "trigger rules synced");
    }
    Ok(synced)
}

/// A failure EventBridge reports per entry (in a 200 answer), as the
/// backend's error: by its code, as a failed request would be.
fn entry_error(code: Option<&str>, message: String) -> StoreError {
    match crate::errors::disposition(code, None) {
        crate::errors::Disposition::Transient => StoreError::Unavailable(message),
        crate::errors::Disposition::Denied => StoreError::Denied(message),
        crate::errors::Disposition::Rejected => StoreError::Rejected {
            code: code.unwrap_or("FailedEntry").to_string(),
            message,
        },
    }
}

/// Puts one event on `bus` (what `baton --aws emit` does), for the rules
/// there to deliver; returns the id EventBridge gave it. `detail` must be
/// a JSON object.
pub async fn put_event(
    client: &aws_sdk_eventbridge::Client,
    bus: &str,
    source: &str,
    detail_type: &str,
    detail: &serde_json::Value,
) -> StoreResult<String> {
    let entry = PutEventsRequestEntry::builder()
        .event_bus_name(bus)
        .source(source)
        .detail_type(detail_type)
        .detail(detail.to_string())
        .build();
    let out = client
        .put_events()
        .entries(entry)
        .send()
        .await
        .map_err(sdk_error)?;
    // PutEvents answers 200 with failures counted and listed per entry.
    let entry = out.entries().first();
    let code = entry.and_then(|e| e.error_code());
    if out.failed_entry_count() > 0 || code.is_some() {
        let message = format!(
            "the event was not put on bus `{bus}`: {}: {}",
            code.unwrap_or("FailedEntry"),
            entry
                .and_then(|e| e.error_message())
                .unwrap_or("no message")
        );
        return Err(entry_error(code, message));
    }
    entry
        .and_then(|e| e.event_id())
        .map(str::to_string)
        .ok_or_else(|| StoreError::Corrupt {
            what: format!("PutEvents on bus `{bus}`"),
            message: "the answer names no event id".into(),
        })
}

/// Creates or replaces a rule and its target.
async fn put(client: &aws_sdk_eventbridge::Client, bus: &str, rule: &Desired) -> StoreResult<()> {
    let bad = |e: aws_sdk_eventbridge::error::BuildError| StoreError::Corrupt {
        what: format!("rule `{}`", rule.name),
        message: e.to_string(),
    };
    client
        .put_rule()
        .name(&rule.name)
        .event_bus_name(bus)
        .event_pattern(&rule.pattern)
        .state(RuleState::Enabled)
        .description(&rule.description)
        .send()
        .await
        .map_err(sdk_error)?;
    let target = Target::builder()
        .id(TARGET_ID)
        .arn(&rule.target)
        .input_transformer(
            InputTransformer::builder()
                .input_template(&rule.input_template)
                .build()
                .map_err(bad)?,
        )
        .build()
        .map_err(bad)?;
    let out = client
        .put_targets()
        .rule(&rule.name)
        .event_bus_name(bus)
        .targets(target)
        .send()
        .await
        .map_err(sdk_error)?;
    // PutTargets answers 200 with failures listed per target.
    if let Some(failed) = out.failed_entries().first() {
        let message = format!(
            "rule `{}`: its target was not set: {}",
            rule.name,
            failed.error_message().unwrap_or("no message")
        );
        return Err(entry_error(failed.error_code(), message));
    }
    Ok(())
}

/// Deletes a rule, its targets first; one already gone is not an error.
async fn delete(client: &aws_sdk_eventbridge::Client, bus: &str, name: &str) -> StoreResult<()> {
    let targets = match client
        .list_targets_by_rule()
        .rule(name)
        .event_bus_name(bus)
        .send()
        .await
    {
        Ok(out) => out
            .targets()
            .iter()
            .map(|t| t.id().to_string())
            .collect::<Vec<_>>(),
        Err(SdkError::ServiceError(e)) if e.err().is_resource_not_found_exception() => {
            return Ok(());
        }
        Err(e) => return Err(sdk_error(e)),
    };
    if !targets.is_empty() {
        match client
            .remove_targets()
            .rule(name)
            .event_bus_name(bus)
            .set_ids(Some(targets))
            .send()
            .await
        {
            Ok(_) => {}
            Err(SdkError::ServiceError(e)) if e.err().is_resource_not_found_exception() => {
                return Ok(());
            }
            Err(e) => return Err(sdk_error(e)),
        }
    }
    match client
        .delete_rule()
        .name(name)
        .event_bus_name(bus)
        .send()
        .await
    {
        Ok(_) => Ok(()),
        Err(SdkError::ServiceError(e)) if e.err().is_resource_not_found_exception() => Ok(()),
        Err(e) => Err(sdk_error(e)),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    const QUEUE: &str = "arn:aws:sqs:us-east-1:123456789012:baton-coordinator";

    #[test]
    fn names_fit_and_prefixes_do_not_overlap() {
        let name = rule_name(QUEUE, "orders", "placed");
        assert!(
            name.starts_with("baton.") && name.ends_with(".orders.placed"),
            "{name}"
        );
        let long_workflow = "w".repeat(60);
        let long_trigger = "t".repeat(64);
        for (w, t) in [
            ("orders", long_trigger.as_str()),
            (long_workflow.as_str(), "placed"),
            (long_workflow.as_str(), long_trigger.as_str()),
        ] {
            let name = rule_name(QUEUE, w, t);
            assert!(name.len() <= MAX_NAME, "{name}");
            assert!(name.starts_with(&workflow_prefix(QUEUE, w)), "{name}");
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)),
                "{name}"
            );
        }
        assert!(!workflow_prefix(QUEUE, "orders-2").starts_with(&workflow_prefix(QUEUE, "orders")));
        // Another stack's queue, another namespace.
        assert_ne!(
            workflow_prefix(QUEUE, "orders"),
            workflow_prefix(&format!("{QUEUE}-2"), "orders")
        );
    }

    #[test]
    fn the_template_is_a_trigger_message_once_the_event_is_in() {
        let template = input_template("orders", "placed");
        assert!(template.contains(EVENT_JSON), "{template}");
        // What EventBridge sends: the variable replaced by the event's JSON.
        let event = json!({"id": "e-1", "source": "shop", "detail-type": "Order Placed", "detail": {"a": 1}});
        let body = template.replace(EVENT_JSON, &event.to_string());
        let parsed: Value = serde_json::from_str(&body).expect("JSON");
        assert_eq!(parsed["kind"], "trigger");
        match CoordinatorMessage::decode(&body).expect("decodes") {
            CoordinatorMessage::Trigger {
                workflow,
                trigger,
                event: got,
                execution_id,
            } => {
                assert_eq!((workflow.as_str(), trigger.as_str()), ("orders", "placed"));
                assert_eq!(got, event);
                assert_eq!(execution_id, "orders:placed:e-1");
            }
            other => panic!("{other:?}"),
        }
    }
}
