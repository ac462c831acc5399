//! Sub-workflows and per-item pipelines: a fake shell that runs several
//! executions, starting children and passing events between them the way a
//! runtime does, and tolerated failures of `for_each` steps.

use std::collections::{BTreeMap, HashMap, VecDeque};

use baton_core::definition::Format;
use baton_core::engine::{
    Command, Dispatch, Event, Execution, ExecutionStatus, StepStatus, TaskKind, apply,
};
use baton_core::{ErrorInfo, Workflow};
use serde_json::{Value, json};

const T0: u64 = 1_700_000_000_000;

fn workflow(yaml: &str) -> Workflow {
    Workflow::from_text(yaml, Format::Yaml).unwrap_or_else(|e| panic!("{e}"))
}

fn problems(yaml: &str) -> String {
    match Workflow::from_text(yaml, Format::Yaml) {
        Ok(_) => panic!("expected the definition to be refused"),
        Err(e) => e.to_string(),
    }
}

/// Several executions and the messages between them.
struct World {
    workflows: HashMap<String, Workflow>,
    executions: BTreeMap<String, Execution>,
    /// Every applied event of each execution, to replay.
    history: HashMap<String, Vec<(Event, u64)>>,
    inbox: VecDeque<(String, Event)>,
    pending: Vec<Dispatch>,
    now: u64,
}

impl World {
    fn new(definitions: &[&str]) -> World {
        let workflows = definitions
            .iter()
            .map(|d| {
                let wf = workflow(d);
                (wf.name.to_string(), wf)
            })
            .collect();
        World {
            workflows,
            executions: BTreeMap::new(),
            history: HashMap::new(),
            inbox: VecDeque::new(),
            pending: Vec::new(),
            now: T0,
        }
    }

    fn start(&mut self, workflow: &str, id: &str, input: Value) {
        let ex = Execution::new(&self.workflows[workflow], id);
        self.executions.insert(id.to_string(), ex);
        self.inbox.push_back((
            id.to_string(),
            Event::Started {
                input,
                timeout_ms: None,
                parent: None,
            },
        ));
        self.settle();
    }

    /// Applies queued events until none is left, carrying out their commands.
    fn settle(&mut self) {
        while let Some((id, event)) = self.inbox.pop_front() {
            self.now += 10;
            let ex = self.executions.get_mut(&id).expect("known execution");
            let wf = &self.workflows[&*ex.workflow];
            let t = apply(wf, ex, event.clone(), self.now);
            if !t.is_applied() {
                continue;
            }
            self.history
                .entry(id.clone())
                .or_default()
                .push((event, self.now));
            for command in t.commands {
                match command {
                    Command::Dispatch(d) => self.pending.push(d),
                    Command::StartChild(child) => {
                        let child_id = child.execution_id.to_string();
                        if self.executions.contains_key(&child_id) {
                            continue;
                        }
                        let ex = Execution::new(&self.workflows[&*child.workflow], &*child_id);
                        self.executions.insert(child_id.clone(), ex);
                        self.inbox.push_back((
                            child_id,
                            Event::Started {
                                input: child.input,
                                timeout_ms: child.timeout_ms,
                                parent: Some(child.parent),
                            },
                        ));
                    }
                    Command::SendEvent {
                        execution_id,
                        event,
                        undeliverable,
                    } => {
                        if self.executions.contains_key(&*execution_id) {
                            self.inbox.push_back((execution_id.to_string(), *event));
                        } else if let Some(instead) = undeliverable {
                            self.inbox.push_back((id.clone(), *instead));
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    fn labels(&self) -> Vec<String> {
        let mut labels: Vec<String> = self.pending.iter().map(label).collect();
        labels.sort();
        labels
    }

    fn take(&mut self, which: &str) -> Dispatch {
        let i = self
            .pending
            .iter()
            .position(|d| label(d) == which)
            .unwrap_or_else(|| panic!("no dispatch `{which}`; pending: {:?}", self.labels()));
        self.pending.remove(i)
    }

    fn succeed(&mut self, which: &str, output: Value) {
        let d = self.take(which);
        self.inbox.push_back((
            d.execution_id.to_string(),
            Event::TaskSucceeded {
                task: d.task,
                output,
            },
        ));
        self.settle();
    }

    fn fail(&mut self, which: &str, name: &str) {
        let d = self.take(which);
        let error = ErrorInfo::new(name, format!("{name} happened"), false);
        self.inbox.push_back((
            d.execution_id.to_string(),
            Event::TaskFailed {
                task: d.task,
                error,
            },
        ));
        self.settle();
    }

    fn send(&mut self, id: &str, event: Event) {
        self.inbox.push_back((id.to_string(), event));
        self.settle();
    }

    fn ex(&self, id: &str) -> &Execution {
        &self.executions[id]
    }

    fn status(&self, id: &str) -> ExecutionStatus {
        self.ex(id).status
    }

    /// Every execution's history replays to the state it has.
    fn assert_replays(&self) {
        for (id, ex) in &self.executions {
            let wf = &self.workflows[&*ex.workflow];
            let mut replayed = Execution::new(wf, id.as_str());
            for (event, at) in &self.history[id] {
                assert!(apply(wf, &mut replayed, event.clone(), *at).is_applied());
            }
            assert_eq!(&replayed, ex, "`{id}` replays to the same state");
        }
    }
}

/// `execution/step`, `execution/step[i]`, `execution/undo step`.
fn label(d: &Dispatch) -> String {
    let mut out = match d.task.kind {
        TaskKind::Step => format!("{}/{}", d.execution_id, d.task.step),
        TaskKind::Compensation => format!("{}/undo {}", d.execution_id, d.task.step),
    };
    if let Some(i) = d.task.index {
        out.push_str(&format!("[{i}]"));
    }
    out
}

const PAYMENT: &str = r#"
name: payment
steps:
  authorize:
    function: authorize
    input: { amount: "${ input.amount }" }
    retry: { max_attempts: 1 }
    compensate: { function: void }
  capture:
    function: capture
    needs: [authorize]
    input: { auth: "${ steps.authorize.output.id }" }
    retry: { max_attempts: 1 }
    compensate: { function: refund }
output: { paid: "${ steps.capture.output.id }" }
"#;

const ORDER: &str = r#"
name: order
steps:
  reserve:
    function: reserve
    retry: { max_attempts: 1 }
    compensate: { function: release }
  pay:
    workflow: payment
    needs: [reserve]
    input: { amount: "${ input.total }" }
  ship:
    function: ship
    needs: [pay]
    input: { payment: "${ steps.pay.output.paid }" }
    retry: { max_attempts: 1 }
    compensate: none
    reason: shipping labels are free to waste
"#;

#[test]
fn a_child_runs_with_a_fixed_id_and_its_output_is_the_step_output() {
    let mut w = World::new(&[PAYMENT, ORDER]);
    w.start("order", "o-1", json!({"total": 42}));
    w.succeed("o-1/reserve", json!("r"));
    assert_eq!(w.ex("o-1").step("pay").unwrap().status, StepStatus::Running);
    assert_eq!(w.labels(), ["o-1:pay/authorize"], "the child started");
    let child = w.ex("o-1:pay");
    assert_eq!(*child.input, json!({"amount": 42}));
    assert_eq!(child.parent.as_ref().unwrap().execution_id.as_ref(), "o-1");
    w.succeed("o-1:pay/authorize", json!({"id": "a-1"}));
    w.succeed("o-1:pay/capture", json!({"id": "c-1"}));
    assert_eq!(w.status("o-1:pay"), ExecutionStatus::Succeeded);
    let ship = w.take("o-1/ship");
    assert_eq!(ship.input, json!({"payment": "c-1"}));
    w.send(
        "o-1",
        Event::TaskSucceeded {
            task: ship.task,
            output: json!("shipped"),
        },
    );
    assert_eq!(w.status("o-1"), ExecutionStatus::Succeeded);
    assert_eq!(
        w.ex("o-1").step("pay").unwrap().output.as_deref(),
        Some(&json!({"paid": "c-1"}))
    );
    w.assert_replays();
}

#[test]
fn a_failed_child_undoes_itself_and_fails_the_step_with_its_error() {
    let mut w = World::new(&[PAYMENT, ORDER]);
    w.start("order", "o-1", json!({"total": 42}));
    w.succeed("o-1/reserve", json!("r"));
    w.succeed("o-1:pay/authorize", json!({"id": "a-1"}));
    w.fail("o-1:pay/capture", "CardDeclined");
    // The child undoes its own authorization first, then tells its parent.
    assert_eq!(w.labels(), ["o-1:pay/undo authorize"]);
    w.succeed("o-1:pay/undo authorize", json!(null));
    assert_eq!(w.status("o-1:pay"), ExecutionStatus::Compensated);
    let pay = w.ex("o-1").step("pay").unwrap();
    assert_eq!(pay.status, StepStatus::Failed);
    let error = pay.error.as_ref().unwrap();
    assert_eq!(
        error.name, "CardDeclined",
        "the child's error name, for retry filters"
    );
    assert!(error.message.contains("o-1:pay"), "{}", error.message);
    // The parent undoes what it did; the child is not asked again.
    assert_eq!(w.labels(), ["o-1/undo reserve"]);
    w.succeed("o-1/undo reserve", json!(null));
    assert_eq!(w.status("o-1"), ExecutionStatus::Compensated);
    w.assert_replays();
}

/// An order whose payment child succeeded, and whose shipping then failed.
fn paid_then_shipping_fails() -> World {
    let mut w = World::new(&[PAYMENT, ORDER]);
    w.start("order", "o-1", json!({"total": 42}));
    w.succeed("o-1/reserve", json!("r"));
    w.succeed("o-1:pay/authorize", json!({"id": "a-1"}));
    w.succeed("o-1:pay/capture", json!({"id": "c-1"}));
    w.fail("o-1/ship", "NoCourier");
    w
}

#[test]
fn undoing_a_succeeded_child_runs_its_compensations_in_reverse_order() {
    let mut w = paid_then_shipping_fails();
    // The parent's newest success is the child: it is undone first, by the child.
    assert_eq!(w.labels(), ["o-1:pay/undo capture"]);
    assert_eq!(w.status("o-1:pay"), ExecutionStatus::Compensating);
    w.succeed("o-1:pay/undo capture", json!(null));
    assert_eq!(w.labels(), ["o-1:pay/undo authorize"]);
    w.succeed("o-1:pay/undo authorize", json!(null));
    assert_eq!(w.status("o-1:pay"), ExecutionStatus::Compensated);
    // Then the parent's own.
    assert_eq!(w.labels(), ["o-1/undo reserve"]);
    w.succeed("o-1/undo reserve", json!(null));
    assert_eq!(w.status("o-1"), ExecutionStatus::Compensated);
    // A repeated request gets the same answer again and changes nothing else.
    let task = w.history["o-1:pay"]
        .iter()
        .find_map(|(e, _)| match e {
            Event::CompensationRequested { task } => Some(task.clone()),
            _ => None,
        })
        .unwrap();
    w.send("o-1:pay", Event::CompensationRequested { task });
    assert_eq!(w.status("o-1"), ExecutionStatus::Compensated);
    assert!(w.pending.is_empty());
    w.assert_replays();
}

#[test]
fn a_child_whose_undo_fails_fails_the_parents_compensation() {
    let mut w = paid_then_shipping_fails();
    w.fail("o-1:pay/undo capture", "RefundRefused");
    w.succeed("o-1:pay/undo authorize", json!(null));
    assert_eq!(w.status("o-1:pay"), ExecutionStatus::CompensationFailed);
    // The parent goes on undoing the rest, and ends saying a compensation failed.
    w.succeed("o-1/undo reserve", json!(null));
    assert_eq!(w.status("o-1"), ExecutionStatus::CompensationFailed);
    let comp = w.ex("o-1").step("pay").unwrap().units[0]
        .compensation
        .clone()
        .unwrap();
    assert_eq!(comp.error.unwrap().name, "ChildCompensationFailed");
    w.assert_replays();
}

#[test]
fn a_declared_compensate_replaces_the_childs_own() {
    let order = ORDER.replace(
        "    workflow: payment\n",
        "    workflow: payment\n    compensate: { function: refund_order, input: \"${ steps.pay.output }\" }\n",
    );
    let mut w = World::new(&[PAYMENT, &order]);
    w.start("order", "o-1", json!({"total": 42}));
    w.succeed("o-1/reserve", json!("r"));
    w.succeed("o-1:pay/authorize", json!({"id": "a-1"}));
    w.succeed("o-1:pay/capture", json!({"id": "c-1"}));
    w.fail("o-1/ship", "NoCourier");
    let undo = w.take("o-1/undo pay");
    assert_eq!(undo.function.as_ref(), "refund_order");
    assert_eq!(undo.input, json!({"paid": "c-1"}));
    assert_eq!(
        w.status("o-1:pay"),
        ExecutionStatus::Succeeded,
        "the child is left alone"
    );
}

/// A child that asks, then waits for a signal.
const APPROVAL: &str = r#"
name: approval
steps:
  ask:
    function: ask
    mutates: false
    retry: { max_attempts: 1 }
  decision:
    wait_for: { signal: approved }
    needs: [ask]
"#;

const EXPENSE: &str = r#"
name: expense
steps:
  approve:
    workflow: approval
"#;

#[test]
fn cancelling_the_parent_cancels_the_child_and_waits_for_it() {
    let mut w = World::new(&[APPROVAL, EXPENSE]);
    w.start("expense", "e-1", json!({}));
    w.succeed("e-1:approve/ask", json!(null));
    assert_eq!(
        w.ex("e-1:approve").step("decision").unwrap().status,
        StepStatus::Waiting
    );
    w.send(
        "e-1",
        Event::CancelRequested {
            reason: Some("withdrawn".into()),
        },
    );
    assert_eq!(w.status("e-1:approve"), ExecutionStatus::Cancelled);
    assert!(
        w.ex("e-1:approve")
            .failure
            .as_ref()
            .unwrap()
            .message
            .contains("withdrawn")
    );
    assert_eq!(w.status("e-1"), ExecutionStatus::Cancelled);
    w.assert_replays();
}

#[test]
fn a_cancel_for_a_child_that_does_not_exist_fails_its_unit_instead_of_waiting() {
    let mut w = World::new(&[APPROVAL, EXPENSE]);
    w.start("expense", "e-1", json!({}));
    w.executions.remove("e-1:approve");
    w.send("e-1", Event::CancelRequested { reason: None });
    assert_eq!(w.status("e-1"), ExecutionStatus::Cancelled);
    let unit = &w.ex("e-1").step("approve").unwrap().units[0];
    assert_eq!(unit.error.as_ref().unwrap().name, "ChildNotFound");
}

const LINE: &str = r#"
name: line
steps:
  pick:
    function: pick
    input: "${ input }"
    mutates: false
    retry: { max_attempts: 1 }
  pack:
    function: pack
    needs: [pick]
    input: "${ steps.pick.output }"
    mutates: false
    retry: { max_attempts: 1 }
output: "${ steps.pack.output }"
"#;

#[test]
fn a_for_each_runs_a_pipeline_per_element_within_its_concurrency() {
    let batch = r#"
name: batch
steps:
  lines:
    workflow: line
    for_each: "${ input.items }"
    max_concurrency: 2
    input: "${ item }"
output: "${ steps.lines.output }"
"#;
    let mut w = World::new(&[LINE, batch]);
    w.start("batch", "b-1", json!({"items": ["a", "b", "c"]}));
    assert_eq!(w.labels(), ["b-1:lines:0/pick", "b-1:lines:1/pick"]);
    w.succeed("b-1:lines:1/pick", json!("B"));
    w.succeed("b-1:lines:1/pack", json!("B!"));
    assert_eq!(w.labels(), ["b-1:lines:0/pick", "b-1:lines:2/pick"]);
    for (i, x) in [(0, "A"), (2, "C")] {
        w.succeed(&format!("b-1:lines:{i}/pick"), json!(x));
        w.succeed(&format!("b-1:lines:{i}/pack"), json!(format!("{x}!")));
    }
    assert_eq!(w.status("b-1"), ExecutionStatus::Succeeded);
    assert_eq!(w.ex("b-1").output, Some(json!(["A!", "B!", "C!"])));
    w.assert_replays();
}

fn tolerant(tolerance: &str) -> String {
    format!(
        r#"
name: tolerant
steps:
  each:
    function: work
    for_each: "${{ input }}"
    mutates: false
    retry: {{ max_attempts: 1 }}
    {tolerance}
  after:
    function: after
    needs: [each]
    mutates: false
    retry: {{ max_attempts: 1 }}
"#
    )
}

#[test]
fn a_for_each_succeeds_with_failures_within_its_tolerated_count() {
    let mut w = World::new(&[&tolerant("tolerated_failures: 1")]);
    w.start("tolerant", "t-1", json!([1, 2, 3]));
    w.fail("t-1/each[1]", "Bad");
    w.succeed("t-1/each[0]", json!("a"));
    w.succeed("t-1/each[2]", json!("c"));
    let each = w.ex("t-1").step("each").unwrap();
    assert_eq!(each.status, StepStatus::Succeeded);
    assert_eq!(each.output.as_deref(), Some(&json!(["a", null, "c"])));
    assert_eq!(w.labels(), ["t-1/after"]);

    let mut w = World::new(&[&tolerant("tolerated_failures: 1")]);
    w.start("tolerant", "t-2", json!([1, 2, 3]));
    w.fail("t-2/each[0]", "Bad");
    w.fail("t-2/each[1]", "Bad");
    assert_eq!(w.ex("t-2").step("each").unwrap().status, StepStatus::Failed);
    w.succeed("t-2/each[2]", json!("c"));
    assert_eq!(w.status("t-2"), ExecutionStatus::Failed);
    w.assert_replays();
}

#[test]
fn a_for_each_tolerates_failures_by_percentage_of_its_elements() {
    let mut w = World::new(&[&tolerant("tolerated_failure_percent: 50")]);
    w.start("tolerant", "t-1", json!([1, 2, 3, 4]));
    w.fail("t-1/each[0]", "Bad");
    w.fail("t-1/each[1]", "Bad");
    w.succeed("t-1/each[2]", json!(3));
    w.succeed("t-1/each[3]", json!(4));
    assert_eq!(
        w.ex("t-1").step("each").unwrap().status,
        StepStatus::Succeeded
    );

    let mut w = World::new(&[&tolerant(
        "tolerated_failure_percent: 50\n    tolerated_failures: 1",
    )]);
    w.start("tolerant", "t-2", json!([1, 2, 3, 4]));
    w.fail("t-2/each[0]", "Bad");
    w.fail("t-2/each[1]", "Bad");
    assert_eq!(
        w.ex("t-2").step("each").unwrap().status,
        StepStatus::Failed,
        "both limits hold when both are given"
    );
}

#[test]
fn a_workflow_that_runs_itself_stops_at_the_depth_limit() {
    let recursive = r#"
name: forever
steps:
  again:
    workflow: forever
    mutates: false
"#;
    let mut w = World::new(&[recursive]);
    w.start("forever", "f", json!({}));
    let deepest = w
        .executions
        .values()
        .filter_map(|e| e.parent.as_ref().map(|p| p.depth))
        .max();
    assert_eq!(deepest, Some(baton_core::workflow::MAX_CHILD_DEPTH));
    assert!(
        w.executions
            .values()
            .all(|e| e.status == ExecutionStatus::Failed),
        "every level failed"
    );
    let unit = &w.ex("f").step("again").unwrap().units[0];
    assert_eq!(unit.error.as_ref().unwrap().name, "ChildTooDeep");
}

#[test]
fn child_steps_and_tolerances_are_checked_before_anything_runs() {
    let text = problems(
        r#"
name: bad
steps:
  a:
    workflow: other
    function: f
  b:
    workflow: "not a name"
    repeat: { until: "${ true }", max_iterations: 2 }
    mutates: false
  c:
    function: f
    mutates: false
    workflow_version: 2
    tolerated_failures: 1
  d:
    function: f
    mutates: false
    for_each: "${ input }"
    tolerated_failure_percent: 101
  e:
    workflow: other
    timeout: 100ms
"#,
    );
    for expected in [
        "has function, workflow",
        "`not a name` is not a workflow name",
        "a step that runs a workflow cannot repeat",
        "workflow_version",
        "tolerated_failures",
        "must be from 0 to 100, not 101",
        "bounds the child execution",
    ] {
        assert!(text.contains(expected), "`{expected}` in:\n{text}");
    }
}
