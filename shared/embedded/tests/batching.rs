//! Results for one execution that arrive together are applied together: one
//! load, one commit, a history entry each, the same state and commands as
//! applying them one by one.

use std::sync::Arc;

use baton_core::definition::Format;
use baton_core::engine::TaskKind;
use baton_core::{Event, ExecutionStatus, Outcome, TaskRef, WorkflowDefinition};
use baton_embedded::{SqliteBackend, SqliteOptions};
use baton_runtime::faults::{FaultPlan, FaultyBackend, Op};
use baton_runtime::ports::{ExecutionStore, WorkflowStore};
use baton_runtime::{Clock, Coordinator, ManualClock};
use serde_json::json;

const BRANCHES: usize = 10;

fn fan_out() -> String {
    let mut text = String::from(
        "name: fan\ndefaults: { retry: { max_attempts: 1 }, timeout: 1m }\nsteps:\n  root: { function: f, mutates: false }\n",
    );
    for b in 0..BRANCHES {
        text.push_str(&format!(
            "  b{b}: {{ function: f, mutates: false, needs: [root] }}\n"
        ));
    }
    let all: Vec<String> = (0..BRANCHES).map(|b| format!("b{b}")).collect();
    text.push_str(&format!(
        "  join: {{ function: f, mutates: false, needs: [{}] }}\n",
        all.join(", ")
    ));
    text
}

fn succeeded(step: &str) -> Event {
    Event::TaskSucceeded {
        task: TaskRef {
            step: step.into(),
            index: None,
            attempt: 1,
            kind: TaskKind::Step,
        },
        output: json!({ "from": step }),
    }
}

type Node = Coordinator<FaultyBackend<SqliteBackend>>;

async fn node(
    dir: &std::path::Path,
    clock: Arc<ManualClock>,
) -> (Arc<Node>, Arc<FaultyBackend<SqliteBackend>>) {
    let backend = SqliteBackend::open(&dir.join("baton.db"), SqliteOptions::default()).unwrap();
    let definition = WorkflowDefinition::parse(&fan_out(), Format::Yaml).unwrap();
    backend
        .put_workflow(&definition, clock.now())
        .await
        .unwrap();
    // No faults: the wrapper only counts the calls.
    let counted = Arc::new(FaultyBackend::new(Arc::new(backend), FaultPlan::new(0)));
    (Arc::new(Coordinator::new(counted.clone(), clock)), counted)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn branch_results_arriving_together_are_one_transition_and_equal_one_by_one() {
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let together_dir = tempfile::tempdir().unwrap();
    let apart_dir = tempfile::tempdir().unwrap();
    let (together, together_calls) = node(together_dir.path(), clock.clone()).await;
    let (apart, _) = node(apart_dir.path(), clock.clone()).await;
    for n in [&together, &apart] {
        n.start("fan", None, "x", json!({})).await.unwrap();
        n.handle("x", succeeded("root")).await.unwrap();
    }

    let commits_before = together_calls.calls(Op::Commit);
    let loads_before = together_calls.calls(Op::Load);
    let answers = futures::future::join_all((0..BRANCHES).map(|b| {
        let together = together.clone();
        async move { together.handle("x", succeeded(&format!("b{b}"))).await }
    }))
    .await;
    for answer in answers {
        assert_eq!(answer.expect("applied"), Outcome::Applied);
    }
    let commits = together_calls.calls(Op::Commit) - commits_before;
    let loads = together_calls.calls(Op::Load) - loads_before;
    println!("{BRANCHES} branch results at once: {commits} commits, {loads} loads");
    assert!(
        commits <= 3,
        "{BRANCHES} results arriving together took {commits} commits (one each, and conflicts, \
         before they were applied together)"
    );
    assert_eq!(
        together_calls.counts().total(),
        0,
        "nothing was injected: a commit counted is a real one"
    );

    for b in 0..BRANCHES {
        apart
            .handle("x", succeeded(&format!("b{b}")))
            .await
            .unwrap();
    }
    let a = together.backend().load("x").await.unwrap().unwrap();
    let b = apart.backend().load("x").await.unwrap().unwrap();
    assert_eq!(
        a.version, b.version,
        "one version per applied event either way"
    );
    assert_eq!(a.state, b.state, "the same state as one by one");
    assert_eq!(
        a.state.step("join").unwrap().status,
        baton_core::engine::StepStatus::Running,
        "the join was dispatched once all branches succeeded"
    );
    let events = |h: Vec<baton_runtime::ports::HistoryEntry>| {
        let mut events: Vec<String> = h.iter().map(|e| format!("{:?}", e.event)).collect();
        events.sort();
        events
    };
    assert_eq!(
        events(together.backend().history("x").await.unwrap()),
        events(apart.backend().history("x").await.unwrap()),
        "a history entry per event"
    );
    assert_eq!(a.status(), ExecutionStatus::Running);
}
