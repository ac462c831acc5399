//! Schedules on EventBridge Scheduler, against moto server: registering a
//! definition creates, updates and deletes its schedules; a scheduled start
//! delivered twice starts one execution; `overlap: skip` holds on AWS too.
//! (moto accepts schedules but never fires them: firing is tested on the
//! embedded backend.)

use baton_runtime::ports::ListQuery;
use std::collections::BTreeMap;
use std::sync::Arc;

use baton_aws::coordinator_batch::{QueueMessage, process_coordinator_batch};
use baton_aws::schedules::{SCHEDULED_TIME, schedule_name};
use baton_aws::testing::fresh_recording_backend;
use baton_aws::{AwsBackend, CoordinatorMessage};
use baton_core::definition::{Format, WorkflowDefinition};
use baton_runtime::ports::{ExecutionStore, WorkflowStore};
use baton_runtime::{Coordinator, SystemClock};
use serde_json::{Value, json};

fn definition(text: &str) -> WorkflowDefinition {
    let definition = WorkflowDefinition::parse(text, Format::Yaml).expect("parses");
    baton_core::Workflow::from_definition(definition.clone()).expect("validates");
    definition
}

const STEPS: &str = "steps:\n  pause: { wait: 1h }\n";

/// A schedule as stored on the emulator.
#[derive(Debug)]
struct Stored {
    expression: String,
    timezone: String,
    state: String,
    target: String,
    role: String,
    input: Value,
    window: String,
}

async fn stored(backend: &AwsBackend) -> BTreeMap<String, Stored> {
    let client = &backend.clients().scheduler;
    let group = &backend.settings().schedule_group;
    let list = client
        .list_schedules()
        .group_name(group)
        .send()
        .await
        .expect("list schedules");
    let mut out = BTreeMap::new();
    for summary in list.schedules() {
        let name = summary.name().unwrap_or_default().to_string();
        let s = client
            .get_schedule()
            .group_name(group)
            .name(&name)
            .send()
            .await
            .expect("get schedule");
        let target = s.target().expect("a target");
        out.insert(
            name,
            Stored {
                expression: s.schedule_expression().unwrap_or_default().to_string(),
                timezone: s
                    .schedule_expression_timezone()
                    .unwrap_or_default()
                    .to_string(),
                state: s
                    .state()
                    .map(|s| s.as_str().to_string())
                    .unwrap_or_default(),
                target: target.arn().to_string(),
                role: target.role_arn().to_string(),
                input: serde_json::from_str(target.input().unwrap_or("null")).expect("JSON input"),
                window: s
                    .flexible_time_window()
                    .map(|w| w.mode().as_str().to_string())
                    .unwrap_or_default(),
            },
        );
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registering_a_definition_syncs_its_schedules() {
    let backend = fresh_recording_backend("schedules", 5).await.0;
    let settings = backend.settings().clone();
    let v1 = definition(&format!(
        "name: report\n{STEPS}schedules:\n  daily: {{ cron: '0 0 * * *', timezone: America/New_York, input: {{ kind: daily }} }}\n  hourly: {{ cron: '0 * * * *', enabled: false }}\n  weekly: {{ cron: '0 9 * * 1' }}\n"
    ));
    // Another workflow whose name starts the same: its schedules are its own.
    let other = definition(&format!(
        "name: report-2\n{STEPS}schedules:\n  daily: {{ cron: '30 6 * * *' }}\n"
    ));
    backend
        .put_workflow(&other, 0)
        .await
        .expect("deploy report-2");
    assert_eq!(backend.put_workflow(&v1, 0).await.expect("deploy"), 1);

    let found = stored(&backend).await;
    assert_eq!(
        found.keys().cloned().collect::<Vec<_>>(),
        [
            "baton.report-2.daily",
            "baton.report.daily",
            "baton.report.hourly",
            "baton.report.weekly"
        ]
    );
    let daily = &found[&schedule_name("report", "daily")];
    assert_eq!(daily.expression, "cron(0 0 * * ? *)");
    assert_eq!(daily.timezone, "America/New_York");
    assert_eq!(daily.state, "ENABLED");
    assert_eq!(daily.window, "OFF");
    assert_eq!(Some(&daily.target), settings.coordinator_queue_arn.as_ref());
    assert_eq!(Some(&daily.role), settings.scheduler_role_arn.as_ref());
    assert_eq!(
        daily.input,
        json!({
            "kind": "start",
            "workflow": "report",
            "execution_id": format!("report-daily-{SCHEDULED_TIME}"),
            "input": { "kind": "daily" }
        })
    );
    let message: CoordinatorMessage =
        serde_json::from_value(daily.input.clone()).expect("a coordinator message");
    assert!(matches!(message, CoordinatorMessage::Start { .. }));
    let hourly = &found["baton.report.hourly"];
    assert_eq!(hourly.state, "DISABLED");
    assert_eq!(hourly.timezone, "UTC");
    assert_eq!(hourly.input["input"], json!({}));
    assert_eq!(
        found["baton.report.weekly"].expression,
        "cron(0 9 ? * MON *)"
    );

    // Changed: daily moves to 06:00 in Paris, weekly goes, monthly comes.
    let v2 = definition(&format!(
        "name: report\n{STEPS}schedules:\n  daily: {{ cron: '0 6 * * 1-5', timezone: Europe/Paris }}\n  hourly: {{ cron: '0 * * * *' }}\n  monthly: {{ cron: '0 0 1 * *' }}\n"
    ));
    assert_eq!(backend.put_workflow(&v2, 0).await.expect("deploy"), 2);
    let found = stored(&backend).await;
    assert_eq!(
        found.keys().cloned().collect::<Vec<_>>(),
        [
            "baton.report-2.daily",
            "baton.report.daily",
            "baton.report.hourly",
            "baton.report.monthly"
        ]
    );
    let daily = &found["baton.report.daily"];
    assert_eq!(daily.expression, "cron(0 6 ? * MON-FRI *)");
    assert_eq!(daily.timezone, "Europe/Paris");
    assert_eq!(daily.input["input"], json!({}));
    assert_eq!(found["baton.report.hourly"].state, "ENABLED");
    assert_eq!(
        found["baton.report.monthly"].expression,
        "cron(0 0 1 * ? *)"
    );

    // No schedules left: all of this workflow's go, the other's stay.
    let v3 = definition(&format!("name: report\n{STEPS}"));
    assert_eq!(backend.put_workflow(&v3, 0).await.expect("deploy"), 3);
    assert_eq!(
        stored(&backend).await.keys().cloned().collect::<Vec<_>>(),
        ["baton.report-2.daily"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_without_a_target_are_refused_before_storing() {
    let backend = fresh_recording_backend("schedules-refused", 5).await.0;
    let mut settings = backend.settings().clone();
    settings.scheduler_role_arn = None;
    let config = baton_aws::testing::sdk_config(&baton_aws::testing::endpoint()).await;
    let bare = AwsBackend::with_config(&config, settings, baton_aws::RequestCounter::new());
    let text = format!("name: lonely\n{STEPS}schedules:\n  daily: {{ cron: '0 0 * * *' }}\n");
    let error = bare
        .put_workflow(&definition(&text), 0)
        .await
        .expect_err("refused");
    assert!(
        error.to_string().contains("BATON_SCHEDULER_ROLE_ARN"),
        "{error}"
    );
    assert!(bare.get_workflow("lonely", None).await.unwrap().is_none());
}

fn delivery(id: &str, body: String) -> QueueMessage {
    QueueMessage {
        id: id.to_string(),
        body,
    }
}

/// The message EventBridge Scheduler sends for `time`.
fn fired(backend_message: &Value, time: &str) -> String {
    backend_message.to_string().replace(SCHEDULED_TIME, time)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_start_delivered_twice_starts_once() {
    let backend = fresh_recording_backend("scheduled-start", 5).await.0;
    let text = format!(
        "name: nightly\n{STEPS}schedules:\n  run: {{ cron: '0 * * * *', timezone: America/New_York, input: {{ n: 1 }} }}\n"
    );
    backend.put_workflow(&definition(&text), 0).await.unwrap();
    let message = stored(&backend).await["baton.nightly.run"].input.clone();
    let coordinator = Coordinator::new(Arc::new(backend.clone()), Arc::new(SystemClock));

    // Twice in one batch, once more later, and once with the time written another way.
    let first = process_coordinator_batch(
        &coordinator,
        vec![
            delivery("m-1", fired(&message, "2026-03-08T14:00:00Z")),
            delivery("m-2", fired(&message, "2026-03-08T14:00:00Z")),
        ],
    )
    .await;
    assert!(first.is_empty(), "{first:?}");
    let again = process_coordinator_batch(
        &coordinator,
        vec![
            delivery("m-3", fired(&message, "2026-03-08T14:00:00Z")),
            delivery("m-4", fired(&message, "2026-03-08T10:00:00.000-04:00")),
        ],
    )
    .await;
    assert!(again.is_empty(), "{again:?}");
    let executions = backend
        .list(&ListQuery::newest(100))
        .await
        .unwrap()
        .executions;
    let ids: Vec<&str> = executions.iter().map(|e| e.id.as_str()).collect();
    // The id the embedded worker derives for the same instant.
    let expected = baton_core::schedule::execution_id(
        "nightly",
        "run",
        baton_core::schedule::parse_scheduled_time("2026-03-08T14:00:00Z").unwrap(),
    );
    assert_eq!(ids, [expected.as_str()]);
    assert_eq!(expected, "nightly-run-2026-03-08T14:00:00Z");
    let record = backend.load(&expected).await.unwrap().unwrap();
    assert_eq!(*record.state.input, json!({ "n": 1 }));

    // The next hour, the first run still waits: `overlap: skip` passes it over.
    let next = process_coordinator_batch(
        &coordinator,
        vec![delivery("m-5", fired(&message, "2026-03-08T15:00:00Z"))],
    )
    .await;
    assert!(next.is_empty());
    assert_eq!(
        backend
            .list(&ListQuery::newest(100))
            .await
            .unwrap()
            .executions
            .len(),
        1
    );

    // Once it is over, the next instant starts; the skipped one is passed over.
    coordinator
        .handle(
            &expected,
            baton_core::Event::CancelRequested { reason: None },
        )
        .await
        .unwrap();
    assert!(
        backend
            .load(&expected)
            .await
            .unwrap()
            .unwrap()
            .status()
            .is_terminal()
    );
    process_coordinator_batch(
        &coordinator,
        vec![delivery("m-6", fired(&message, "2026-03-08T16:00:00Z"))],
    )
    .await;
    let mut ids: Vec<String> = backend
        .list(&ListQuery::newest(100))
        .await
        .unwrap()
        .executions
        .into_iter()
        .map(|e| e.id)
        .collect();
    ids.sort();
    assert_eq!(
        ids,
        [
            "nightly-run-2026-03-08T14:00:00Z",
            "nightly-run-2026-03-08T16:00:00Z"
        ]
    );
}
