//! Workflows' cron schedules on EventBridge Scheduler.
//!
//! Registering a definition ([`crate::AwsBackend`]'s `put_workflow`, behind
//! `PUT /workflows/{name}` and `baton deploy --aws`) makes the settings'
//! schedule group hold exactly the workflow's schedules: one EventBridge
//! Scheduler schedule each, named from workflow and schedule
//! ([`schedule_name`]), created, updated or deleted to match. Each is the
//! expression in EventBridge's 6-field form read in the schedule's zone
//! (`ScheduleExpressionTimezone`), no flexible window, `ENABLED` or
//! `DISABLED`, and sends the coordinator queue a `start` message whose
//! execution id embeds `<aws.scheduler.scheduled-time>`: the id the embedded
//! worker derives for the same instant, so a duplicate delivery starts nothing.
//!
//! On the coordinator side, [`start`] recognises such an id, writes its time
//! the canonical way and applies `overlap: skip` by looking at the
//! executions of the schedule's previous instants. Catch-up does not apply:
//! EventBridge Scheduler fires whether or not Baton's functions are running,
//! and retries a delivery on its own.

use std::collections::BTreeSet;

use aws_sdk_scheduler::error::SdkError;
use aws_sdk_scheduler::types::{FlexibleTimeWindow, FlexibleTimeWindowMode, ScheduleState, Target};
use baton_core::schedule::{self, Overlap, Schedule};
use baton_core::{TaskKind, Workflow, WorkflowDefinition};
use baton_runtime::ports::{Backend, StoreError, StoreResult};
use baton_runtime::{Coordinator, CoordinatorError, Started};
use serde_json::Value;
use tracing::{debug, info};

use crate::config::AwsSettings;
use crate::messages::CoordinatorMessage;
use crate::store::sdk_error;

/// Every Baton schedule's name starts with this; timers use `baton-timer-`.
pub const NAME_PREFIX: &str = "baton.";
/// EventBridge Scheduler's limit on a schedule name.
pub const MAX_NAME: usize = 64;
/// The context attribute EventBridge Scheduler replaces with the instant it fires for.
pub const SCHEDULED_TIME: &str = "<aws.scheduler.scheduled-time>";
/// How many earlier instants `overlap: skip` looks through for the previous execution.
pub const OVERLAP_LOOK_BACK: usize = 100;

fn short_hash(text: &str, len: usize) -> String {
    let key = baton_core::idempotency::key(text, "schedule", None, TaskKind::Step);
    key[3..3 + len].to_string()
}

/// The prefix of every schedule of `workflow`: `baton.{workflow}.`, or
/// `baton..{hash}.` for a long name. Workflow names have no dots, so no
/// workflow's prefix is the start of another's.
pub fn workflow_prefix(workflow: &str) -> String {
    let plain = format!("{NAME_PREFIX}{workflow}.");
    if plain.len() <= 40 {
        plain
    } else {
        format!("{NAME_PREFIX}.{}.", short_hash(workflow, 16))
    }
}

/// The EventBridge Scheduler name of a workflow's schedule, at most 64
/// characters: `baton.{workflow}.{schedule}`, a long schedule name cut and
/// ended with a hash of it.
pub fn schedule_name(workflow: &str, schedule: &str) -> String {
    let prefix = workflow_prefix(workflow);
    let plain = format!("{prefix}{schedule}");
    if plain.len() <= MAX_NAME {
        return plain;
    }
    let hash = short_hash(schedule, 12);
    let keep = MAX_NAME - prefix.len() - hash.len() - 1;
    let cut: String = schedule.chars().take(keep).collect();
    format!("{prefix}{cut}.{hash}")
}

/// The message a schedule sends: a start whose id EventBridge Scheduler
/// completes with the scheduled time.
pub fn start_message(workflow: &str, schedule: &Schedule) -> String {
    CoordinatorMessage::Start {
        workflow: workflow.to_string(),
        version: None,
        execution_id: format!("{workflow}-{}-{SCHEDULED_TIME}", schedule.name),
        input: schedule.input.clone(),
    }
    .to_json()
}

/// One schedule as it should be on EventBridge Scheduler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    pub name: String,
    pub expression: String,
    pub timezone: String,
    pub enabled: bool,
    /// The coordinator queue's ARN.
    pub target: String,
    /// The role EventBridge Scheduler sends with.
    pub role: String,
    /// The message sent.
    pub input: String,
    pub description: String,
}

fn refused(workflow: &str, message: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        what: format!("the schedules of workflow `{workflow}`"),
        message: message.into(),
    }
}

/// What a definition's schedules should be on EventBridge Scheduler. An
/// error names what cannot be registered: a definition that does not
/// validate, an expression EventBridge cannot express, or settings without
/// the queue ARN and role a schedule needs.
pub fn desired_for(
    definition: &WorkflowDefinition,
    settings: &AwsSettings,
) -> StoreResult<Vec<Desired>> {
    if definition.schedules.is_empty() {
        return Ok(Vec::new());
    }
    let name = &definition.name;
    let workflow = Workflow::from_definition(definition.clone())
        .map_err(|e| refused(name, e.to_string().trim_end().to_string()))?;
    let (Some(target), Some(role)) = (
        &settings.coordinator_queue_arn,
        &settings.scheduler_role_arn,
    ) else {
        return Err(refused(
            name,
            "schedules need BATON_COORDINATOR_QUEUE_ARN and BATON_SCHEDULER_ROLE_ARN",
        ));
    };
    workflow
        .schedules
        .iter()
        .map(|s| {
            let expression = s
                .eventbridge_expression()
                .map_err(|e| refused(name, format!("`{}`: {e}", s.name)))?;
            Ok(Desired {
                name: schedule_name(name, &s.name),
                expression,
                timezone: s.timezone.name().to_string(),
                enabled: s.enabled,
                target: target.clone(),
                role: role.clone(),
                input: start_message(name, s),
                description: format!(
                    "Baton: workflow `{name}`, schedule `{}`: `{}`",
                    s.name, s.cron
                ),
            })
        })
        .collect()
}

/// What [`sync`] changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Synced {
    pub created: Vec<String>,
    pub updated: Vec<String>,
    pub deleted: Vec<String>,
}

/// Names of the schedules in the group that start with `prefix`.
pub async fn list_names(
    client: &aws_sdk_scheduler::Client,
    group: &str,
    prefix: &str,
) -> StoreResult<BTreeSet<String>> {
    let mut names = BTreeSet::new();
    let mut token = None;
    loop {
        let out = client
            .list_schedules()
            .group_name(group)
            .name_prefix(prefix)
            .set_next_token(token)
            .send()
            .await
            .map_err(sdk_error)?;
        for summary in out.schedules() {
            // Filtered again: a stand-in may ignore the prefix.
            if let Some(name) = summary.name().filter(|n| n.starts_with(prefix)) {
                names.insert(name.to_string());
            }
        }
        token = out.next_token().map(str::to_string);
        if token.is_none() {
            return Ok(names);
        }
    }
}

/// Makes the group hold exactly `desired` among `workflow`'s schedules.
pub async fn sync(
    client: &aws_sdk_scheduler::Client,
    group: &str,
    workflow: &str,
    desired: &[Desired],
) -> StoreResult<Synced> {
    let existing = list_names(client, group, &workflow_prefix(workflow)).await?;
    let mut synced = Synced::default();
    for schedule in desired {
        if existing.contains(&schedule.name) {
            update(client, group, schedule).await?;
            synced.updated.push(schedule.name.clone());
        } else if create(client, group, schedule).await? {
            synced.created.push(schedule.name.clone());
        } else {
            // Created meanwhile by another deploy: make it this one.
            update(client, group, schedule).await?;
            synced.updated.push(schedule.name.clone());
        }
    }
    let keep: BTreeSet<&str> = desired.iter().map(|d| d.name.as_str()).collect();
    for name in existing.iter().filter(|n| !keep.contains(n.as_str())) {
        let result = client
            .delete_schedule()
            .name(name)
            .group_name(group)
            .send()
            .await;
        match result {
            Ok(_) => {}
            Err(SdkError::ServiceError(e)) if e.err().is_resource_not_found_exception() => {}
            Err(e) => return Err(sdk_error(e)),
        }
        synced.deleted.push(name.clone());
    }
    if synced != Synced::default() {
        info!(workflow.name = %workflow, created = ?synced.created, updated = ?synced.updated, deleted = ?synced.deleted, "schedules synced");
    }
    Ok(synced)
}

fn parts(schedule: &Desired) -> StoreResult<(Target, FlexibleTimeWindow, ScheduleState)> {
    let bad = |e: aws_sdk_scheduler::error::BuildError| StoreError::Corrupt {
        what: format!("schedule `{}`", schedule.name),
        message: e.to_string(),
    };
    let target = Target::builder()
        .arn(&schedule.target)
        .role_arn(&schedule.role)
        .input(&schedule.input)
        .build()
        .map_err(bad)?;
    let window = FlexibleTimeWindow::builder()
        .mode(FlexibleTimeWindowMode::Off)
        .build()
        .map_err(bad)?;
    let state = if schedule.enabled {
        ScheduleState::Enabled
    } else {
        ScheduleState::Disabled
    };
    Ok((target, window, state))
}

/// Creates a schedule; `false` if one by that name exists already.
async fn create(
    client: &aws_sdk_scheduler::Client,
    group: &str,
    schedule: &Desired,
) -> StoreResult<bool> {
    let (target, window, state) = parts(schedule)?;
    let result = client
        .create_schedule()
        .name(&schedule.name)
        .group_name(group)
        .schedule_expression(&schedule.expression)
        .schedule_expression_timezone(&schedule.timezone)
        .flexible_time_window(window)
        .state(state)
        .description(&schedule.description)
        .target(target)
        .send()
        .await;
    match result {
        Ok(_) => Ok(true),
        Err(SdkError::ServiceError(e)) if e.err().is_conflict_exception() => Ok(false),
        Err(e) => Err(sdk_error(e)),
    }
}

async fn update(
    client: &aws_sdk_scheduler::Client,
    group: &str,
    schedule: &Desired,
) -> StoreResult<()> {
    let (target, window, state) = parts(schedule)?;
    client
        .update_schedule()
        .name(&schedule.name)
        .group_name(group)
        .schedule_expression(&schedule.expression)
        .schedule_expression_timezone(&schedule.timezone)
        .flexible_time_window(window)
        .state(state)
        .description(&schedule.description)
        .target(target)
        .send()
        .await
        .map_err(sdk_error)?;
    Ok(())
}

/// Carries out a `start` message. A scheduled one (its id is
/// `{workflow}-{schedule}-{time}` for a schedule of the workflow's latest
/// version) starts under the canonical id for its instant, unless the
/// schedule says `overlap: skip` and its previous execution is still going;
/// then it returns `None`. Any other start is passed on as it is.
pub async fn start<B: Backend>(
    coordinator: &Coordinator<B>,
    workflow: &str,
    version: Option<u32>,
    execution_id: &str,
    input: Value,
) -> Result<Option<Started>, CoordinatorError> {
    let Some((name, instant)) = schedule::split_execution_id(workflow, execution_id) else {
        return coordinator
            .start(workflow, version, execution_id, input)
            .await
            .map(Some);
    };
    let (_, compiled) = coordinator.workflow(workflow, version).await?;
    let Some(found) = compiled.schedules.iter().find(|s| &*s.name == name) else {
        return coordinator
            .start(workflow, version, execution_id, input)
            .await
            .map(Some);
    };
    let id = found.execution_id(workflow, instant);
    if found.overlap == Overlap::Skip
        && let Some(previous) = previous_running(coordinator, workflow, found, instant).await?
    {
        info!(
            workflow.name = %workflow,
            schedule = %name,
            workflow.execution.id = %id,
            previous = %previous,
            "scheduled execution skipped: the previous one is still going"
        );
        return Ok(None);
    }
    debug!(workflow.name = %workflow, schedule = %name, workflow.execution.id = %id, "scheduled start");
    coordinator
        .start(workflow, version, &id, input)
        .await
        .map(Some)
}

/// The schedule's latest execution before `instant`, if it is still going.
/// Instants without an execution (skipped, or before the schedule existed)
/// are passed over, up to [`OVERLAP_LOOK_BACK`] of them.
async fn previous_running<B: Backend>(
    coordinator: &Coordinator<B>,
    workflow: &str,
    schedule: &Schedule,
    instant: u64,
) -> Result<Option<String>, CoordinatorError> {
    for earlier in schedule.recent(instant, OVERLAP_LOOK_BACK) {
        let id = schedule.execution_id(workflow, earlier);
        if let Some(record) = coordinator.backend().load(&id).await? {
            return Ok((!record.status().is_terminal()).then_some(id));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_and_prefixes_do_not_overlap() {
        assert_eq!(schedule_name("report", "daily"), "baton.report.daily");
        let long_workflow = "w".repeat(60);
        let long_schedule = "s".repeat(64);
        for (w, s) in [
            ("report", long_schedule.as_str()),
            (long_workflow.as_str(), "daily"),
            (long_workflow.as_str(), long_schedule.as_str()),
        ] {
            let name = schedule_name(w, s);
            assert!(name.len() <= MAX_NAME, "{name}");
            assert!(name.starts_with(&workflow_prefix(w)), "{name}");
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)),
                "{name}"
            );
        }
        assert_ne!(
            schedule_name("report", &long_schedule),
            schedule_name("report", &format!("{}t", "s".repeat(63)))
        );
        // `report` and `report-2` have distinct prefixes.
        assert!(!workflow_prefix("report-2").starts_with(&workflow_prefix("report")));
    }
}
