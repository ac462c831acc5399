//! End-to-end scenarios: a fake shell drives `apply` the way a runtime would,
//! answering dispatches with scripted outcomes and firing timers in order of
//! `fire_at`, and the tests check what a user of the runtime would see.

use baton_core::definition::Format;
use baton_core::engine::{
    Command, DeadLetter, Dispatch, Event, Execution, ExecutionStatus, Ignored, LifecycleEvent,
    LifecycleKind, MAX_TIMESTAMP, MAX_WAIT_AHEAD_MS, Outcome, StepStatus, TaskKind, TaskRef,
    TimerId, TimerKind, Transition, UnitStatus, apply,
};
use baton_core::{ErrorInfo, Workflow, idempotency};
use serde_json::{Value, json};

const T0: u64 = 1_700_000_000_000;
/// How long the shell takes to answer a dispatch.
const LATENCY: u64 = 10;

fn workflow(yaml: &str) -> Workflow {
    Workflow::from_text(yaml, Format::Yaml).unwrap_or_else(|e| panic!("{e}"))
}

fn error(name: &str) -> ErrorInfo {
    ErrorInfo::new(name, format!("{name} happened"), true)
}

fn fatal(name: &str) -> ErrorInfo {
    ErrorInfo::new(name, format!("{name} happened"), false)
}

/// `step`, `step[i]`, `undo step` or `undo step[i]`.
fn label(task: &TaskRef) -> String {
    let mut out = match task.kind {
        TaskKind::Step => task.step.to_string(),
        TaskKind::Compensation => format!("undo {}", task.step),
    };
    if let Some(i) = task.index {
        out.push_str(&format!("[{i}]"));
    }
    out
}

/// `kind step[i]#attempt`, leaving out what the event does not carry.
fn lifecycle_label(e: &LifecycleEvent) -> String {
    let mut out = e.kind.as_str().to_string();
    if let Some(step) = &e.step {
        out.push(' ');
        out.push_str(step);
    }
    if let Some(i) = e.index {
        out.push_str(&format!("[{i}]"));
    }
    if let Some(a) = e.attempt {
        out.push_str(&format!("#{a}"));
    }
    out
}

fn dispatches(t: &Transition) -> Vec<String> {
    t.commands
        .iter()
        .filter_map(|c| match c {
            Command::Dispatch(d) => Some(label(&d.task)),
            _ => None,
        })
        .collect()
}

fn state_json(ex: &Execution) -> String {
    serde_json::to_string(ex).expect("state serialises")
}

enum Reply {
    Ok(Value),
    Fail(ErrorInfo),
    /// Never answer; the attempt's timeout timer will fire.
    Hang,
}

/// A fake shell: keeps what a runtime would persist (the state, outstanding
/// dispatches and timers) and every command and event, for assertions and replay.
struct Shell {
    wf: Workflow,
    ex: Execution,
    now: u64,
    pending: Vec<Dispatch>,
    timers: Vec<(u64, TimerId)>,
    log: Vec<(u64, Command)>,
    history: Vec<(Event, u64)>,
    transitions: Vec<Transition>,
}

impl Shell {
    fn new(yaml: &str) -> Shell {
        Shell::with_workflow(workflow(yaml), "ex-1")
    }

    fn with_workflow(wf: Workflow, id: &str) -> Shell {
        let ex = Execution::new(&wf, id);
        Shell {
            wf,
            ex,
            now: T0,
            pending: Vec::new(),
            timers: Vec::new(),
            log: Vec::new(),
            history: Vec::new(),
            transitions: Vec::new(),
        }
    }

    fn apply(&mut self, event: Event) -> Transition {
        let before = self.ex.clone();
        let t = apply(&self.wf, &mut self.ex, event.clone(), self.now);
        if let Outcome::Ignored(reason) = &t.outcome {
            assert!(
                t.commands.is_empty(),
                "ignored ({reason:?}) yet commands: {:?}",
                t.commands
            );
            assert_eq!(
                before, self.ex,
                "ignored ({reason:?}) yet the state changed"
            );
        }
        for c in &t.commands {
            match c {
                Command::Dispatch(d) => self.pending.push(d.clone()),
                Command::StartTimer { timer, fire_at } => {
                    self.timers.push((*fire_at, timer.clone()));
                }
                _ => {}
            }
            self.log.push((self.now, c.clone()));
        }
        self.history.push((event, self.now));
        self.transitions.push(t.clone());
        t
    }

    fn start(&mut self, input: Value) -> Transition {
        self.apply(Event::Started {
            input,
            timeout_ms: None,
            parent: None,
        })
    }

    fn pending_labels(&self) -> Vec<String> {
        self.pending.iter().map(|d| label(&d.task)).collect()
    }

    /// Takes the oldest outstanding dispatch with this label.
    fn take(&mut self, which: &str) -> Dispatch {
        let Some(i) = self.pending.iter().position(|d| label(&d.task) == which) else {
            panic!(
                "no dispatch for `{which}`; pending: {:?}",
                self.pending_labels()
            );
        };
        self.pending.remove(i)
    }

    fn reply(&mut self, d: &Dispatch, reply: Reply) -> Option<Transition> {
        let task = d.task.clone();
        self.now = self.now.saturating_add(LATENCY);
        match reply {
            Reply::Ok(output) => Some(self.apply(Event::TaskSucceeded { task, output })),
            Reply::Fail(error) => Some(self.apply(Event::TaskFailed { task, error })),
            Reply::Hang => None,
        }
    }

    fn succeed(&mut self, which: &str, output: Value) -> Transition {
        let d = self.take(which);
        self.reply(&d, Reply::Ok(output)).expect("answered")
    }

    fn fail(&mut self, which: &str, error: ErrorInfo) -> Transition {
        let d = self.take(which);
        self.reply(&d, Reply::Fail(error)).expect("answered")
    }

    fn signal(&mut self, name: &str, payload: Value) -> Transition {
        self.now = self.now.saturating_add(LATENCY);
        self.apply(Event::SignalReceived {
            name: name.into(),
            payload,
            id: None,
        })
    }

    fn cancel(&mut self) -> Transition {
        self.now = self.now.saturating_add(LATENCY);
        self.apply(Event::CancelRequested {
            reason: Some("customer changed their mind".into()),
        })
    }

    /// Fires the earliest timer still outstanding, advancing the clock to it.
    fn fire_next_timer(&mut self) -> Option<Transition> {
        let i = (0..self.timers.len()).min_by_key(|&i| self.timers[i].0)?;
        let (fire_at, timer) = self.timers.remove(i);
        self.now = self.now.max(fire_at);
        Some(self.apply(Event::TimerFired { timer }))
    }

    /// Fires the first outstanding timer of this kind for this step.
    fn fire(&mut self, kind: TimerKind, step: &str) -> Transition {
        let Some(i) = self
            .timers
            .iter()
            .position(|(_, t)| t.kind == kind && &*t.step == step)
        else {
            panic!("no {kind:?} timer for `{step}`; timers: {:?}", self.timers);
        };
        let (fire_at, timer) = self.timers.remove(i);
        self.now = self.now.max(fire_at);
        self.apply(Event::TimerFired { timer })
    }

    /// Answers outstanding dispatches oldest first; when none is left, fires
    /// the next timer. Stops when the execution has finished.
    fn run(&mut self, mut script: impl FnMut(&Dispatch) -> Reply) {
        for _ in 0..10_000 {
            if self.ex.status.is_terminal() {
                return;
            }
            if !self.pending.is_empty() {
                let d = self.pending.remove(0);
                let reply = script(&d);
                self.reply(&d, reply);
            } else if self.fire_next_timer().is_none() {
                panic!(
                    "stuck in {:?} with nothing outstanding; dispatched so far: {:?}",
                    self.ex.status,
                    self.dispatched()
                );
            }
        }
        panic!("no end after 10000 events");
    }

    fn dispatched(&self) -> Vec<String> {
        self.all_dispatches()
            .iter()
            .map(|d| label(&d.task))
            .collect()
    }

    fn all_dispatches(&self) -> Vec<&Dispatch> {
        self.log
            .iter()
            .filter_map(|(_, c)| match c {
                Command::Dispatch(d) => Some(d),
                _ => None,
            })
            .collect()
    }

    fn dispatches_of(&self, which: &str) -> Vec<&Dispatch> {
        self.all_dispatches()
            .into_iter()
            .filter(|d| label(&d.task) == which)
            .collect()
    }

    fn lifecycle_events(&self) -> Vec<&LifecycleEvent> {
        self.log
            .iter()
            .filter_map(|(_, c)| match c {
                Command::Emit(e) => Some(e),
                _ => None,
            })
            .collect()
    }

    fn lifecycle(&self) -> Vec<String> {
        self.lifecycle_events()
            .into_iter()
            .map(lifecycle_label)
            .collect()
    }

    fn dead_letters(&self) -> Vec<&DeadLetter> {
        self.log
            .iter()
            .filter_map(|(_, c)| match c {
                Command::DeadLetter(d) => Some(d),
                _ => None,
            })
            .collect()
    }

    /// The one `Finish` command: status, output, error.
    fn finish(&self) -> (ExecutionStatus, Option<Value>, Option<ErrorInfo>) {
        let finishes: Vec<_> = self
            .log
            .iter()
            .filter_map(|(_, c)| match c {
                Command::Finish {
                    status,
                    output,
                    error,
                } => Some((*status, output.clone(), error.clone())),
                _ => None,
            })
            .collect();
        assert_eq!(
            finishes.len(),
            1,
            "expected exactly one Finish: {finishes:?}"
        );
        assert_eq!(finishes[0].0, self.ex.status, "Finish and state disagree");
        finishes[0].clone()
    }

    /// Delays of the retry timers started for this step's units, in order.
    fn retry_delays(&self, step: &str, kind: TaskKind) -> Vec<u64> {
        self.log
            .iter()
            .filter_map(|(issued, c)| match c {
                Command::StartTimer { timer, fire_at }
                    if timer.kind == TimerKind::Retry
                        && timer.task_kind == kind
                        && &*timer.step == step =>
                {
                    Some(fire_at - issued)
                }
                _ => None,
            })
            .collect()
    }

    fn step_status(&self, step: &str) -> StepStatus {
        self.ex.step(step).expect("known step").status
    }

    /// Replays every event on a fresh execution and checks it ends the same way.
    fn assert_replays(&self) {
        let mut fresh = Execution::new(&self.wf, self.ex.id.clone());
        for ((event, now), original) in self.history.iter().zip(&self.transitions) {
            let t = apply(&self.wf, &mut fresh, event.clone(), *now);
            assert_eq!(&t, original, "replay diverged at {event:?}");
        }
        assert_eq!(state_json(&fresh), state_json(&self.ex));
    }
}

/// Applies an event that must change nothing and say why.
fn assert_ignored(shell: &mut Shell, event: Event, expected: Ignored) {
    let before = state_json(&shell.ex);
    let t = shell.apply(event);
    assert_eq!(t.outcome, Outcome::Ignored(expected));
    assert!(t.commands.is_empty(), "{:?}", t.commands);
    assert_eq!(state_json(&shell.ex), before);
}

fn echo_function(d: &Dispatch) -> Reply {
    Reply::Ok(json!({ "by": &*d.function, "input": d.input.clone() }))
}

// ---------------------------------------------------------------- shapes

const SEQUENCE: &str = r#"
name: sequence
defaults: { retry: { max_attempts: 1 } }
steps:
  a: { function: fa, mutates: false }
  b: { function: fb, mutates: false, needs: [a], input: "${ steps.a.output }" }
  c: { function: fc, mutates: false, needs: [b] }
  d: { function: fd, mutates: false, needs: [c] }
output: "${ steps.d.output }"
"#;

#[test]
fn sequence_dispatches_one_step_at_a_time_in_order() {
    let mut shell = Shell::new(SEQUENCE);
    let t = shell.start(json!({}));
    assert_eq!(dispatches(&t), ["a"]);
    for (step, next) in [
        ("a", Some("b")),
        ("b", Some("c")),
        ("c", Some("d")),
        ("d", None),
    ] {
        assert_eq!(shell.pending_labels(), [step], "only `{step}` may run now");
        let t = shell.succeed(step, json!(format!("out-{step}")));
        assert_eq!(dispatches(&t), next.into_iter().collect::<Vec<_>>());
    }
    assert_eq!(shell.dispatched(), ["a", "b", "c", "d"]);
    assert_eq!(shell.dispatches_of("b")[0].input, json!("out-a"));
    let (status, output, error) = shell.finish();
    assert_eq!(status, ExecutionStatus::Succeeded);
    assert_eq!(output, Some(json!("out-d")));
    assert_eq!(error, None);
    assert_eq!(shell.ex.output, Some(json!("out-d")));
    shell.assert_replays();
}

const FAN_OUT: &str = r#"
name: fan-out
defaults: { retry: { max_attempts: 1 } }
steps:
  a: { function: fa, mutates: false }
  b: { function: fb, mutates: false, needs: [a] }
  c: { function: fc, mutates: false, needs: [a] }
  d: { function: fd, mutates: false, needs: [a] }
  e:
    function: fe
    mutates: false
    needs: [b, c, d]
    input: ["${ steps.b.output }", "${ steps.c.output }", "${ steps.d.output }"]
"#;

#[test]
fn fan_out_dispatches_together_and_fan_in_waits_for_all() {
    for order in [["b", "c", "d"], ["d", "b", "c"], ["c", "d", "b"]] {
        let mut shell = Shell::new(FAN_OUT);
        shell.start(json!({}));
        let t = shell.succeed("a", json!("a"));
        assert_eq!(
            dispatches(&t),
            ["b", "c", "d"],
            "all three start together after a"
        );
        for (i, step) in order.iter().enumerate() {
            let t = shell.succeed(step, json!(step));
            if i < 2 {
                assert!(
                    dispatches(&t).is_empty(),
                    "e started before all its needs finished"
                );
            } else {
                assert_eq!(dispatches(&t), ["e"]);
            }
        }
        assert_eq!(shell.dispatches_of("e")[0].input, json!(["b", "c", "d"]));
        shell.succeed("e", json!("done"));
        assert_eq!(shell.dispatches_of("e").len(), 1);
        assert_eq!(shell.finish().0, ExecutionStatus::Succeeded);
    }
}

#[test]
fn fan_in_does_not_start_when_a_branch_fails() {
    let mut shell = Shell::new(FAN_OUT);
    shell.start(json!({}));
    shell.succeed("a", json!("a"));
    shell.succeed("b", json!("b"));
    shell.fail("c", fatal("Broken"));
    shell.succeed("d", json!("d"));
    assert!(shell.dispatches_of("e").is_empty());
    let (status, _, error) = shell.finish();
    assert_eq!(status, ExecutionStatus::Failed);
    assert_eq!(error.expect("a cause").name, "Broken");
}

#[test]
fn fan_out_example_runs() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../workflows/fan-out.yaml"
    ))
    .expect("workflows/fan-out.yaml");
    let mut shell = Shell::with_workflow(workflow(&text), "ex-1");
    let t = shell.start(json!({ "assetId": "img-42" }));
    assert_eq!(dispatches(&t).len(), 1, "one root step");
    let root = t.commands.iter().find_map(|c| match c {
        Command::Dispatch(d) => Some(label(&d.task)),
        _ => None,
    });
    let t = shell.succeed(&root.expect("a root"), json!({}));
    assert_eq!(dispatches(&t).len(), 3, "three branches at once");
    shell.run(echo_function);
    assert_eq!(shell.finish().0, ExecutionStatus::Succeeded);
    assert_eq!(shell.dispatched().len(), 5);
}

fn order_saga() -> Shell {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../workflows/order-saga.yaml"
    ))
    .expect("workflows/order-saga.yaml");
    Shell::with_workflow(workflow(&text), "ex-1")
}

fn order_function(d: &Dispatch) -> Reply {
    Reply::Ok(match &*d.function {
        "validate-order" => json!({ "valid": true, "items": [1], "total": 5 }),
        "reserve-inventory" => json!({ "reservationId": "r-1" }),
        "process-payment" => json!({ "paymentId": "p-1" }),
        "ship-order" => json!({ "shipmentId": "s-1", "trackingNumber": "T-1" }),
        _ => json!({}),
    })
}

#[test]
fn order_saga_example_runs_to_its_output() {
    let mut shell = order_saga();
    shell.start(json!({ "orderId": "o-1" }));
    shell.run(order_function);
    assert_eq!(
        shell.dispatched(),
        ["validate", "reserve", "charge", "ship", "notify"]
    );
    let (status, output, _) = shell.finish();
    assert_eq!(status, ExecutionStatus::Succeeded);
    assert_eq!(
        output,
        Some(json!({ "orderId": "o-1", "trackingNumber": "T-1" }))
    );
    assert_eq!(
        shell.dispatches_of("charge")[0].input,
        json!({ "orderId": "o-1", "amount": 5, "fail": {} })
    );
}

#[test]
fn order_saga_example_undoes_reserve_when_charge_is_declined() {
    let mut shell = order_saga();
    shell.start(json!({ "orderId": "o-1" }));
    shell.run(|d| match &*d.function {
        "process-payment" => Reply::Fail(fatal("CardDeclined")),
        _ => order_function(d),
    });
    assert_eq!(
        shell.dispatched(),
        ["validate", "reserve", "charge", "undo reserve"]
    );
    assert_eq!(
        shell.dispatches_of("undo reserve")[0].input,
        json!({ "reservationId": "r-1" })
    );
    assert_eq!(shell.finish().0, ExecutionStatus::Compensated);
}

const DECISION: &str = r#"
name: decision
defaults: { retry: { max_attempts: 1 } }
steps:
  decide: { function: decide, mutates: false }
  b: { needs: [decide], if: "${ steps.decide.output.x }", function: fb, mutates: false }
  c: { needs: [decide], if: "${ !steps.decide.output.x }", function: fc, mutates: false }
  d:
    needs: [b, c]
    function: fd
    mutates: false
    input: { b: "${ steps.b.status }", c: "${ steps.c.status }" }
  only_c: { needs: [c], function: fe, mutates: false }
"#;

#[test]
fn decision_runs_one_branch_and_merges_once() {
    for (x, ran, skipped) in [(true, "b", "c"), (false, "c", "b")] {
        let mut shell = Shell::new(DECISION);
        shell.start(json!({}));
        let t = shell.succeed("decide", json!({ "x": x }));
        assert_eq!(dispatches(&t), [ran]);
        assert!(
            shell
                .lifecycle()
                .contains(&format!("step.skipped {skipped}")),
            "{:?}",
            shell.lifecycle()
        );
        assert_eq!(shell.step_status(skipped), StepStatus::Skipped);
        let t = shell.succeed(ran, json!(ran));
        let mut expected = vec!["d"];
        if ran == "c" {
            expected.push("only_c");
        }
        assert_eq!(dispatches(&t), expected);
        shell.run(echo_function);

        assert_eq!(shell.dispatches_of("d").len(), 1, "d runs exactly once");
        let input = &shell.dispatches_of("d")[0].input;
        assert_eq!(input[ran], json!("succeeded"));
        assert_eq!(input[skipped], json!("skipped"));
        // A step whose needs were all skipped is skipped too.
        if ran == "b" {
            assert_eq!(shell.step_status("only_c"), StepStatus::Skipped);
            assert!(
                shell
                    .lifecycle()
                    .contains(&"step.skipped only_c".to_string())
            );
            assert!(shell.dispatches_of("only_c").is_empty());
        } else {
            assert_eq!(shell.step_status("only_c"), StepStatus::Succeeded);
        }
        assert_eq!(shell.finish().0, ExecutionStatus::Succeeded);
        assert!(shell.dispatches_of(skipped).is_empty());
    }
}

// ---------------------------------------------------------------- sagas

const SAGA: &str = r#"
name: saga
defaults:
  retry: { max_attempts: 1 }
  compensation_retry: { max_attempts: 3, backoff: fixed, delay: 1s, jitter: none }
steps:
  create_order:
    function: create-order
    compensate: { function: cancel-order, input: { orderId: "${ steps.create_order.output.orderId }" } }
  reserve:
    needs: [create_order]
    function: reserve-inventory
    compensate: { function: release-inventory, input: "${ steps.reserve.output }" }
  pay:
    needs: [reserve]
    function: process-payment
    compensate: { function: refund-payment, input: { paymentId: "${ steps.pay.output.paymentId }" } }
  ship:
    needs: [pay]
    function: ship-order
    retry: { max_attempts: 2, backoff: fixed, delay: 1s }
    compensate: { function: cancel-shipment }
"#;

fn saga_function(d: &Dispatch) -> Reply {
    Reply::Ok(match &*d.function {
        "create-order" => json!({ "orderId": "o-1" }),
        "reserve-inventory" => json!({ "reservationId": "r-1" }),
        "process-payment" => json!({ "paymentId": "p-1" }),
        "ship-order" => json!({ "shipmentId": "s-1" }),
        _ => json!({ "undone": true }),
    })
}

#[test]
fn saga_compensates_in_reverse_order_when_a_step_fails_for_good() {
    let mut shell = Shell::new(SAGA);
    shell.start(json!({}));
    shell.run(|d| match &*d.function {
        "ship-order" => Reply::Fail(error("CarrierDown")),
        _ => saga_function(d),
    });
    assert_eq!(
        shell.dispatched(),
        [
            "create_order",
            "reserve",
            "pay",
            "ship",
            "ship",
            "undo pay",
            "undo reserve",
            "undo create_order",
        ]
    );
    let functions: Vec<&str> = shell
        .all_dispatches()
        .iter()
        .filter(|d| d.task.kind == TaskKind::Compensation)
        .map(|d| &*d.function)
        .collect();
    assert_eq!(
        functions,
        ["refund-payment", "release-inventory", "cancel-order"]
    );
    assert_eq!(
        shell.dispatches_of("undo pay")[0].input,
        json!({ "paymentId": "p-1" })
    );
    assert_eq!(
        shell.dispatches_of("undo reserve")[0].input,
        json!({ "reservationId": "r-1" })
    );
    assert_eq!(
        shell.dispatches_of("undo create_order")[0].input,
        json!({ "orderId": "o-1" })
    );

    let (status, output, error) = shell.finish();
    assert_eq!(status, ExecutionStatus::Compensated);
    assert_eq!(output, None);
    let error = error.expect("the cause");
    assert_eq!(error.name, "CarrierDown");
    assert!(error.message.contains("ship"), "{}", error.message);
    assert_eq!(shell.step_status("ship"), StepStatus::Failed);

    let life = shell.lifecycle();
    let tail: Vec<&str> = life
        .iter()
        .map(String::as_str)
        .skip_while(|e| *e != "step.failed ship#2")
        .collect();
    assert_eq!(
        tail,
        [
            "step.failed ship#2",
            "compensation.started pay#1",
            "compensation.succeeded pay#1",
            "compensation.started reserve#1",
            "compensation.succeeded reserve#1",
            "compensation.started create_order#1",
            "compensation.succeeded create_order#1",
            "execution.compensated",
        ]
    );
    assert!(shell.dead_letters().is_empty());
    shell.assert_replays();
}

#[test]
fn a_compensation_that_fails_for_good_is_dead_lettered_and_the_rest_still_run() {
    let mut shell = Shell::new(SAGA);
    shell.start(json!({}));
    shell.run(|d| match &*d.function {
        "ship-order" => Reply::Fail(fatal("AddressInvalid")),
        "release-inventory" => Reply::Fail(error("WarehouseOffline")),
        _ => saga_function(d),
    });
    assert_eq!(
        shell.dispatched(),
        [
            "create_order",
            "reserve",
            "pay",
            "ship",
            "undo pay",
            "undo reserve",
            "undo reserve",
            "undo reserve",
            "undo create_order",
        ]
    );
    assert_eq!(
        shell.retry_delays("reserve", TaskKind::Compensation),
        [1000, 1000]
    );

    let letters = shell.dead_letters();
    assert_eq!(letters.len(), 1);
    let letter = letters[0];
    assert_eq!(&*letter.execution_id, "ex-1");
    assert_eq!(&*letter.workflow, "saga");
    assert_eq!(&*letter.step, "reserve");
    assert_eq!(letter.index, None);
    assert_eq!(&*letter.function, "release-inventory");
    assert_eq!(letter.input, json!({ "reservationId": "r-1" }));
    assert_eq!(letter.error.name, "WarehouseOffline");
    assert_eq!(letter.attempts, 3);
    assert_eq!(
        letter.idempotency_key,
        shell.dispatches_of("undo reserve")[0].idempotency_key
    );

    // The dead letter comes before the next compensation starts.
    let order: Vec<String> = shell
        .log
        .iter()
        .filter_map(|(_, c)| match c {
            Command::DeadLetter(d) => Some(format!("dead letter {}", d.step)),
            Command::Dispatch(d) if d.task.kind == TaskKind::Compensation => Some(label(&d.task)),
            _ => None,
        })
        .collect();
    assert_eq!(
        order[order.len() - 2..],
        ["dead letter reserve", "undo create_order"]
    );

    let (status, _, error) = shell.finish();
    assert_eq!(status, ExecutionStatus::CompensationFailed);
    assert_eq!(error.expect("the cause").name, "AddressInvalid");
    let life = shell.lifecycle();
    for expected in [
        "compensation.retrying reserve#1",
        "compensation.retrying reserve#2",
        "compensation.failed reserve#3",
        "compensation.succeeded create_order#1",
        "execution.compensation_failed",
    ] {
        assert!(
            life.contains(&expected.to_string()),
            "missing {expected}: {life:?}"
        );
    }
    assert_eq!(
        life.last().map(String::as_str),
        Some("execution.compensation_failed")
    );
    shell.assert_replays();
}

#[test]
fn resolving_every_dead_letter_of_a_compensation_failed_execution_makes_it_compensated() {
    use baton_core::engine::{DeadLetterKind, DeadLetterRef};
    let mut shell = Shell::new(SAGA);
    shell.start(json!({}));
    shell.run(|d| match &*d.function {
        "ship-order" => Reply::Fail(fatal("AddressInvalid")),
        "release-inventory" | "refund-payment" => Reply::Fail(fatal("Offline")),
        _ => saga_function(d),
    });
    assert_eq!(shell.ex.status, ExecutionStatus::CompensationFailed);
    assert_eq!(shell.dead_letters().len(), 2);
    let letter = |step: &str, id: &str| DeadLetterRef {
        id: id.into(),
        kind: DeadLetterKind::Compensation,
        step: Some(step.into()),
        index: None,
    };
    let compensation = |shell: &Shell, step: &str| {
        shell.ex.step(step).unwrap().units[0]
            .compensation
            .clone()
            .unwrap()
    };

    // A task's dead letter only leaves its trace in the history.
    let t = shell.apply(Event::DeadLetterRedriven {
        dead_letter: DeadLetterRef {
            id: "task-1".into(),
            kind: DeadLetterKind::Task,
            step: Some("pay".into()),
            index: None,
        },
    });
    assert_eq!(t.outcome, Outcome::Applied);
    assert!(t.commands.is_empty(), "{:?}", t.commands);

    // Discarded: resolved by hand, one still open, so nothing else changes.
    let t = shell.apply(Event::DeadLetterDiscarded {
        dead_letter: letter("reserve", "d-1"),
    });
    assert_eq!(t.outcome, Outcome::Applied);
    assert!(t.commands.is_empty(), "{:?}", t.commands);
    assert!(compensation(&shell, "reserve").resolved);
    assert_eq!(shell.ex.status, ExecutionStatus::CompensationFailed);
    assert_ignored(
        &mut shell,
        Event::DeadLetterRedriven {
            dead_letter: letter("reserve", "d-1"),
        },
        Ignored::NothingToResolve {
            step: "reserve".into(),
            index: None,
        },
    );

    // Redriven with success: the last one, so the execution is compensated.
    let t = shell.apply(Event::DeadLetterRedriven {
        dead_letter: letter("pay", "d-2"),
    });
    assert_eq!(t.outcome, Outcome::Applied);
    let pay = compensation(&shell, "pay");
    assert_eq!((pay.status, pay.attempt), (UnitStatus::Succeeded, 2));
    assert_eq!(shell.ex.status, ExecutionStatus::Compensated);
    let life = shell.lifecycle();
    assert_eq!(
        life[life.len() - 3..],
        [
            "execution.compensation_failed",
            "compensation.succeeded pay#2",
            "execution.compensated"
        ]
    );
    assert!(t.commands.iter().any(|c| matches!(
        c,
        Command::Finish {
            status: ExecutionStatus::Compensated,
            ..
        }
    )));
    // Resolving again, or a compensation that never failed, changes nothing.
    for step in ["pay", "create_order"] {
        assert_ignored(
            &mut shell,
            Event::DeadLetterRedriven {
                dead_letter: letter(step, "d-3"),
            },
            Ignored::NothingToResolve {
                step: step.into(),
                index: None,
            },
        );
    }
    shell.assert_replays();
}

#[test]
fn the_failing_step_is_never_compensated_and_nothing_to_undo_means_failed() {
    let mut shell = Shell::new(SAGA);
    shell.start(json!({}));
    shell.run(|d| match &*d.function {
        "create-order" => Reply::Fail(fatal("Invalid")),
        _ => saga_function(d),
    });
    assert_eq!(shell.dispatched(), ["create_order"]);
    assert_eq!(shell.finish().0, ExecutionStatus::Failed);
    assert_eq!(
        shell.lifecycle().last().map(String::as_str),
        Some("execution.failed")
    );
}

// ---------------------------------------------------------------- retries

fn single_step(retry: &str) -> String {
    format!(
        r#"
name: retrying
steps:
  a: {{ function: fa, mutates: false, retry: {retry} }}
"#
    )
}

#[test]
fn retries_stop_after_exactly_max_attempts() {
    let mut shell = Shell::new(&single_step(
        "{ max_attempts: 4, backoff: fixed, delay: 2s }",
    ));
    shell.start(json!({}));
    shell.run(|_| Reply::Fail(error("Flaky")));
    let attempts: Vec<u32> = shell
        .dispatches_of("a")
        .iter()
        .map(|d| d.task.attempt)
        .collect();
    assert_eq!(attempts, [1, 2, 3, 4]);
    let life = shell.lifecycle();
    let retrying = life
        .iter()
        .filter(|e| e.starts_with("step.retrying"))
        .count();
    assert_eq!(retrying, 3);
    assert!(life.contains(&"step.failed a#4".to_string()));
    let (status, _, error) = shell.finish();
    assert_eq!(status, ExecutionStatus::Failed);
    assert_eq!(error.expect("the cause").name, "Flaky");
    assert_eq!(shell.ex.steps[0].units[0].attempt, 4);
}

#[test]
fn backoff_delays_follow_the_policy_and_its_cap() {
    for (backoff, expected) in [
        ("fixed", [100, 100, 100, 100]),
        ("linear", [100, 200, 300, 350]),
        ("exponential", [100, 200, 350, 350]),
    ] {
        let retry = format!(
            "{{ max_attempts: 5, backoff: {backoff}, delay: 100ms, max_delay: 350ms, jitter: none }}"
        );
        let mut shell = Shell::new(&single_step(&retry));
        shell.start(json!({}));
        shell.run(|_| Reply::Fail(error("Flaky")));
        assert_eq!(
            shell.retry_delays("a", TaskKind::Step),
            expected,
            "{backoff}"
        );
        let announced: Vec<u64> = shell
            .lifecycle_events()
            .iter()
            .filter(|e| e.kind == LifecycleKind::StepRetrying)
            .map(|e| e.delay_ms.expect("a delay"))
            .collect();
        assert_eq!(announced, expected, "{backoff}: step.retrying delay_ms");
        // Each retry is dispatched when its timer fires, not earlier.
        let fired: Vec<u64> = shell
            .log
            .iter()
            .filter_map(|(at, c)| match c {
                Command::Dispatch(d) if d.task.attempt > 1 => Some(*at),
                _ => None,
            })
            .collect();
        let due: Vec<u64> = shell
            .log
            .iter()
            .filter_map(|(_, c)| match c {
                Command::StartTimer { timer, fire_at } if timer.kind == TimerKind::Retry => {
                    Some(*fire_at)
                }
                _ => None,
            })
            .collect();
        assert_eq!(fired, due, "{backoff}");
    }
}

#[test]
fn full_jitter_stays_within_bounds_and_is_identical_on_replay() {
    let retry = "{ max_attempts: 6, backoff: exponential, delay: 1s, max_delay: 8s, jitter: full }";
    let wf_text = single_step(retry);
    let run = |id: &str| {
        let mut shell = Shell::with_workflow(workflow(&wf_text), id);
        shell.start(json!({}));
        shell.run(|_| Reply::Fail(error("Flaky")));
        shell
    };
    let shell = run("ex-1");
    let delays = shell.retry_delays("a", TaskKind::Step);
    let caps = [1000, 2000, 4000, 8000, 8000];
    assert_eq!(delays.len(), caps.len());
    for (d, cap) in delays.iter().zip(caps) {
        assert!(*d <= cap, "{delays:?} exceeds {caps:?}");
    }
    assert_ne!(
        delays, caps,
        "full jitter should not give the capped delays themselves"
    );
    shell.assert_replays();
    assert_eq!(run("ex-1").retry_delays("a", TaskKind::Step), delays);
    assert_ne!(run("ex-2").retry_delays("a", TaskKind::Step), delays);
}

#[test]
fn a_non_retryable_error_fails_at_once() {
    let mut shell = Shell::new(&single_step("{ max_attempts: 5, delay: 1s }"));
    shell.start(json!({}));
    shell.run(|_| Reply::Fail(fatal("CardDeclined")));
    assert_eq!(shell.dispatched(), ["a"]);
    assert!(
        !shell
            .lifecycle()
            .iter()
            .any(|e| e.starts_with("step.retrying"))
    );
    let (status, _, error) = shell.finish();
    assert_eq!(status, ExecutionStatus::Failed);
    assert_eq!(error.expect("the cause").name, "CardDeclined");
}

#[test]
fn retry_on_and_no_retry_on_filter_by_error_name() {
    let cases = [
        (
            "{ max_attempts: 3, delay: 1s, retry_on: [Throttled] }",
            "Throttled",
            3,
        ),
        (
            "{ max_attempts: 3, delay: 1s, retry_on: [Throttled] }",
            "Boom",
            1,
        ),
        (
            "{ max_attempts: 3, delay: 1s, no_retry_on: [CardDeclined] }",
            "CardDeclined",
            1,
        ),
        (
            "{ max_attempts: 3, delay: 1s, no_retry_on: [CardDeclined] }",
            "Boom",
            3,
        ),
    ];
    for (retry, name, dispatched) in cases {
        let mut shell = Shell::new(&single_step(retry));
        shell.start(json!({}));
        shell.run(|_| Reply::Fail(error(name)));
        assert_eq!(shell.dispatched().len(), dispatched, "{retry} with {name}");
        assert_eq!(shell.finish().0, ExecutionStatus::Failed);
    }
    // Filters in `defaults.retry` apply to steps that do not set their own.
    let text = r#"
name: inherit
defaults: { retry: { max_attempts: 3, delay: 1s, no_retry_on: [CardDeclined] } }
steps:
  a: { function: fa, mutates: false }
"#;
    let mut shell = Shell::new(text);
    shell.start(json!({}));
    shell.run(|_| Reply::Fail(error("CardDeclined")));
    assert_eq!(shell.dispatched(), ["a"]);
}

const TIMEOUTS: &str = r#"
name: timeouts
steps:
  a: { function: slow, mutates: false, timeout: 5s, retry: { max_attempts: 2, backoff: fixed, delay: 1s } }
"#;

#[test]
fn a_timeout_counts_as_a_failed_attempt_and_its_late_result_is_stale() {
    let mut shell = Shell::new(TIMEOUTS);
    let t = shell.start(json!({}));
    let first = shell.take("a");
    assert_eq!(first.timeout_ms, 5_000);
    assert_eq!(first.deadline, T0 + 5_000);
    assert!(t.commands.iter().any(|c| matches!(
        c,
        Command::StartTimer { timer, fire_at } if timer.kind == TimerKind::Timeout && *fire_at == T0 + 5_000
    )));
    assert_eq!(t.next_wakeup, Some(T0 + 5_000));

    let t = shell.fire(TimerKind::Timeout, "a");
    assert!(t.is_applied());
    let retrying = shell
        .lifecycle_events()
        .into_iter()
        .find(|e| e.kind == LifecycleKind::StepRetrying);
    let retrying = retrying.expect("a retry");
    assert_eq!(
        retrying.error.as_ref().map(|e| e.name.as_str()),
        Some("Timeout")
    );
    assert_eq!(t.next_wakeup, Some(T0 + 6_000));

    // Late while backing off: the attempt is settled.
    let late = Event::TaskSucceeded {
        task: first.task.clone(),
        output: json!("late"),
    };
    assert_ignored(&mut shell, late.clone(), Ignored::NotRunning);

    let t = shell.fire(TimerKind::Retry, "a");
    assert_eq!(dispatches(&t), ["a"]);
    assert_eq!(shell.pending[0].task.attempt, 2);
    // Late once the next attempt runs: it is for an old attempt.
    assert_ignored(
        &mut shell,
        late,
        Ignored::StaleAttempt {
            expected: 2,
            got: 1,
        },
    );
    assert_ignored(
        &mut shell,
        Event::TaskFailed {
            task: first.task.clone(),
            error: error("Late"),
        },
        Ignored::StaleAttempt {
            expected: 2,
            got: 1,
        },
    );

    shell.succeed("a", json!("second"));
    assert_eq!(shell.finish().0, ExecutionStatus::Succeeded);
    assert_eq!(
        shell.ex.step("a").expect("a").output.as_deref(),
        Some(&json!("second"))
    );
    shell.assert_replays();
}

#[test]
fn timeouts_exhaust_attempts_whether_reported_by_timer_or_by_the_shell() {
    let mut shell = Shell::new(TIMEOUTS);
    shell.start(json!({}));
    shell.run(|_| Reply::Hang);
    assert_eq!(shell.dispatched(), ["a", "a"]);
    let (status, _, error) = shell.finish();
    assert_eq!(status, ExecutionStatus::Failed);
    assert_eq!(error.expect("the cause").name, "Timeout");

    let mut shell = Shell::new(TIMEOUTS);
    shell.start(json!({}));
    for _ in 0..2 {
        let d = shell.take("a");
        shell.now = d.deadline;
        shell.apply(Event::TaskTimedOut { task: d.task });
        if !shell.ex.status.is_terminal() {
            shell.fire(TimerKind::Retry, "a");
        }
    }
    assert_eq!(shell.dispatched(), ["a", "a"]);
    assert_eq!(shell.finish().2.expect("the cause").name, "Timeout");
}

// ---------------------------------------------------------------- for_each

const FOR_EACH: &str = r#"
name: for-each
defaults: { retry: { max_attempts: 2, backoff: fixed, delay: 1s } }
steps:
  each:
    function: work
    mutates: false
    for_each: "${ input.items }"
    max_concurrency: 2
    input: { item: "${ item }", index: "${ index }" }
output: "${ steps.each.output }"
"#;

#[test]
fn for_each_keeps_input_order_and_respects_max_concurrency() {
    let items = ["a", "b", "c", "d", "e"];
    let mut shell = Shell::new(FOR_EACH);
    let t = shell.start(json!({ "items": items }));
    assert_eq!(dispatches(&t), ["each[0]", "each[1]"]);
    let mut failed_once = false;
    while !shell.ex.status.is_terminal() {
        let running = shell.ex.steps[0]
            .units
            .iter()
            .filter(|u| u.status == UnitStatus::Running)
            .count();
        assert!(running <= 2, "{running} elements running at once");
        assert!(shell.pending.len() <= 2);
        // Answer the newest dispatch first so results arrive out of order.
        let Some(d) = shell.pending.pop() else {
            shell.fire_next_timer().expect("a retry timer");
            continue;
        };
        let i = d.task.index.expect("an element") as usize;
        assert_eq!(d.input, json!({ "item": items[i], "index": i }));
        if i == 2 && !failed_once {
            failed_once = true;
            shell.reply(&d, Reply::Fail(error("Flaky")));
        } else {
            shell.reply(&d, Reply::Ok(json!(format!("done-{}", items[i]))));
        }
    }
    let expected = json!(["done-a", "done-b", "done-c", "done-d", "done-e"]);
    assert_eq!(
        shell.finish(),
        (ExecutionStatus::Succeeded, Some(expected.clone()), None)
    );
    assert_eq!(shell.ex.steps[0].output.as_deref(), Some(&expected));
    let order: Vec<u32> = shell
        .all_dispatches()
        .iter()
        .filter_map(|d| d.task.index)
        .collect();
    assert_ne!(
        order,
        [0, 1, 2, 3, 4, 5],
        "the test should answer out of order"
    );
    assert_eq!(shell.dispatches_of("each[2]").len(), 2);
    shell.assert_replays();
}

#[test]
fn for_each_over_an_empty_list_succeeds_with_an_empty_list() {
    let mut shell = Shell::new(FOR_EACH);
    let t = shell.start(json!({ "items": [] }));
    assert!(dispatches(&t).is_empty());
    assert_eq!(
        shell.finish(),
        (ExecutionStatus::Succeeded, Some(json!([])), None)
    );
    assert_eq!(shell.step_status("each"), StepStatus::Succeeded);
}

#[test]
fn a_for_each_element_that_fails_for_good_fails_the_step() {
    let mut shell = Shell::new(FOR_EACH);
    shell.start(json!({ "items": [1, 2, 3] }));
    let t = shell.fail("each[1]", fatal("Bad"));
    assert!(
        dispatches(&t).is_empty(),
        "no new element after the failure"
    );
    let t = shell.succeed("each[0]", json!(null));
    assert!(
        dispatches(&t).is_empty(),
        "no new element after the failure"
    );
    assert!(shell.dispatches_of("each[2]").is_empty());
    assert_eq!(shell.step_status("each"), StepStatus::Failed);
    assert!(
        shell
            .lifecycle()
            .contains(&"step.failed each[1]#1".to_string())
    );
    assert!(shell.lifecycle().contains(&"step.failed each".to_string()));
    assert_eq!(shell.finish().0, ExecutionStatus::Failed);
}

const TOLERANT_EACH: &str = r#"
name: tolerant-each
steps:
  each:
    function: fe
    mutates: false
    for_each: "${ input.items }"
    max_concurrency: 2
    continue_on_failure: true
    retry: { max_attempts: 3, backoff: fixed, delay: 1s }
  after: { needs: [each], function: fa, mutates: false, retry: { max_attempts: 1 } }
"#;

#[test]
fn a_failed_for_each_step_that_may_fail_starts_no_more_elements() {
    // Element 0 is backing off when element 1 fails for good.
    let mut shell = Shell::new(TOLERANT_EACH);
    shell.start(json!({ "items": [0, 1, 2] }));
    shell.fail("each[0]", error("Flaky"));
    let t = shell.fail("each[1]", fatal("Bad"));
    assert_eq!(dispatches(&t), ["after"], "the execution goes on");
    assert_eq!(shell.step_status("each"), StepStatus::Failed);
    let t = shell.fire(TimerKind::Retry, "each");
    assert_eq!(t.outcome, Outcome::Ignored(Ignored::StaleTimer));
    assert_eq!(t.next_wakeup, Some(shell.pending[0].deadline));
    shell.succeed("after", json!(null));
    assert_eq!(shell.dispatched(), ["each[0]", "each[1]", "after"]);
    assert!(shell.dispatches_of("each[2]").is_empty());
    assert_eq!(
        shell.dispatches_of("each[0]").len(),
        1,
        "no retry after the step failed"
    );
    assert_eq!(shell.finish().0, ExecutionStatus::Succeeded);

    // Element 0 is still running when element 1 fails for good, then fails itself.
    let mut shell = Shell::new(TOLERANT_EACH);
    shell.start(json!({ "items": [0, 1, 2] }));
    shell.fail("each[1]", fatal("Bad"));
    let t = shell.fail("each[0]", error("Flaky"));
    assert!(dispatches(&t).is_empty(), "{:?}", dispatches(&t));
    assert!(
        !shell
            .lifecycle()
            .iter()
            .any(|e| e.starts_with("step.retrying")),
        "{:?}",
        shell.lifecycle()
    );
    assert!(
        shell
            .lifecycle()
            .contains(&"step.failed each[0]#1".to_string())
    );
    assert_eq!(shell.dispatches_of("each[0]").len(), 1);
}

// ---------------------------------------------------------------- waits

#[test]
fn wait_pauses_until_its_timer_fires() {
    let text = r#"
name: wait
steps:
  pause: { wait: 10m }
  after: { needs: [pause], function: fa, mutates: false, retry: { max_attempts: 1 } }
"#;
    let mut shell = Shell::new(text);
    let t = shell.start(json!({}));
    assert!(dispatches(&t).is_empty());
    assert_eq!(shell.timers.len(), 1);
    assert_eq!(shell.timers[0].0, T0 + 600_000);
    assert_eq!(shell.timers[0].1.kind, TimerKind::Wait);
    assert_eq!(t.next_wakeup, Some(T0 + 600_000));
    assert_eq!(shell.step_status("pause"), StepStatus::Waiting);
    assert!(
        shell
            .lifecycle()
            .contains(&"step.waiting pause".to_string())
    );

    let t = shell.fire_next_timer().expect("the wait timer");
    assert_eq!(dispatches(&t), ["after"]);
    assert_eq!(shell.log.last().map(|(at, _)| *at), Some(T0 + 600_000));
    shell.succeed("after", json!(1));
    assert_eq!(shell.finish().0, ExecutionStatus::Succeeded);
}

#[test]
fn wait_until_pauses_until_the_instant_and_not_when_it_has_passed() {
    let text = r#"
name: wait-until
steps:
  until: { wait_until: "${ input.at }" }
  after: { needs: [until], function: fa, mutates: false, retry: { max_attempts: 1 } }
"#;
    for (at, fire_at) in [
        (json!(T0 + 5_000), Some(T0 + 5_000)),
        (json!("2030-01-01T00:00:00Z"), Some(1_893_456_000_000)),
        (json!(T0 - 1), None),
        (json!("2001-01-01T00:00:00Z"), None),
    ] {
        let mut shell = Shell::new(text);
        let t = shell.start(json!({ "at": at }));
        match fire_at {
            Some(fire_at) => {
                assert!(dispatches(&t).is_empty(), "{at}");
                assert_eq!(shell.timers.len(), 1);
                assert_eq!(shell.timers[0].0, fire_at, "{at}");
                let t = shell.fire_next_timer().expect("the wait timer");
                assert_eq!(dispatches(&t), ["after"], "{at}");
            }
            None => assert_eq!(dispatches(&t), ["after"], "{at} has passed"),
        }
    }
    // An instant that is not a time fails the step.
    let mut shell = Shell::new(text);
    shell.start(json!({ "at": "tomorrow" }));
    let (status, _, error) = shell.finish();
    assert_eq!(status, ExecutionStatus::Failed);
    assert_eq!(error.expect("the cause").name, "InvalidWaitUntil");
    // An expression that cannot be evaluated fails it too, under its own name.
    let mut shell = Shell::new(text);
    shell.start(json!({}));
    assert_eq!(shell.finish().2.expect("the cause").name, "WaitUntilError");
}

const APPROVAL: &str = r#"
name: approval
defaults: { retry: { max_attempts: 1 } }
steps:
  prepare: { function: fp, mutates: false }
  approval: { needs: [prepare], wait_for: { signal: approved, timeout: 1h } }
  act: { needs: [approval], function: fa, mutates: false, input: "${ steps.approval.output }" }
"#;

#[test]
fn wait_for_takes_the_signal_payload_as_output() {
    let mut shell = Shell::new(APPROVAL);
    shell.start(json!({}));
    let t = shell.succeed("prepare", json!(null));
    assert!(dispatches(&t).is_empty());
    assert_eq!(shell.step_status("approval"), StepStatus::Waiting);
    let timeout = shell
        .timers
        .iter()
        .find(|(_, t)| t.kind == TimerKind::SignalTimeout);
    assert_eq!(timeout.map(|(at, _)| *at), Some(shell.now + 3_600_000));

    // Another signal does not end the wait.
    let t = shell.signal("rejected", json!({}));
    assert!(dispatches(&t).is_empty());
    assert_eq!(shell.step_status("approval"), StepStatus::Waiting);

    let t = shell.signal("approved", json!({ "by": "ann" }));
    assert_eq!(dispatches(&t), ["act"]);
    assert_eq!(
        shell.ex.step("approval").expect("step").output.as_deref(),
        Some(&json!({ "by": "ann" }))
    );
    assert_eq!(shell.dispatches_of("act")[0].input, json!({ "by": "ann" }));
    // The signal came in time, so its timeout no longer matters.
    let t = shell.fire(TimerKind::SignalTimeout, "approval");
    assert_eq!(t.outcome, Outcome::Ignored(Ignored::StaleTimer));
    assert_eq!(shell.step_status("approval"), StepStatus::Succeeded);
    shell.succeed("act", json!(1));
    assert_eq!(shell.finish().0, ExecutionStatus::Succeeded);
}

#[test]
fn a_signal_that_arrives_early_is_kept_until_the_step_waits() {
    let mut shell = Shell::new(APPROVAL);
    shell.start(json!({}));
    let t = shell.signal("approved", json!({ "by": "bob" }));
    assert!(t.is_applied());
    assert!(dispatches(&t).is_empty());
    assert_eq!(shell.ex.signals["approved"].len(), 1);

    let t = shell.succeed("prepare", json!(null));
    assert_eq!(
        dispatches(&t),
        ["act"],
        "the buffered signal ends the wait at once"
    );
    assert!(shell.ex.signals.is_empty(), "the signal is consumed");
    assert!(!t.commands.iter().any(
        |c| matches!(c, Command::StartTimer { timer, .. } if timer.kind == TimerKind::SignalTimeout)
    ));
    assert_eq!(shell.dispatches_of("act")[0].input, json!({ "by": "bob" }));
}

#[test]
fn a_signal_that_never_comes_fails_the_step_at_its_timeout() {
    let mut shell = Shell::new(APPROVAL);
    shell.start(json!({}));
    shell.succeed("prepare", json!(null));
    let waited_from = shell.now;
    let t = shell.fire(TimerKind::SignalTimeout, "approval");
    assert!(t.is_applied());
    assert_eq!(shell.now, waited_from + 3_600_000);
    assert_eq!(shell.step_status("approval"), StepStatus::Failed);
    assert!(shell.dispatches_of("act").is_empty());
    let (status, _, error) = shell.finish();
    assert_eq!(status, ExecutionStatus::Failed);
    assert_eq!(error.expect("the cause").name, "SignalTimeout");
}

// ---------------------------------------------------------------- cancel

#[test]
fn cancel_stops_new_work_and_compensates_what_succeeded() {
    let mut shell = Shell::new(SAGA);
    shell.start(json!({}));
    shell.succeed("create_order", json!({ "orderId": "o-1" }));
    shell.succeed("reserve", json!({ "reservationId": "r-1" }));
    assert_eq!(shell.pending_labels(), ["pay"]);

    let t = shell.cancel();
    assert!(t.is_applied());
    assert!(
        dispatches(&t).is_empty(),
        "nothing new while pay is in flight"
    );
    assert_eq!(shell.ex.status, ExecutionStatus::Compensating);
    let before = state_json(&shell.ex);
    let again = shell.cancel();
    assert_eq!(again.outcome, Outcome::Ignored(Ignored::AlreadyStopping));
    assert!(again.commands.is_empty());
    assert_eq!(state_json(&shell.ex), before);

    // The in-flight payment still lands, so it is undone too.
    let t = shell.succeed("pay", json!({ "paymentId": "p-1" }));
    assert_eq!(dispatches(&t), ["undo pay"]);
    shell.run(saga_function);
    assert_eq!(
        shell.dispatched(),
        [
            "create_order",
            "reserve",
            "pay",
            "undo pay",
            "undo reserve",
            "undo create_order"
        ]
    );
    assert!(shell.dispatches_of("ship").is_empty());
    let (status, _, error) = shell.finish();
    assert_eq!(status, ExecutionStatus::Cancelled);
    let error = error.expect("the cause");
    assert_eq!(error.name, "Cancelled");
    assert_eq!(error.message, "customer changed their mind");
    assert_eq!(
        shell.lifecycle().last().map(String::as_str),
        Some("execution.cancelled")
    );
    assert_eq!(shell.step_status("ship"), StepStatus::Cancelled);
    shell.assert_replays();
}

#[test]
fn cancel_during_a_wait_ends_at_once_when_nothing_needs_undoing() {
    let text = r#"
name: wait
steps:
  pause: { wait: 10m }
  after: { needs: [pause], function: fa, mutates: false, retry: { max_attempts: 1 } }
"#;
    let mut shell = Shell::new(text);
    shell.start(json!({}));
    let t = shell.cancel();
    assert!(dispatches(&t).is_empty());
    assert_eq!(shell.finish().0, ExecutionStatus::Cancelled);
    assert_eq!(shell.step_status("pause"), StepStatus::Cancelled);
    assert_eq!(t.next_wakeup, None);
    let timer = shell.timers[0].1.clone();
    assert_ignored(
        &mut shell,
        Event::TimerFired { timer },
        Ignored::ExecutionFinished,
    );
}

#[test]
fn cancel_while_backing_off_drops_the_retry() {
    let mut shell = Shell::new(&single_step(
        "{ max_attempts: 3, backoff: fixed, delay: 1s }",
    ));
    shell.start(json!({}));
    shell.fail("a", error("Flaky"));
    shell.cancel();
    assert_eq!(shell.finish().0, ExecutionStatus::Cancelled);
    assert_eq!(shell.dispatched(), ["a"]);
}

// ---------------------------------------------------------------- continue_on_failure

#[test]
fn continue_on_failure_records_the_failure_and_goes_on() {
    let text = r#"
name: tolerant
defaults: { retry: { max_attempts: 1 } }
steps:
  a: { function: fa, mutates: false }
  b: { needs: [a], function: fb, mutates: false, continue_on_failure: true }
  c: { needs: [b], function: fc, mutates: false, input: { b: "${ steps.b.status }" } }
output: { b: "${ steps.b.status }" }
"#;
    let mut shell = Shell::new(text);
    shell.start(json!({}));
    shell.run(|d| match &*d.function {
        "fb" => Reply::Fail(fatal("Optional")),
        _ => Reply::Ok(json!(null)),
    });
    assert_eq!(shell.dispatched(), ["a", "b", "c"]);
    assert_eq!(shell.dispatches_of("c")[0].input, json!({ "b": "failed" }));
    assert_eq!(shell.step_status("b"), StepStatus::Failed);
    assert!(shell.lifecycle().contains(&"step.failed b#1".to_string()));
    assert_eq!(
        shell.finish(),
        (
            ExecutionStatus::Succeeded,
            Some(json!({ "b": "failed" })),
            None
        )
    );
}

// ---------------------------------------------------------------- stale and duplicate events

const TWO_STEPS: &str = r#"
name: two
steps:
  a: { function: fa, mutates: false, retry: { max_attempts: 3, backoff: fixed, delay: 1s } }
  b: { needs: [a], function: fb, mutates: false, retry: { max_attempts: 1 } }
"#;

#[test]
fn a_duplicate_result_is_ignored() {
    let mut shell = Shell::new(TWO_STEPS);
    shell.start(json!({}));
    let a = shell.take("a");
    shell.reply(&a, Reply::Ok(json!(1)));
    let success = Event::TaskSucceeded {
        task: a.task.clone(),
        output: json!(2),
    };
    assert_ignored(&mut shell, success, Ignored::NotRunning);
    let failure = Event::TaskFailed {
        task: a.task.clone(),
        error: error("Late"),
    };
    assert_ignored(&mut shell, failure, Ignored::NotRunning);
    assert_ignored(
        &mut shell,
        Event::TaskTimedOut { task: a.task },
        Ignored::NotRunning,
    );
    assert_eq!(
        shell.ex.step("a").expect("a").output.as_deref(),
        Some(&json!(1))
    );
    assert_eq!(shell.dispatched(), ["a", "b"]);
}

#[test]
fn a_result_for_an_old_attempt_is_ignored() {
    let mut shell = Shell::new(TWO_STEPS);
    shell.start(json!({}));
    let first = shell.take("a");
    shell.reply(&first, Reply::Fail(error("Flaky")));
    shell.fire(TimerKind::Retry, "a");
    let event = Event::TaskSucceeded {
        task: first.task.clone(),
        output: json!(1),
    };
    assert_ignored(
        &mut shell,
        event,
        Ignored::StaleAttempt {
            expected: 2,
            got: 1,
        },
    );
    // An attempt that was never dispatched is no better.
    let future = TaskRef {
        attempt: 7,
        ..first.task.clone()
    };
    let event = Event::TaskSucceeded {
        task: future,
        output: json!(1),
    };
    assert_ignored(
        &mut shell,
        event,
        Ignored::StaleAttempt {
            expected: 2,
            got: 7,
        },
    );
}

#[test]
fn a_timer_whose_purpose_has_passed_is_ignored() {
    let mut shell = Shell::new(TWO_STEPS);
    shell.start(json!({}));
    let first = shell.take("a");
    shell.reply(&first, Reply::Fail(error("Flaky")));
    let retry = shell
        .timers
        .iter()
        .find(|(_, t)| t.kind == TimerKind::Retry)
        .cloned();
    let (_, retry) = retry.expect("a retry timer");
    shell.fire(TimerKind::Retry, "a");
    // The same retry timer delivered twice.
    assert_ignored(
        &mut shell,
        Event::TimerFired { timer: retry },
        Ignored::StaleTimer,
    );
    // The timeout of the failed attempt.
    let timeout = TimerId {
        kind: TimerKind::Timeout,
        task_kind: TaskKind::Step,
        step: "a".into(),
        index: None,
        attempt: 1,
    };
    assert_ignored(
        &mut shell,
        Event::TimerFired {
            timer: timeout.clone(),
        },
        Ignored::StaleTimer,
    );
    shell.succeed("a", json!(1));
    // The timeout of the attempt that succeeded.
    let timeout = TimerId {
        attempt: 2,
        ..timeout
    };
    assert_ignored(
        &mut shell,
        Event::TimerFired { timer: timeout },
        Ignored::StaleTimer,
    );
    // A wait timer for a step that never waits.
    let wait = TimerId {
        kind: TimerKind::Wait,
        task_kind: TaskKind::Step,
        step: "b".into(),
        index: None,
        attempt: 1,
    };
    assert_ignored(
        &mut shell,
        Event::TimerFired { timer: wait },
        Ignored::StaleTimer,
    );
}

#[test]
fn events_after_the_end_are_ignored() {
    let mut shell = Shell::new(TWO_STEPS);
    shell.start(json!({}));
    let a = shell.take("a");
    shell.reply(&a, Reply::Ok(json!(1)));
    let b = shell.take("b");
    shell.reply(&b, Reply::Ok(json!(2)));
    assert_eq!(shell.finish().0, ExecutionStatus::Succeeded);
    let timer = shell.timers[0].1.clone();
    for event in [
        Event::TaskSucceeded {
            task: b.task.clone(),
            output: json!(3),
        },
        Event::TaskFailed {
            task: b.task.clone(),
            error: error("Late"),
        },
        Event::TaskTimedOut { task: b.task },
        Event::TimerFired { timer },
        Event::SignalReceived {
            name: "approved".into(),
            payload: json!(true),
            id: None,
        },
        Event::CancelRequested { reason: None },
    ] {
        assert_ignored(&mut shell, event, Ignored::ExecutionFinished);
    }
    assert_ignored(
        &mut shell,
        Event::Started {
            input: json!({}),
            timeout_ms: None,
            parent: None,
        },
        Ignored::AlreadyStarted,
    );
    assert_eq!(shell.finish().0, ExecutionStatus::Succeeded);
}

#[test]
fn events_for_unknown_steps_or_before_the_start_are_ignored() {
    let mut shell = Shell::new(TWO_STEPS);
    let task = TaskRef {
        step: "nope".into(),
        index: None,
        attempt: 1,
        kind: TaskKind::Step,
    };
    let success = Event::TaskSucceeded {
        task: task.clone(),
        output: json!(1),
    };
    assert_ignored(&mut shell, success.clone(), Ignored::NotStarted);
    assert_ignored(
        &mut shell,
        Event::CancelRequested { reason: None },
        Ignored::NotStarted,
    );
    shell.start(json!({}));
    let unknown = Ignored::UnknownStep {
        step: "nope".into(),
    };
    assert_ignored(&mut shell, success, unknown.clone());
    assert_ignored(&mut shell, Event::TaskTimedOut { task }, unknown.clone());
    let timer = TimerId {
        kind: TimerKind::Timeout,
        task_kind: TaskKind::Step,
        step: "nope".into(),
        index: None,
        attempt: 1,
    };
    assert_ignored(&mut shell, Event::TimerFired { timer }, unknown);
    // A step that has not started yet has no task to finish.
    let not_yet = TaskRef {
        step: "b".into(),
        index: None,
        attempt: 1,
        kind: TaskKind::Step,
    };
    let event = Event::TaskSucceeded {
        task: not_yet,
        output: json!(1),
    };
    assert_ignored(&mut shell, event, Ignored::NotRunning);
    // A compensation that was never dispatched.
    let a = shell.pending[0].task.clone();
    let undo = TaskRef {
        kind: TaskKind::Compensation,
        ..a
    };
    let event = Event::TaskSucceeded {
        task: undo,
        output: json!(1),
    };
    assert_ignored(&mut shell, event, Ignored::NotRunning);
}

// ---------------------------------------------------------------- lifecycle and keys

#[test]
fn lifecycle_events_tell_the_whole_story() {
    let text = r#"
name: story
defaults: { retry: { max_attempts: 1 } }
steps:
  a:
    function: fa
    retry: { max_attempts: 2, backoff: fixed, delay: 1s }
    compensate: { function: undo-a }
  b: { needs: [a], if: "${ input.b }", function: fb, mutates: false }
  c: { needs: [a], function: fc, mutates: false }
"#;
    let mut shell = Shell::new(text);
    shell.start(json!({ "b": false }));
    shell.fail("a", error("Flaky"));
    shell.fire(TimerKind::Retry, "a");
    shell.succeed("a", json!(1));
    shell.fail("c", fatal("Broken"));
    shell.succeed("undo a", json!(null));
    assert_eq!(
        shell.lifecycle(),
        [
            "execution.started",
            "step.started a#1",
            "step.retrying a#1",
            "step.started a#2",
            "step.succeeded a#2",
            "step.skipped b",
            "step.started c#1",
            "step.failed c#1",
            "compensation.started a#1",
            "compensation.succeeded a#1",
            "execution.compensated",
        ]
    );
    let events = shell.lifecycle_events();
    assert!(
        events
            .iter()
            .all(|e| &*e.execution_id == "ex-1" && &*e.workflow == "story")
    );
    assert_eq!(
        events[2].error.as_ref().map(|e| e.name.as_str()),
        Some("Flaky")
    );
    assert_eq!(events[2].delay_ms, Some(1_000));
    assert_eq!(
        events[7].error.as_ref().map(|e| e.name.as_str()),
        Some("Broken")
    );
    assert_eq!(
        events[10].error.as_ref().map(|e| e.name.as_str()),
        Some("Broken")
    );
    assert_eq!(events[0].at, T0);
    assert_eq!(events[10].at, shell.now);

    let mut shell = Shell::new(SEQUENCE);
    shell.start(json!({}));
    shell.run(|_| Reply::Ok(json!(null)));
    let life = shell.lifecycle();
    assert_eq!(life.first().map(String::as_str), Some("execution.started"));
    assert_eq!(life.last().map(String::as_str), Some("execution.succeeded"));
    assert_eq!(
        life.iter()
            .filter(|e| e.starts_with("step.succeeded"))
            .count(),
        4
    );
}

#[test]
fn idempotency_keys_are_stable_per_unit_and_distinct_between_units() {
    let text = r#"
name: keys
defaults: { retry: { max_attempts: 3, backoff: fixed, delay: 1s } }
steps:
  a: { function: fa, compensate: { function: undo-a } }
  each: { needs: [a], function: fe, for_each: "${ input.items }", compensate: { function: undo-e } }
  last: { needs: [each], function: fl, mutates: false, retry: { max_attempts: 1 } }
"#;
    let wf = workflow(text);
    let mut shell = Shell::with_workflow(wf, "ex-1");
    shell.start(json!({ "items": ["x", "y"] }));
    let mut a_failures = 0;
    shell.run(|d| match label(&d.task).as_str() {
        "a" if a_failures < 2 => {
            a_failures += 1;
            Reply::Fail(error("Flaky"))
        }
        "last" => Reply::Fail(fatal("Broken")),
        _ => Reply::Ok(json!(null)),
    });
    assert_eq!(shell.finish().0, ExecutionStatus::Compensated);

    let keys = |which: &str| -> Vec<String> {
        shell
            .dispatches_of(which)
            .iter()
            .map(|d| d.idempotency_key.clone())
            .collect()
    };
    let a = keys("a");
    assert_eq!(a.len(), 3);
    assert!(
        a.iter().all(|k| *k == a[0]),
        "one key across attempts: {a:?}"
    );
    assert_eq!(a[0], idempotency::key("ex-1", "a", None, TaskKind::Step));

    let mut distinct = vec![
        a[0].clone(),
        keys("each[0]")[0].clone(),
        keys("each[1]")[0].clone(),
        keys("last")[0].clone(),
        keys("undo a")[0].clone(),
        keys("undo each[0]")[0].clone(),
        keys("undo each[1]")[0].clone(),
    ];
    assert_eq!(
        distinct[4],
        idempotency::key("ex-1", "a", None, TaskKind::Compensation)
    );
    distinct.sort();
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        7,
        "every unit and compensation has its own key"
    );

    let mut other = Shell::with_workflow(workflow(text), "ex-2");
    other.start(json!({ "items": [] }));
    assert_ne!(
        other.pending[0].idempotency_key, a[0],
        "keys differ between executions"
    );
}

// ---------------------------------------------------------------- unknown outcomes

/// Compensations in the order they started (first attempts only).
fn undone(shell: &Shell) -> Vec<String> {
    shell
        .all_dispatches()
        .iter()
        .filter(|d| d.task.kind == TaskKind::Compensation && d.task.attempt == 1)
        .map(|d| label(&d.task))
        .collect()
}

/// Whether each `compensation.*` event of this unit says the outcome was unknown.
fn compensation_flags(shell: &Shell, step: &str, index: Option<u32>) -> Vec<bool> {
    shell
        .lifecycle_events()
        .iter()
        .filter(|e| {
            e.kind.as_str().starts_with("compensation.")
                && e.step.as_deref() == Some(step)
                && e.index == index
        })
        .map(|e| e.outcome_unknown)
        .collect()
}

const UNKNOWN: &str = r#"
name: unknown
defaults:
  retry: { max_attempts: 1 }
  timeout: 5s
  compensation_retry: { max_attempts: 2, backoff: fixed, delay: 1s, jitter: none }
steps:
  create_order:
    function: create-order
    compensate: { function: cancel-order, input: { orderId: "${ steps.create_order.output.orderId }" } }
  reserve:
    needs: [create_order]
    function: reserve-inventory
    input: { orderId: "${ steps.create_order.output.orderId }" }
    compensate: { function: release-inventory, input: { reservationId: "${ steps.reserve.output.reservationId }" } }
  pay:
    needs: [reserve]
    function: process-payment
    input: { orderId: "${ input.orderId }", amount: 5 }
    retry: { max_attempts: 2, backoff: fixed, delay: 1s, jitter: none }
    compensate: { function: refund-payment, input: { orderId: "${ input.orderId }" } }
  ship:
    needs: [pay]
    function: ship-order
    compensate: { function: cancel-shipment, input: "${ steps.ship.output }" }
"#;

fn unknown_function(d: &Dispatch) -> Reply {
    Reply::Ok(match &*d.function {
        "create-order" => json!({ "orderId": "o-1" }),
        "reserve-inventory" => json!({ "reservationId": "r-1" }),
        "process-payment" => json!({ "paymentId": "p-1" }),
        "ship-order" => json!({ "shipmentId": "s-1" }),
        _ => json!({ "undone": true }),
    })
}

#[test]
fn a_step_whose_last_attempt_timed_out_is_compensated_when_the_saga_unwinds() {
    // The payment's first attempt fails, its second never answers: it may have charged.
    let mut shell = Shell::new(UNKNOWN);
    shell.start(json!({ "orderId": "o-1" }));
    shell.run(|d| match (&*d.function, d.task.attempt) {
        ("process-payment", 1) => Reply::Fail(error("Flaky")),
        ("process-payment", _) => Reply::Hang,
        _ => unknown_function(d),
    });
    let (status, _, cause) = shell.finish();
    assert_eq!(status, ExecutionStatus::Compensated);
    assert_eq!(cause.expect("the cause").name, "Timeout");
    assert_eq!(
        undone(&shell),
        ["undo pay", "undo reserve", "undo create_order"]
    );
    // Its compensation does not read the missing output, so its input is as written.
    assert_eq!(
        shell.dispatches_of("undo pay")[0].input,
        json!({ "orderId": "o-1" })
    );
    assert_eq!(compensation_flags(&shell, "pay", None), [true, true]);
    assert_eq!(compensation_flags(&shell, "reserve", None), [false, false]);
    let pay = &shell.ex.step("pay").expect("pay").units[0];
    assert!(pay.outcome_unknown);
    assert_eq!(pay.status, UnitStatus::Failed);
    assert_eq!(pay.error.as_ref().map(|e| e.name.as_str()), Some("Timeout"));
    assert!(!shell.ex.step("reserve").expect("reserve").units[0].outcome_unknown);
    assert!(shell.dispatches_of("ship").is_empty());
    shell.assert_replays();
}

const TOLERANT_UNKNOWN: &str = r#"
name: tolerant-unknown
defaults: { retry: { max_attempts: 1 }, timeout: 5s }
steps:
  create_order:
    function: create-order
    compensate: { function: cancel-order, input: { orderId: "${ steps.create_order.output.orderId }" } }
  reserve:
    needs: [create_order]
    function: reserve-inventory
    continue_on_failure: true
    input: { orderId: "${ steps.create_order.output.orderId }" }
    compensate: { function: release-inventory, input: { reservationId: "${ steps.reserve.output.reservationId }" } }
  pay:
    needs: [reserve]
    function: process-payment
    compensate: { function: refund-payment, input: "${ steps.pay.output }" }
"#;

#[test]
fn a_timed_out_step_is_compensated_when_a_later_step_fails() {
    let mut shell = Shell::new(TOLERANT_UNKNOWN);
    shell.start(json!({}));
    shell.run(|d| match &*d.function {
        "reserve-inventory" => Reply::Hang,
        "process-payment" => Reply::Fail(fatal("CardDeclined")),
        _ => unknown_function(d),
    });
    assert_eq!(
        shell.dispatched(),
        [
            "create_order",
            "reserve",
            "pay",
            "undo reserve",
            "undo create_order"
        ],
        "the declined payment is not undone; the reservation that never answered is"
    );
    assert_eq!(shell.finish().0, ExecutionStatus::Compensated);
    // The compensation reads the output that never came: it gets what the step was given instead.
    let reserve = shell.dispatches_of("reserve")[0];
    assert_eq!(
        shell.dispatches_of("undo reserve")[0].input,
        json!({
            "outcome_unknown": true,
            "step_input": { "orderId": "o-1" },
            "step_idempotency_key": reserve.idempotency_key,
        })
    );
    assert_eq!(
        reserve.idempotency_key,
        idempotency::key("ex-1", "reserve", None, TaskKind::Step)
    );
    assert_eq!(
        shell.dispatches_of("undo create_order")[0].input,
        json!({ "orderId": "o-1" })
    );
    let life = shell.lifecycle();
    let tail: Vec<&str> = life
        .iter()
        .map(String::as_str)
        .skip_while(|e| *e != "step.failed pay#1")
        .collect();
    assert_eq!(
        tail,
        [
            "step.failed pay#1",
            "compensation.started reserve#1",
            "compensation.succeeded reserve#1",
            "compensation.started create_order#1",
            "compensation.succeeded create_order#1",
            "execution.compensated",
        ]
    );
    shell.assert_replays();

    // If nothing fails later, the execution succeeds and nothing is undone.
    let mut shell = Shell::new(TOLERANT_UNKNOWN);
    shell.start(json!({}));
    shell.run(|d| match &*d.function {
        "reserve-inventory" => Reply::Hang,
        _ => unknown_function(d),
    });
    assert_eq!(shell.finish().0, ExecutionStatus::Succeeded);
    assert!(undone(&shell).is_empty());
}

#[test]
fn a_step_whose_attempts_all_failed_with_an_error_is_not_compensated() {
    for (replies, compensated) in [
        // Every attempt said it failed: nothing to undo.
        (["error", "error"], false),
        (["error", "fatal"], false),
        // One attempt left no result: it may have charged, whatever came after.
        (["timeout", "error"], true),
        (["error", "timeout"], true),
        (["timeout", "timeout"], true),
        // A shell that knows the worker died mid-attempt says so.
        (["error", "crash"], true),
    ] {
        let mut shell = Shell::new(UNKNOWN);
        shell.start(json!({ "orderId": "o-1" }));
        shell.run(|d| match &*d.function {
            "process-payment" => match replies[d.task.attempt as usize - 1] {
                "error" => Reply::Fail(error("Flaky")),
                "fatal" => Reply::Fail(fatal("CardDeclined")),
                "crash" => Reply::Fail(
                    ErrorInfo::new("Lambda.Unhandled", "Runtime exited", true)
                        .with_outcome_unknown(),
                ),
                _ => Reply::Hang,
            },
            _ => unknown_function(d),
        });
        let expected: &[&str] = if compensated {
            &["undo pay", "undo reserve", "undo create_order"]
        } else {
            &["undo reserve", "undo create_order"]
        };
        assert_eq!(undone(&shell), expected, "{replies:?}");
        assert_eq!(
            shell.ex.step("pay").expect("pay").units[0].outcome_unknown,
            compensated,
            "{replies:?}"
        );
        assert_eq!(shell.finish().0, ExecutionStatus::Compensated);
        shell.assert_replays();
    }
}

const BRANCHES: &str = r#"
name: branches
defaults: { timeout: 5s, retry: { max_attempts: 2, backoff: fixed, delay: 1s, jitter: none } }
steps:
  a: { function: fa, compensate: { function: undo-a } }
  b: { needs: [a], function: fb, compensate: { function: undo-b } }
  c: { needs: [a], function: fc, compensate: { function: undo-c } }
"#;

#[test]
fn an_unknown_outcome_is_undone_in_order_of_when_its_attempt_started() {
    // b's only attempts start before c succeeds: c is undone first, then b, then a.
    let mut shell = Shell::new(BRANCHES);
    shell.start(json!({}));
    shell.succeed("a", json!(null));
    assert_eq!(shell.pending_labels(), ["b", "c"]);
    shell.succeed("c", json!(null));
    let d = shell.take("b");
    shell.reply(&d, Reply::Hang);
    shell.fire(TimerKind::Timeout, "b");
    shell.fire(TimerKind::Retry, "b");
    shell.run(|d| match &*d.function {
        "fb" => Reply::Hang,
        _ => Reply::Ok(json!(null)),
    });
    assert_eq!(
        undone(&shell),
        ["undo c", "undo b", "undo a"],
        "b's first timed-out attempt started before c succeeded"
    );
    shell.assert_replays();

    // b's first attempt fails with an error; the second starts after c succeeded and times out.
    let mut shell = Shell::new(BRANCHES);
    shell.start(json!({}));
    shell.succeed("a", json!(null));
    shell.fail("b", error("Flaky"));
    shell.succeed("c", json!(null));
    shell.run(|d| match &*d.function {
        "fb" => Reply::Hang,
        _ => Reply::Ok(json!(null)),
    });
    assert_eq!(undone(&shell), ["undo b", "undo c", "undo a"]);
    shell.assert_replays();

    // Both branches time out: the one started later is undone first.
    let mut shell = Shell::new(BRANCHES);
    shell.start(json!({}));
    shell.succeed("a", json!(null));
    shell.run(|d| match &*d.function {
        "fb" | "fc" => Reply::Hang,
        _ => Reply::Ok(json!(null)),
    });
    assert_eq!(undone(&shell), ["undo c", "undo b", "undo a"]);
    assert_eq!(compensation_flags(&shell, "a", None), [false, false]);
    assert_eq!(compensation_flags(&shell, "b", None), [true, true]);
    shell.assert_replays();
}

#[test]
fn cancel_waits_for_a_running_step_and_its_outcome_decides() {
    // The rule: cancel starts nothing new and waits for attempts in flight.
    // A success is undone, an attempt that never answers is undone (it may
    // have had its effect), one that failed with an error is not.
    for (reply, pay_undone, unknown) in [
        ("ok", true, false),
        ("hang", true, true),
        ("error", false, false),
    ] {
        let mut shell = Shell::new(UNKNOWN);
        shell.start(json!({ "orderId": "o-1" }));
        shell.succeed("create_order", json!({ "orderId": "o-1" }));
        shell.succeed("reserve", json!({ "reservationId": "r-1" }));
        assert_eq!(shell.pending_labels(), ["pay"]);
        let t = shell.cancel();
        assert!(dispatches(&t).is_empty(), "{reply}: waits for pay");
        shell.run(|d| match (&*d.function, reply) {
            ("process-payment", "hang") => Reply::Hang,
            ("process-payment", "error") => Reply::Fail(error("Flaky")),
            _ => unknown_function(d),
        });
        assert_eq!(
            shell.dispatches_of("pay").len(),
            1,
            "{reply}: no retry once cancelled"
        );
        let mut expected = vec!["undo reserve", "undo create_order"];
        if pay_undone {
            expected.insert(0, "undo pay");
        }
        assert_eq!(undone(&shell), expected, "{reply}");
        if pay_undone {
            assert_eq!(
                compensation_flags(&shell, "pay", None),
                [unknown, unknown],
                "{reply}"
            );
        }
        assert_eq!(shell.finish().0, ExecutionStatus::Cancelled, "{reply}");
        shell.assert_replays();
    }

    // Cancelled while backing off after a timeout: the timed-out attempt may have charged.
    let mut shell = Shell::new(UNKNOWN);
    shell.start(json!({ "orderId": "o-1" }));
    shell.succeed("create_order", json!({ "orderId": "o-1" }));
    shell.succeed("reserve", json!({ "reservationId": "r-1" }));
    let d = shell.take("pay");
    shell.now = d.deadline;
    shell.apply(Event::TaskTimedOut { task: d.task });
    assert_eq!(
        shell.ex.step("pay").expect("pay").units[0].status,
        UnitStatus::BackingOff
    );
    shell.cancel();
    assert_eq!(
        shell.ex.step("pay").expect("pay").units[0].status,
        UnitStatus::Cancelled
    );
    shell.run(unknown_function);
    assert_eq!(
        undone(&shell),
        ["undo pay", "undo reserve", "undo create_order"]
    );
    assert_eq!(shell.dispatches_of("pay").len(), 1);
    assert_eq!(shell.finish().0, ExecutionStatus::Cancelled);
    shell.assert_replays();
}

const UNKNOWN_EACH: &str = r#"
name: unknown-each
defaults: { timeout: 5s, retry: { max_attempts: 1 } }
steps:
  each:
    function: charge
    for_each: "${ input.items }"
    max_concurrency: 2
    input: { item: "${ item }", index: "${ index }" }
    compensate: { function: refund, input: { chargeId: "${ steps.each.output.chargeId }", item: "${ item }" } }
"#;

#[test]
fn for_each_elements_whose_outcome_is_unknown_are_compensated() {
    // Element 0 succeeds and element 2 starts; element 1 never answers, which
    // fails the step; element 2 is still in flight and succeeds; 3 never starts.
    let mut shell = Shell::new(UNKNOWN_EACH);
    shell.start(json!({ "items": ["a", "b", "c", "d"] }));
    shell.succeed("each[0]", json!({ "chargeId": "ch-a" }));
    assert_eq!(shell.pending_labels(), ["each[1]", "each[2]"]);
    let one = shell.take("each[1]");
    shell.reply(&one, Reply::Hang);
    shell.now = one.deadline;
    shell.apply(Event::TimerFired {
        timer: TimerId {
            kind: TimerKind::Timeout,
            task_kind: TaskKind::Step,
            step: one.task.step.clone(),
            index: Some(1),
            attempt: 1,
        },
    });
    assert_eq!(shell.ex.status, ExecutionStatus::Compensating);
    shell.succeed("each[2]", json!({ "chargeId": "ch-c" }));
    shell.run(|_| Reply::Ok(json!({ "refunded": true })));
    assert!(shell.dispatches_of("each[3]").is_empty());
    // Started order: 0, 1; then 0 succeeded, 2 started and succeeded. Newest first:
    // 2, then 0 (succeeded after 1 started), then 1.
    assert_eq!(
        undone(&shell),
        ["undo each[2]", "undo each[0]", "undo each[1]"]
    );
    assert_eq!(
        shell.dispatches_of("undo each[0]")[0].input,
        json!({ "chargeId": "ch-a", "item": "a" })
    );
    assert_eq!(
        shell.dispatches_of("undo each[1]")[0].input,
        json!({
            "outcome_unknown": true,
            "step_input": { "item": "b", "index": 1 },
            "step_idempotency_key": one.idempotency_key,
        })
    );
    assert_eq!(compensation_flags(&shell, "each", Some(1)), [true, true]);
    assert_eq!(compensation_flags(&shell, "each", Some(0)), [false, false]);
    assert_eq!(shell.finish().0, ExecutionStatus::Compensated);
    shell.assert_replays();

    // An element that failed with an error is not undone.
    let mut shell = Shell::new(UNKNOWN_EACH);
    shell.start(json!({ "items": ["a", "b"] }));
    shell.succeed("each[0]", json!({ "chargeId": "ch-a" }));
    shell.fail("each[1]", fatal("Declined"));
    shell.run(|_| Reply::Ok(json!({ "refunded": true })));
    assert_eq!(undone(&shell), ["undo each[0]"]);
}

#[test]
fn a_dead_lettered_compensation_of_an_unknown_outcome_says_so() {
    let mut shell = Shell::new(UNKNOWN);
    shell.start(json!({ "orderId": "o-1" }));
    shell.run(|d| match &*d.function {
        "process-payment" => Reply::Hang,
        "refund-payment" => Reply::Fail(fatal("RefundRefused")),
        _ => unknown_function(d),
    });
    let letters = shell.dead_letters();
    assert_eq!(letters.len(), 1);
    assert_eq!(&*letters[0].step, "pay");
    assert!(letters[0].outcome_unknown);
    assert_eq!(letters[0].input, json!({ "orderId": "o-1" }));
    let failed = shell
        .lifecycle_events()
        .into_iter()
        .find(|e| e.kind == LifecycleKind::CompensationFailed)
        .expect("compensation.failed");
    assert!(failed.outcome_unknown);
    let json = serde_json::to_value(failed).expect("serialises");
    assert_eq!(json["outcome_unknown"], json!(true));
    // The flag is left out where it is false, so other events read as before.
    let started = shell.lifecycle_events()[0];
    assert!(
        serde_json::to_value(started)
            .expect("serialises")
            .get("outcome_unknown")
            .is_none()
    );
    assert_eq!(shell.finish().0, ExecutionStatus::CompensationFailed);
}

// ---------------------------------------------------------------- ranges

#[test]
fn a_wait_until_out_of_range_fails_the_step_without_a_timer() {
    let text = r#"
name: wait-until
steps:
  until: { wait_until: "${ input.at }" }
  after: { needs: [until], function: fa, mutates: false, retry: { max_attempts: 1 } }
"#;
    for at in [
        json!(T0 + MAX_WAIT_AHEAD_MS + 1),
        json!(u64::MAX),
        json!(u64::MAX - 1),
        json!(i64::MAX),
        json!(-1),
        json!(i64::MIN),
        json!(1e300),
        json!("275000-01-01T00:00:00Z"),
        json!("+275000-01-01T00:00:00Z"),
        json!("1960-01-01T00:00:00Z"),
        json!("9999-12-31T23:59:59Z"),
        json!(null),
        json!({ "at": 1 }),
    ] {
        let mut shell = Shell::new(text);
        let t = shell.start(json!({ "at": at }));
        assert!(shell.timers.is_empty(), "{at}: {:?}", shell.timers);
        assert_eq!(t.next_wakeup, None, "{at}");
        let (status, _, cause) = shell.finish();
        assert_eq!(status, ExecutionStatus::Failed, "{at}");
        assert_eq!(cause.expect("the cause").name, "InvalidWaitUntil", "{at}");
        let failed = shell
            .lifecycle_events()
            .into_iter()
            .find(|e| e.kind == LifecycleKind::StepFailed)
            .and_then(|e| e.error.clone())
            .expect("step.failed with its error");
        assert_eq!(failed.name, "InvalidWaitUntil");
        assert!(!failed.retryable);
        shell.assert_replays();
    }
    // Ten years ahead is the limit, and it is allowed.
    let mut shell = Shell::new(text);
    shell.start(json!({ "at": T0 + MAX_WAIT_AHEAD_MS }));
    assert_eq!(shell.timers[0].0, T0 + MAX_WAIT_AHEAD_MS);
}

#[test]
fn huge_durations_and_times_saturate_instead_of_overflowing() {
    // 584 million years is a duration validation accepts, just under u64::MAX milliseconds.
    let text = r#"
name: huge
defaults: { timeout: 584000000y }
steps:
  a:
    function: fa
    retry: { max_attempts: 100, backoff: exponential, delay: 584000000y, jitter: full }
    compensate:
      function: undo-a
      timeout: 584000000y
      retry: { max_attempts: 100, backoff: linear, delay: 584000000y, max_delay: 584000000y }
  pause: { needs: [a], wait: 584000000y }
  signal: { needs: [a], wait_for: { signal: go, timeout: 584000000y } }
  b: { needs: [pause, signal], function: fb, mutates: false, retry: { max_attempts: 1 } }
"#;
    let mut shell = Shell::new(text);
    shell.start(json!({}));
    assert_eq!(shell.pending[0].deadline, MAX_TIMESTAMP);
    shell.fail("a", error("Flaky"));
    let (fire_at, retry) = shell.timers.pop().expect("the retry timer");
    assert_eq!((fire_at, retry.kind), (MAX_TIMESTAMP, TimerKind::Retry));
    // Fired early, so the clock stays where it is.
    shell.apply(Event::TimerFired { timer: retry });
    shell.succeed("a", json!(null));
    assert_eq!(shell.step_status("pause"), StepStatus::Waiting);
    assert_eq!(
        shell.ex.step("pause").expect("pause").wake_at,
        Some(MAX_TIMESTAMP)
    );
    assert_eq!(
        shell.ex.step("signal").expect("signal").wake_at,
        Some(MAX_TIMESTAMP)
    );
    shell.cancel();
    shell.run(|d| match d.task.attempt {
        1 => Reply::Fail(error("Flaky")),
        _ => Reply::Ok(json!(null)),
    });
    assert_eq!(shell.finish().0, ExecutionStatus::Cancelled);
    for (issued, command) in &shell.log {
        let at = match command {
            Command::StartTimer { fire_at, .. } => *fire_at,
            Command::Dispatch(d) => d.deadline,
            _ => continue,
        };
        assert!(
            at <= MAX_TIMESTAMP && at >= *issued,
            "{command:?} at {issued}"
        );
    }
    assert!(shell.log.iter().any(
        |(_, c)| matches!(c, Command::StartTimer { fire_at, .. } if *fire_at == MAX_TIMESTAMP)
    ));
    shell.assert_replays();

    // A shell clock at the very end of time moves nothing past it and panics nowhere.
    let mut shell = Shell::new(text);
    shell.now = u64::MAX - 1;
    shell.start(json!({}));
    assert_eq!(shell.pending[0].deadline, u64::MAX - 1);
    shell.run(|_| Reply::Fail(error("Flaky")));
    assert!(shell.ex.status.is_terminal());
    shell.assert_replays();
}

const TIMED: &str = r#"
name: timed
timeout: 10m
defaults: { retry: { max_attempts: 1 }, timeout: 1h }
steps:
  reserve: { function: reserve, compensate: { function: release } }
  approval: { needs: [reserve], wait_for: { signal: approved } }
  ship: { needs: [approval], function: ship, mutates: false }
"#;

#[test]
fn an_execution_past_its_timeout_fails_and_undoes_what_it_did() {
    let mut shell = Shell::new(TIMED);
    shell.start(json!({}));
    assert_eq!(shell.ex.deadline, Some(T0 + 10 * 60_000));
    shell.succeed("reserve", json!({ "id": "r-1" }));
    let t = shell.fire(TimerKind::ExecutionTimeout, "");
    assert_eq!(dispatches(&t), ["undo reserve"]);
    shell.succeed("undo reserve", json!({}));
    let failure = shell.ex.failure.clone().expect("a cause");
    assert_eq!(failure.name, baton_core::engine::EXECUTION_TIMED_OUT);
    assert!(failure.message.contains("past its timeout"), "{failure:?}");
    assert_eq!(shell.finish().0, ExecutionStatus::Compensated);
    assert!(!shell.dispatched().contains(&"ship".to_string()));
}

#[test]
fn a_start_may_give_its_execution_another_timeout() {
    let mut shell = Shell::new(TIMED);
    shell.apply(Event::Started {
        input: json!({}),
        timeout_ms: Some(60_000),
        parent: None,
    });
    assert_eq!(shell.ex.deadline, Some(T0 + 60_000));
    let timers: Vec<_> = shell
        .timers
        .iter()
        .filter(|(_, t)| t.kind == TimerKind::ExecutionTimeout)
        .map(|(at, _)| *at)
        .collect();
    assert_eq!(timers, [T0 + 60_000]);
}

#[test]
fn an_execution_that_ends_in_time_ignores_its_timeout() {
    let mut shell = Shell::new(TIMED);
    shell.start(json!({}));
    shell.succeed("reserve", json!({}));
    shell.signal("approved", json!({}));
    shell.succeed("ship", json!({}));
    assert_eq!(shell.ex.status, ExecutionStatus::Succeeded);
    assert_ignored(
        &mut shell,
        Event::TimerFired {
            timer: TimerId {
                kind: TimerKind::ExecutionTimeout,
                task_kind: TaskKind::Step,
                step: "".into(),
                index: None,
                attempt: 0,
            },
        },
        Ignored::ExecutionFinished,
    );
}

#[test]
fn a_workflow_without_a_timeout_starts_no_execution_timer() {
    let mut shell = Shell::new(&TIMED.replace("timeout: 10m\n", ""));
    shell.start(json!({}));
    assert_eq!(shell.ex.deadline, None);
    assert!(
        shell
            .timers
            .iter()
            .all(|(_, t)| t.kind != TimerKind::ExecutionTimeout)
    );
}

const TWO_APPROVALS: &str = r#"
name: approvals
defaults: { retry: { max_attempts: 1 } }
steps:
  first: { wait_for: { signal: approval } }
  second: { needs: [first], wait_for: { signal: approval } }
"#;

fn signal_with_id(shell: &mut Shell, name: &str, id: Option<&str>) -> Transition {
    shell.apply(Event::SignalReceived {
        name: name.into(),
        payload: json!({ "by": id }),
        id: id.map(str::to_string),
    })
}

#[test]
fn a_signal_sent_again_with_its_id_changes_nothing() {
    let mut shell = Shell::new(TWO_APPROVALS);
    shell.start(json!({}));
    let t = signal_with_id(&mut shell, "approval", Some("a-1"));
    assert!(t.is_applied());
    // A client's retry of the same signal must not release the second wait.
    assert_ignored(
        &mut shell,
        Event::SignalReceived {
            name: "approval".into(),
            payload: json!({ "by": "a-1" }),
            id: Some("a-1".into()),
        },
        Ignored::DuplicateSignal { id: "a-1".into() },
    );
    assert_eq!(shell.ex.status, ExecutionStatus::Running);
    let t = signal_with_id(&mut shell, "approval", Some("a-2"));
    assert!(t.is_applied());
    assert_eq!(shell.ex.status, ExecutionStatus::Succeeded);
}

#[test]
fn a_signal_no_step_waits_for_is_refused_and_not_kept() {
    let mut shell = Shell::new(TWO_APPROVALS);
    shell.start(json!({}));
    assert_ignored(
        &mut shell,
        Event::SignalReceived {
            name: "aproval".into(),
            payload: json!({}),
            id: None,
        },
        Ignored::UnknownSignal {
            name: "aproval".into(),
        },
    );
    assert!(shell.ex.signals.is_empty());
}

#[test]
fn an_execution_takes_a_bounded_number_of_signals() {
    let mut shell = Shell::new(
        "name: many\ndefaults: { retry: { max_attempts: 1 } }\nsteps:\n  never: { wait: 1h }\n  late: { needs: [never], wait_for: { signal: ping } }\n",
    );
    shell.start(json!({}));
    for i in 0..baton_core::limits::MAX_SIGNALS {
        let t = signal_with_id(&mut shell, "ping", Some(&format!("p-{i}")));
        assert!(t.is_applied(), "signal {i}");
    }
    assert_ignored(
        &mut shell,
        Event::SignalReceived {
            name: "ping".into(),
            payload: json!({}),
            id: None,
        },
        Ignored::TooManySignals {
            limit: baton_core::limits::MAX_SIGNALS,
        },
    );
    assert_eq!(
        shell.ex.signal_ids.len(),
        baton_core::limits::MAX_SIGNALS as usize
    );
}

const POLL: &str = r#"
name: poll
defaults: { retry: { max_attempts: 2, backoff: fixed, delay: 1s } }
steps:
  export: { function: start-export, mutates: false }
  ready:
    needs: [export]
    function: export-status
    mutates: false
    input: { job: "${ steps.export.output.job }" }
    repeat: { until: "${ steps.ready.output.done }", max_iterations: 3, delay: 30s }
  fetch: { needs: [ready], function: fetch, mutates: false, input: "${ steps.ready.output }" }
"#;

#[test]
fn a_repeating_step_polls_until_its_condition_holds() {
    let mut shell = Shell::new(POLL);
    shell.start(json!({}));
    shell.succeed("export", json!({ "job": "j-1" }));
    let t = shell.succeed("ready", json!({ "done": false, "n": 1 }));
    assert!(
        dispatches(&t).is_empty(),
        "the next iteration waits its delay"
    );
    let t = shell.fire(TimerKind::Retry, "ready");
    assert_eq!(dispatches(&t), ["ready"]);
    let t = shell.succeed("ready", json!({ "done": false, "n": 2 }));
    assert!(dispatches(&t).is_empty());
    shell.fire(TimerKind::Retry, "ready");
    let t = shell.succeed("ready", json!({ "done": true, "n": 3 }));
    assert_eq!(dispatches(&t), ["fetch"]);
    assert_eq!(
        shell.dispatches_of("fetch")[0].input,
        json!({ "done": true, "n": 3 })
    );
    // Each iteration is its own call: its own key, the same on its retries.
    let keys: Vec<&str> = shell
        .dispatches_of("ready")
        .iter()
        .map(|d| d.idempotency_key.as_str())
        .collect();
    assert_eq!(keys.len(), 3);
    assert!(keys[0] != keys[1] && keys[1] != keys[2] && keys[0] != keys[2]);
    assert_eq!(
        keys[0],
        idempotency::key("ex-1", "ready", None, TaskKind::Step)
    );
    // Every iteration's result is in the history.
    let results = shell
        .history
        .iter()
        .filter(|(e, _)| matches!(e, Event::TaskSucceeded { task, .. } if &*task.step == "ready"))
        .count();
    assert_eq!(results, 3);
    shell.succeed("fetch", json!({}));
    assert_eq!(shell.finish().0, ExecutionStatus::Succeeded);
}

#[test]
fn a_repeating_step_that_never_gets_there_fails_by_name() {
    let mut shell = Shell::new(POLL);
    shell.start(json!({}));
    shell.succeed("export", json!({ "job": "j-1" }));
    for _ in 0..2 {
        shell.succeed("ready", json!({ "done": false }));
        shell.fire(TimerKind::Retry, "ready");
    }
    shell.succeed("ready", json!({ "done": false }));
    let error = shell.ex.steps[1].units[0].error.clone().expect("an error");
    assert_eq!(error.name, "RepeatExhausted");
    assert!(!error.retryable);
    assert_eq!(shell.dispatches_of("ready").len(), 3, "not retried");
    assert_eq!(shell.finish().0, ExecutionStatus::Failed);
}

#[test]
fn a_repeating_step_retries_within_each_iteration() {
    let mut shell = Shell::new(POLL);
    shell.start(json!({}));
    shell.succeed("export", json!({ "job": "j-1" }));
    shell.succeed("ready", json!({ "done": false }));
    shell.fire(TimerKind::Retry, "ready");
    // The second iteration's first attempt fails: it has its own two attempts.
    shell.fail("ready", error("Throttled"));
    let t = shell.fire(TimerKind::Retry, "ready");
    assert_eq!(dispatches(&t), ["ready"]);
    let retried = shell.dispatches_of("ready");
    assert_eq!(retried[1].idempotency_key, retried[2].idempotency_key);
    let t = shell.succeed("ready", json!({ "done": true }));
    assert_eq!(dispatches(&t), ["fetch"]);
}

#[test]
fn repeat_is_checked_before_anything_runs() {
    let text = r#"
name: bad-repeat
defaults: { retry: { max_attempts: 1 } }
steps:
  a: { function: f, repeat: { until: "${ steps.a.output.done }", max_iterations: 3 }, compensate: { function: g } }
  b: { function: f, mutates: false, repeat: { until: "${ steps.a.outputs }", max_iterations: 0, delay: soon } }
  c: { wait: 1s, repeat: { until: "${ true }", max_iterations: 2 } }
"#;
    let errors = Workflow::from_text(text, Format::Yaml).expect_err("bad repeats");
    let all = errors.to_string();
    for expected in [
        "a repeating step must say `mutates: false`",
        "`repeat.max_iterations`: must be between 1 and 1000, not 0",
        "`repeat.delay`: `soon` is not a duration",
        "reads `steps.a.outputs`, but a step has only `output` and `status`",
        "step `c`, `repeat`: only a step with a `function` or `workflow` takes this",
    ] {
        assert!(all.contains(expected), "{expected} in {all}");
    }
}

const REDRIVABLE: &str = r#"
name: redrivable
defaults: { retry: { max_attempts: 2, backoff: fixed, delay: 1s } }
steps:
  fetch: { function: fetch, mutates: false }
  each: { needs: [fetch], function: enrich, mutates: false, for_each: "${ input.items }", max_concurrency: 2 }
  store: { needs: [each], function: store, mutates: false }
"#;

fn redrive(shell: &mut Shell) -> Transition {
    shell.now = shell.now.saturating_add(LATENCY);
    shell.apply(Event::RedriveRequested {
        reason: Some("the service is back".into()),
    })
}

#[test]
fn a_failed_execution_redriven_reruns_only_what_did_not_succeed() {
    let mut shell = Shell::new(REDRIVABLE);
    shell.start(json!({ "items": [1, 2, 3] }));
    shell.succeed("fetch", json!({}));
    shell.succeed("each[0]", json!("a"));
    // Element 1 fails for good (not retryable) while element 2 is running.
    shell.fail("each[1]", fatal("Down"));
    shell.succeed("each[2]", json!("c"));
    assert_eq!(shell.ex.status, ExecutionStatus::Failed);
    let failed_key = shell.dispatches_of("each[1]")[0].idempotency_key.clone();

    let t = redrive(&mut shell);
    assert!(t.is_applied());
    assert_eq!(shell.ex.status, ExecutionStatus::Running);
    assert_eq!(
        dispatches(&t),
        ["each[1]"],
        "only the failed element runs again"
    );
    let again = shell.dispatches_of("each[1]");
    assert_eq!(again[1].idempotency_key, failed_key, "under the same key");
    assert_eq!(again[1].task.attempt, 2, "attempts count on");
    // Its retries count anew: a failure now is retried.
    shell.fail("each[1]", error("Down"));
    let t = shell.fire(TimerKind::Retry, "each");
    assert_eq!(dispatches(&t), ["each[1]"]);
    let t = shell.succeed("each[1]", json!("b"));
    assert_eq!(dispatches(&t), ["store"]);
    assert_eq!(
        shell.ex.steps[1].output.as_deref(),
        Some(&json!(["a", "b", "c"]))
    );
    shell.succeed("store", json!({}));
    assert_eq!(shell.ex.status, ExecutionStatus::Succeeded);
    // Each ending is told to the shell: the failure, then the success.
    let endings: Vec<ExecutionStatus> = shell
        .log
        .iter()
        .filter_map(|(_, c)| match c {
            Command::Finish { status, .. } => Some(*status),
            _ => None,
        })
        .collect();
    assert_eq!(
        endings,
        [ExecutionStatus::Failed, ExecutionStatus::Succeeded]
    );
    assert_eq!(
        shell.dispatches_of("fetch").len(),
        1,
        "fetch is not run again"
    );
    assert_eq!(shell.dispatches_of("each[0]").len(), 1);
}

#[test]
fn only_a_failed_execution_is_redriven() {
    let mut shell = order_saga();
    shell.start(json!({ "orderId": "o-1" }));
    shell.run(|d| match &*d.function {
        "process-payment" => Reply::Fail(fatal("CardDeclined")),
        _ => order_function(d),
    });
    assert_eq!(shell.ex.status, ExecutionStatus::Compensated);
    assert_ignored(
        &mut shell,
        Event::RedriveRequested { reason: None },
        Ignored::NotRedrivable {
            status: ExecutionStatus::Compensated,
        },
    );
}
