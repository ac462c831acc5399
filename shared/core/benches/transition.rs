//! Throughput of `apply` over whole executions: a 10-step sequence and a
//! 10-way fan-out/fan-in, every dispatch answered with success at once.
//! Besides criterion's report, prints transitions (events applied) per second.

use std::collections::VecDeque;
use std::hint::black_box;
use std::time::{Duration, Instant};

use baton_core::Workflow;
use baton_core::definition::Format;
use baton_core::engine::{Command, Event, Execution, ExecutionStatus, Transition, apply};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde_json::{Value, json};

const HEADER: &str = "defaults: { retry: { max_attempts: 3, backoff: exponential, delay: 1s }, timeout: 30s }\nsteps:\n";

fn sequence() -> Workflow {
    let mut text = format!("name: sequence\n{HEADER}");
    for i in 0..10 {
        text.push_str(&format!("  s{i}: {{ function: f{i}, mutates: false"));
        if i > 0 {
            text.push_str(&format!(", needs: [s{}]", i - 1));
        }
        text.push_str(" }\n");
    }
    Workflow::from_text(&text, Format::Yaml).unwrap_or_else(|e| panic!("{e}"))
}

fn fan_out() -> Workflow {
    let mut text = format!("name: fan-out\n{HEADER}  root: {{ function: root, mutates: false }}\n");
    let branches: Vec<String> = (0..10).map(|i| format!("b{i}")).collect();
    for b in &branches {
        text.push_str(&format!(
            "  {b}: {{ function: {b}, mutates: false, needs: [root] }}\n"
        ));
    }
    text.push_str(&format!(
        "  join: {{ function: join, mutates: false, needs: [{}] }}\n",
        branches.join(", ")
    ));
    Workflow::from_text(&text, Format::Yaml).unwrap_or_else(|e| panic!("{e}"))
}

fn queue_dispatches(t: &Transition, queue: &mut VecDeque<baton_core::TaskRef>) {
    for c in &t.commands {
        if let Command::Dispatch(d) = c {
            queue.push_back(d.task.clone());
        }
    }
}

/// Runs one execution to the end; returns how many events were applied.
fn run(wf: &Workflow) -> u64 {
    let mut ex = Execution::new(wf, "ex-bench");
    let mut now = 1_700_000_000_000;
    let mut queue = VecDeque::new();
    let t = apply(
        wf,
        &mut ex,
        Event::Started {
            input: json!({}),
            timeout_ms: None,
            parent: None,
        },
        now,
    );
    queue_dispatches(&t, &mut queue);
    let mut events = 1;
    while let Some(task) = queue.pop_front() {
        now += 1;
        let t = apply(
            wf,
            &mut ex,
            Event::TaskSucceeded {
                task,
                output: Value::Null,
            },
            now,
        );
        events += 1;
        queue_dispatches(&t, &mut queue);
    }
    assert_eq!(ex.status, ExecutionStatus::Succeeded);
    black_box(&ex);
    events
}

// The benchmark, not the engine, reads the clock.
#[allow(clippy::disallowed_methods)]
fn transitions_per_second(wf: &Workflow) -> f64 {
    let start = Instant::now();
    let mut events = 0;
    while start.elapsed() < Duration::from_secs(1) {
        events += run(wf);
    }
    events as f64 / start.elapsed().as_secs_f64()
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("apply");
    for (name, wf) in [("sequence-10", sequence()), ("fan-out-10", fan_out())] {
        let events = run(&wf);
        group.throughput(Throughput::Elements(events));
        group.bench_function(name, |b| b.iter(|| run(black_box(&wf))));
        println!(
            "{name}: {events} events per run, {:.0} transitions/s",
            transitions_per_second(&wf)
        );
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
