//! Definitions at and beyond Baton's limits: large ones validate in
//! near-linear time, and bad ones get one problem naming the step, the
//! field and the limit, instead of exhausting the stack or the memory.

use std::time::Instant;

use baton_core::definition::Format;
use baton_core::expr::{Scope, StepLookup, StepView, Template};
use baton_core::limits::{MAX_EXPRESSION_DEPTH, MAX_JSON_DEPTH, MAX_STEPS};
use baton_core::{Problem, ValidationErrors, Workflow, WorkflowDefinition};
use serde_json::{Value, json};

/// A chain `s0 <- s1 <- ... <- s{n-1}`, each step reading the output of
/// the step `back` places before it (or its direct need when that is out of
/// range), as a JSON definition.
fn chain(n: usize, back: usize) -> Value {
    let mut steps = serde_json::Map::new();
    for i in 0..n {
        let mut step = json!({ "function": "noop", "mutates": false });
        if i > 0 {
            step["needs"] = json!([format!("s{}", i - 1)]);
            let read = i.checked_sub(back).unwrap_or(i - 1);
            step["input"] = json!({ "prev": format!("${{ steps.s{read}.output }}") });
        }
        steps.insert(format!("s{i}"), step);
    }
    json!({
        "name": "chain",
        "defaults": { "retry": { "max_attempts": 3 } },
        "steps": steps,
        "output": { "last": format!("${{ steps.s{}.output }}", n - 1) },
    })
}

fn validate(definition: &Value) -> Result<Workflow, ValidationErrors> {
    Workflow::from_text(&definition.to_string(), Format::Json)
}

fn only_problem(definition: &Value) -> Problem {
    let errors = validate(definition).expect_err("the definition is refused");
    assert_eq!(errors.problems.len(), 1, "{errors}");
    errors.problems[0].clone()
}

fn one_step(step: Value) -> Value {
    json!({
        "name": "limits",
        "defaults": { "retry": { "max_attempts": 3 } },
        "steps": { "a": step },
    })
}

#[test]
#[allow(
    clippy::disallowed_methods,
    reason = "times the test, printed for a reader; nothing depends on it"
)]
fn a_chain_of_the_most_steps_allowed_validates() {
    let definition = chain(MAX_STEPS, 1);
    let started = Instant::now();
    let workflow = validate(&definition).expect("a 10,000-step chain is valid");
    println!(
        "validated a {MAX_STEPS}-step chain in {:?}",
        started.elapsed()
    );
    assert_eq!(workflow.steps.len(), MAX_STEPS);
    assert_eq!(workflow.steps[MAX_STEPS - 1].needs, [MAX_STEPS - 2]);
    assert_eq!(workflow.steps[0].dependents, [1]);
}

#[test]
fn reads_of_distant_ancestors_along_a_long_chain() {
    // Every step reads a step three back: none of those is a direct need,
    // so they are decided by the passes over the whole chain.
    let workflow = validate(&chain(2_000, 3)).expect("reads of ancestors are allowed");
    assert_eq!(workflow.steps.len(), 2_000);
    // Every step reads the first: allowed, however far back it is.
    let mut definition = chain(2_000, 1);
    for i in 2..2_000 {
        definition["steps"][format!("s{i}")]["input"] = json!({ "first": "${ steps.s0.output }" });
    }
    validate(&definition).expect("the first step is every step's ancestor");
}

#[test]
fn a_read_of_a_step_not_needed_is_found_among_many() {
    // Two chains of 300 steps; the end of one reads the middle of the other.
    let mut definition = chain(300, 2);
    let mut other = chain(300, 2);
    for (name, step) in other["steps"].as_object_mut().unwrap().iter_mut() {
        if let Some(needs) = step.get_mut("needs") {
            *needs = json!([needs[0].as_str().unwrap().replace('s', "t")]);
        }
        if let Some(input) = step.get_mut("input") {
            let text = input["prev"]
                .as_str()
                .unwrap()
                .replace("steps.s", "steps.t");
            *input = json!({ "prev": text });
        }
        definition["steps"][name.replace('s', "t")] = step.clone();
    }
    definition["steps"]["s299"]["input"] = json!({ "other": "${ steps.t150.output }" });
    let problem = only_problem(&definition);
    assert_eq!(problem.step.as_deref(), Some("s299"));
    assert_eq!(problem.field.as_deref(), Some("input"));
    assert!(
        problem
            .message
            .contains("reads step `t150`, which is not among this step's `needs`"),
        "{problem}"
    );
}

#[test]
fn a_cycle_through_a_long_chain_is_reported_shortened() {
    let mut definition = chain(MAX_STEPS, 1);
    definition["steps"]["s0"]["needs"] = json!([format!("s{}", MAX_STEPS - 1)]);
    let problem = only_problem(&definition);
    assert_eq!(problem.field.as_deref(), Some("needs"));
    assert!(
        problem
            .message
            .starts_with("dependency cycle: s0 -> s1 -> s2"),
        "{problem}"
    );
    assert!(
        problem.message.ends_with("-> s9999 -> s0"),
        "{}",
        problem.message
    );
    assert!(problem.message.contains("(9977 more)"), "{problem}");
}

#[test]
fn many_cycles_are_counted_not_all_listed() {
    let mut steps = serde_json::Map::new();
    for i in 0..100 {
        let pair = [format!("a{i}"), format!("b{i}")];
        steps.insert(pair[0].clone(), json!({ "wait": "1s", "needs": [pair[1]] }));
        steps.insert(pair[1].clone(), json!({ "wait": "1s", "needs": [pair[0]] }));
    }
    let errors = validate(&json!({ "name": "cycles", "steps": steps })).expect_err("cycles");
    assert_eq!(errors.problems.len(), 21, "{errors}");
    assert_eq!(
        errors.problems[20].message,
        "80 more dependency cycles not shown"
    );
}

#[test]
fn too_many_steps_is_one_problem() {
    let problem = only_problem(&chain(MAX_STEPS + 1, 1));
    assert_eq!(problem.field.as_deref(), Some("steps"));
    assert_eq!(
        problem.message,
        "the workflow has 10001 steps, more than the limit of 10000"
    );
}

#[test]
fn a_deeply_nested_expression_is_a_problem_not_a_crash() {
    let depth = 10_000;
    let text = format!("${{ {}true{} }}", "(".repeat(depth), ")".repeat(depth));
    let problem = only_problem(&one_step(json!({
        "function": "f", "mutates": false, "if": text,
    })));
    assert_eq!(problem.step.as_deref(), Some("a"));
    assert_eq!(problem.field.as_deref(), Some("if"));
    assert!(
        problem.message.contains(&format!(
            "nests deeper than the limit of {MAX_EXPRESSION_DEPTH} levels"
        )),
        "{problem}"
    );
    assert!(problem.message.len() < 300, "{problem}");

    let long = format!("${{ 'a'{} }}", " + 'a'".repeat(1_000));
    let problem = only_problem(&one_step(json!({
        "function": "f", "mutates": false, "if": long,
    })));
    assert!(
        problem
            .message
            .contains("bytes long, more than the limit of 4096"),
        "{problem}"
    );

    for text in [
        format!("{}1{}", "(".repeat(200), ")".repeat(200)),
        format!("{}1{}", "[".repeat(100), "]".repeat(100)),
        format!("{}1{}", "{'a': ".repeat(100), "}".repeat(100)),
        format!("{}true", "!".repeat(100)),
        format!("{}1{}", "int(".repeat(100), ")".repeat(100)),
    ] {
        let problem = only_problem(&one_step(json!({
            "function": "f", "mutates": false, "input": { "x": format!("${{ {text} }}") },
        })));
        assert_eq!(problem.field.as_deref(), Some("input"));
        assert!(
            problem.message.contains(&format!(
                "nests deeper than the limit of {MAX_EXPRESSION_DEPTH} levels"
            )),
            "{problem}"
        );
    }
}

#[test]
fn long_operator_chains_are_measured_after_parsing() {
    // No brackets at all, yet 1,000 levels deep once parsed.
    let text = format!("${{ 1{} }}", " + 1".repeat(1_000));
    let problem = only_problem(&one_step(json!({
        "function": "f", "mutates": false, "for_each": text,
    })));
    assert_eq!(problem.field.as_deref(), Some("for_each"));
    assert!(
        problem.message.contains("nests deeper than the limit"),
        "{problem}"
    );
    // A flat list of conditions is not deep.
    let text = format!("${{ true{} }}", " && input.ok".repeat(200));
    validate(&one_step(
        json!({ "function": "f", "mutates": false, "if": text }),
    ))
    .expect("a long && chain is balanced, not deep");
}

#[test]
fn expressions_deeper_than_the_limit_are_refused_at_the_limit() {
    // MAX_EXPRESSION_DEPTH levels once parsed: `[[...[1]...]]` is one list per level.
    let ok = format!(
        "${{ {}1{} }}",
        "[".repeat(MAX_EXPRESSION_DEPTH - 1),
        "]".repeat(MAX_EXPRESSION_DEPTH - 1)
    );
    validate(&one_step(
        json!({ "function": "f", "mutates": false, "input": ok }),
    ))
    .expect("at the limit");
    let over = format!(
        "${{ {}1{} }}",
        "[".repeat(MAX_EXPRESSION_DEPTH),
        "]".repeat(MAX_EXPRESSION_DEPTH)
    );
    only_problem(&one_step(
        json!({ "function": "f", "mutates": false, "input": over }),
    ));
}

fn nested_arrays(depth: usize, inner: Value) -> Value {
    let mut value = inner;
    for _ in 0..depth {
        value = Value::Array(vec![value]);
    }
    value
}

#[test]
fn templates_and_schedule_inputs_nested_too_deep_are_problems() {
    let mut definition = one_step(json!({
        "function": "f",
        "mutates": false,
        "input": nested_arrays(MAX_JSON_DEPTH + 1, json!("${ input }")),
    }));
    definition["schedules"] = json!({
        "nightly": { "cron": "0 0 * * *", "input": nested_arrays(MAX_JSON_DEPTH + 1, json!(1)) },
    });
    // Read from text, the whole definition is limited (see below); built
    // otherwise, its templates and inputs are checked on their own.
    let definition: WorkflowDefinition = serde_json::from_value(definition).expect("a definition");
    let errors = Workflow::from_definition(definition).expect_err("too deep");
    let found: Vec<(Option<&str>, Option<&str>, &str)> = errors
        .problems
        .iter()
        .map(|p| (p.step.as_deref(), p.field.as_deref(), p.message.as_str()))
        .collect();
    assert_eq!(
        found,
        [
            (
                Some("a"),
                Some("input"),
                "the template nests arrays and objects deeper than the limit of 64 levels"
            ),
            (
                None,
                Some("schedules.nightly.input"),
                "the input nests arrays and objects deeper than the limit of 64 levels"
            ),
        ]
    );
}

struct NoSteps;
impl StepLookup for NoSteps {
    fn view(&self, _: &str) -> Option<StepView<'_>> {
        None
    }
    fn names(&self) -> Vec<String> {
        Vec::new()
    }
}

#[test]
fn evaluation_refuses_values_too_deep_to_store() {
    let input = nested_arrays(MAX_JSON_DEPTH - 1, json!(1));
    let scope = Scope {
        input: &input,
        execution_id: "e",
        workflow: "w",
        steps: &NoSteps,
        item: None,
        index: None,
    };
    let fits = Template::compile(&json!(["${ input }"])).unwrap();
    assert!(fits.eval(&scope).is_ok());
    let wraps = Template::compile(&json!([["${ input }"], 1])).unwrap();
    let error = wraps.eval(&scope).unwrap_err();
    assert!(
        error.message.contains("deeper than the limit of 64 levels"),
        "{error}"
    );
    let builds = Template::compile(&json!("${ [[[input]]] }")).unwrap();
    let error = builds.eval(&scope).unwrap_err();
    assert!(error.text.contains("[[[input]]]"), "{error}");
}

#[test]
fn definitions_nested_too_deep_are_refused_naming_the_limit() {
    let message = "the definition nests arrays and objects deeper than the limit of 64 levels";
    let brackets = |depth: usize| format!("{}1{}", "[".repeat(depth), "]".repeat(depth));

    let json = format!(
        r#"{{"name": "deep", "steps": {{"a": {{"wait": "1s", "input": {}}}}}}}"#,
        brackets(100_000)
    );
    let errors = Workflow::from_text(&json, Format::Json).expect_err("too deep");
    assert_eq!(errors.problems[0].message, message);

    let mut blocks = String::from("name: deep\nsteps:\n  a:\n    wait: 1s\n    input:\n");
    for level in 0..70 {
        blocks.push_str(&format!("{}k{level}:\n", "  ".repeat(level + 3)));
    }
    let flow = format!(
        "name: deep\nsteps:\n  a:\n    wait: 1s\n    input: {}\n",
        brackets(100_000)
    );
    for yaml in [blocks, flow] {
        let errors = Workflow::from_text(&yaml, Format::Yaml).expect_err("too deep");
        assert_eq!(errors.problems.len(), 1, "{errors}");
        assert!(errors.problems[0].message.starts_with(message), "{errors}");
    }

    // At the limit: the document's own object, `steps`, the step and its
    // input are four levels, so the input may nest 60 more.
    let at_limit = format!(
        "name: deep\nsteps:\n  a:\n    function: f\n    mutates: false\n    retry: {{ max_attempts: 1 }}\n    input: {{ x: {} }}\n",
        brackets(59)
    );
    Workflow::from_text(&at_limit, Format::Yaml).expect("64 levels in all");
}
