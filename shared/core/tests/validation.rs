//! Validation: each file under `tests/invalid/` must be rejected with exactly
//! the listed problems, all reported at once; the example workflows must pass.

use baton_core::definition::Format;
use baton_core::{Problem, ValidationErrors, Workflow};

fn read(path: &str) -> String {
    let full = format!("{}/{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{full}: {e}"))
}

fn problems(file: &str) -> ValidationErrors {
    match Workflow::from_text(&read(&format!("tests/invalid/{file}")), Format::Yaml) {
        Ok(_) => panic!("{file} should not validate"),
        Err(errors) => errors,
    }
}

/// (step, field, a part of the message)
type Expected<'a> = (Option<&'a str>, Option<&'a str>, &'a str);

/// Every expected problem is reported, and nothing else.
fn assert_problems(file: &str, expected: &[Expected<'_>]) {
    let errors = problems(file);
    let mut left: Vec<&Problem> = errors.problems.iter().collect();
    for (step, field, message) in expected {
        let found = left.iter().position(|p| {
            p.step.as_deref() == *step
                && p.field.as_deref() == *field
                && p.message.contains(message)
        });
        match found {
            Some(i) => {
                left.remove(i);
            }
            None => panic!("{file}: no problem {step:?} {field:?} `{message}` in:\n{errors}"),
        }
    }
    assert!(left.is_empty(), "{file}: unexpected problems {left:#?}");
}

#[test]
fn unknown_needs() {
    assert_problems(
        "unknown-needs.yaml",
        &[
            (
                Some("ship"),
                Some("needs"),
                "unknown step `charg` (did you mean `charge`?)",
            ),
            (Some("notify"), Some("needs"), "unknown step `audit`"),
        ],
    );
}

#[test]
fn cycles_show_their_path() {
    // Reads along the cycle are not reported as well: the cycle is the problem.
    assert_problems(
        "cycle.yaml",
        &[(None, Some("needs"), "dependency cycle: a -> b -> c -> a")],
    );
}

#[test]
fn duplicate_step_names() {
    assert_problems(
        "duplicate-steps.yaml",
        &[
            (Some("fetch"), None, "duplicate step name"),
            (
                Some("store"),
                Some("compensate"),
                "mutates outside state but has no compensation",
            ),
        ],
    );
}

#[test]
fn bad_durations() {
    let not = "is not a duration (use forms like 200ms, 30s, 5m, 24h)";
    assert_problems(
        "bad-durations.yaml",
        &[
            (None, Some("defaults.timeout"), &format!("`a while` {not}")),
            (Some("call"), Some("timeout"), &format!("`soon` {not}")),
            (
                Some("call"),
                Some("retry.delay"),
                &format!("`1 parsec` {not}"),
            ),
            (Some("pause"), Some("wait"), &format!("`forever` {not}")),
            (
                Some("approve"),
                Some("wait_for.timeout"),
                &format!("`eventually` {not}"),
            ),
            (
                Some("undo_me"),
                Some("compensate.timeout"),
                &format!("`never` {not}"),
            ),
            // Once, though the compensation falls back to it as well.
            (
                Some("undo_me"),
                Some("timeout"),
                &format!("`5 minutes from now` {not}"),
            ),
        ],
    );
}

#[test]
fn expressions_that_do_not_compile() {
    assert_problems(
        "bad-expressions.yaml",
        &[
            (
                Some("a"),
                Some("if"),
                "expression `input.flag &&` does not compile",
            ),
            (
                Some("b"),
                Some("input"),
                "expression `steps.a.output.` does not compile",
            ),
            (Some("b"), Some("input"), "unclosed `${` in `${ input.y`"),
            (
                Some("c"),
                Some("for_each"),
                "expression `[1, 2` does not compile",
            ),
            (Some("d"), Some("input"), "exists only in a `for_each` step"),
            (
                Some("e"),
                Some("if"),
                "`index > 0` uses `index`, which exists only in a `for_each` step (in its `input`",
            ),
            (
                None,
                Some("output"),
                "expression `steps.b.output +` does not compile",
            ),
        ],
    );
}

#[test]
fn expressions_reading_unknown_steps_or_steps_not_needed() {
    let not_needed = "which is not among this step's `needs`";
    assert_problems(
        "expression-refs.yaml",
        &[
            (
                Some("c"),
                Some("input"),
                &format!("`steps.b.output` reads step `b`, {not_needed}"),
            ),
            (
                Some("d"),
                Some("input"),
                "`steps.ghost.output` refers to unknown step `ghost`",
            ),
            (
                Some("e"),
                Some("input"),
                &format!("`steps.later.output` reads step `later`, {not_needed}"),
            ),
        ],
    );
}

#[test]
fn retries_need_a_limit_within_the_cap() {
    let unlimited = "no attempt limit: set `retry.max_attempts` on the step or in `defaults.retry`";
    assert_problems(
        "retry-limits.yaml",
        &[
            (Some("unlimited"), Some("retry.max_attempts"), unlimited),
            (
                Some("also_unlimited"),
                Some("retry.max_attempts"),
                unlimited,
            ),
            (
                Some("too_many"),
                Some("retry.max_attempts"),
                "must be between 1 and 100, not 101",
            ),
            (
                Some("zero"),
                Some("retry.max_attempts"),
                "must be between 1 and 100, not 0",
            ),
            (
                Some("undo_forever"),
                Some("compensate.retry.max_attempts"),
                "must be between 1 and 100, not 500",
            ),
        ],
    );
}

#[test]
fn compensation_rules() {
    assert_problems(
        "compensation.yaml",
        &[
            (
                Some("charge"),
                Some("compensate"),
                "mutates outside state but has no compensation",
            ),
            (
                Some("lookup"),
                Some("compensate"),
                "says `mutates: false`, so it has nothing to compensate",
            ),
            (
                Some("email"),
                Some("reason"),
                "`compensate: none` needs a `reason`",
            ),
            (
                Some("log"),
                Some("reason"),
                "only explains `compensate: none`",
            ),
        ],
    );
}

#[test]
fn a_step_does_exactly_one_thing() {
    let waits_only = "only a step with a `function` or `workflow` takes this";
    assert_problems(
        "function-and-wait.yaml",
        &[
            (
                Some("both"),
                None,
                "has function, wait — a step does exactly one of these",
            ),
            (Some("nothing"), None, "says nothing to do"),
            (Some("pause"), Some("retry"), waits_only),
            (Some("pause"), Some("input"), waits_only),
        ],
    );
}

#[test]
fn problems_carry_the_line_of_their_step() {
    let errors = problems("compensation.yaml");
    let charge = errors
        .problems
        .iter()
        .find(|p| p.step.as_deref() == Some("charge"))
        .expect("a problem with `charge`");
    assert_eq!(charge.line, Some(5));
    let text = errors.to_string();
    assert!(
        text.starts_with("4 problems in workflow definition:\n"),
        "{text}"
    );
    assert!(
        text.contains("  - line 5: step `charge`, `compensate`: mutates outside state"),
        "{text}"
    );
}

#[test]
fn every_invalid_file_is_covered_by_a_test() {
    let dir = format!("{}/tests/invalid", env!("CARGO_MANIFEST_DIR"));
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .expect("tests/invalid")
        .map(|e| {
            e.expect("an entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    files.sort();
    let this = read("tests/validation.rs");
    for file in files {
        assert!(
            this.contains(&format!("\"{file}\"")),
            "{file} is not checked here"
        );
        assert!(!problems(&file).problems.is_empty());
    }
}

#[test]
fn the_example_workflows_are_valid() {
    for path in [
        "../../workflows/order-saga.yaml",
        "../../workflows/fan-out.yaml",
    ] {
        let text = read(path);
        let workflow = Workflow::from_text(&text, Format::Yaml)
            .unwrap_or_else(|e| panic!("{path} is invalid:\n{e}"));
        assert!(!workflow.steps.is_empty());
    }
}

#[test]
fn the_fan_out_example_fans_out_and_in() {
    let workflow = Workflow::from_text(&read("../../workflows/fan-out.yaml"), Format::Yaml)
        .unwrap_or_else(|e| panic!("{e}"));
    let roots: Vec<_> = workflow
        .steps
        .iter()
        .filter(|s| s.needs.is_empty())
        .collect();
    assert_eq!(roots.len(), 1);
    assert_eq!(
        roots[0].dependents.len(),
        3,
        "three branches after the root"
    );
    let joins: Vec<_> = workflow
        .steps
        .iter()
        .filter(|s| s.needs.len() == 3)
        .collect();
    assert_eq!(joins.len(), 1, "one step waits for all three branches");
    let readers = workflow
        .steps
        .iter()
        .filter(|s| s.call().is_some_and(|c| !c.mutates))
        .count();
    assert!(readers >= 3, "steps that only read say `mutates: false`");
}

#[test]
fn a_yaml_syntax_error_reports_its_line() {
    let text = "name: broken\nsteps:\n  a:\n    function: f\n   retry: 3\n";
    let errors = Workflow::from_text(text, Format::Yaml).expect_err("bad indentation");
    assert_eq!(errors.problems.len(), 1);
    let message = &errors.problems[0].message;
    assert!(message.starts_with("invalid YAML"), "{message}");
    assert!(message.contains("line 5"), "{message}");
}

#[test]
fn a_json_syntax_error_reports_its_line_and_column() {
    let text =
        "{\n  \"name\": \"broken\",\n  \"steps\": {\n    \"a\": { \"function\": \"f\", }\n  }\n}\n";
    let errors = Workflow::from_text(text, Format::Json).expect_err("trailing comma");
    let message = &errors.problems[0].message;
    assert!(
        message.starts_with("invalid JSON at line 4, column"),
        "{message}"
    );
}

#[test]
fn other_repeated_keys_stay_syntax_errors() {
    // Only step names are let through to validation; a repeated field or
    // input key would otherwise silently lose one of its values.
    for (text, key) in [
        (
            "name: x\nsteps:\n  a:\n    function: f\n    function: g\n    mutates: false\n    retry: { max_attempts: 1 }\n",
            "function",
        ),
        (
            "name: x\nsteps:\n  a:\n    function: f\n    mutates: false\n    input: { k: 1, k: 2 }\n    retry: { max_attempts: 1 }\n",
            "k",
        ),
    ] {
        let errors = Workflow::from_text(text, Format::Yaml).expect_err("a repeated key");
        let message = &errors.problems[0].message;
        assert!(
            message.contains(&format!("duplicate mapping key: {key}")),
            "{message}"
        );
    }
}

#[test]
fn unknown_fields_are_rejected_with_their_line() {
    let text = "name: x\nsteps:\n  a:\n    function: f\n    mutates: false\n    retires: 3\n";
    let errors = Workflow::from_text(text, Format::Yaml).expect_err("a typo");
    let message = &errors.problems[0].message;
    assert!(message.contains("unknown field `retires`"), "{message}");
    assert!(message.contains("line 6"), "{message}");
}

#[test]
fn every_unknown_field_is_reported_at_once_with_a_suggestion_and_its_line() {
    let text = "name: x\ndesciption: typo\nsteps:\n  a:\n    function: f\n    mutates: false\n    retires: 3\n  b:\n    functoin: g\n    mutates: false\n";
    let errors = Workflow::from_text(text, Format::Yaml).expect_err("typos");
    let message = &errors.problems[0].message;
    assert!(message.contains("3 unknown fields"), "{message}");
    for expected in [
        "unknown field `desciption` (did you mean `description`?) (line 2)",
        "steps.a: unknown field `retires` (did you mean `retry`?) (line 7)",
        "steps.b: unknown field `functoin` (did you mean `function`?) (line 9)",
    ] {
        assert!(message.contains(expected), "{expected} in {message}");
    }
    assert!(!message.contains("invalid YAML"), "{message}");
}

#[test]
fn expressions_naming_what_does_not_exist_are_refused_before_running() {
    let text = r#"
name: x
defaults: { retry: { max_attempts: 1 } }
steps:
  a: { function: f, mutates: false, input: "${ inputs.orderId }" }
  b: { function: f, mutates: false, needs: [a], input: "${ steps.a.outputs.total }" }
  c: { function: f, mutates: false, needs: [a], if: "${ step.a.output.ok }" }
  d: { function: f, mutates: false, needs: [a], input: "${ input.items.map(x, x.id) }" }
output: "${ steps.a.status == 'succeeded' && steps.a.output.ok }"
"#;
    let errors = Workflow::from_text(text, Format::Yaml).expect_err("misspelt names");
    let all = errors.to_string();
    assert!(
        all.contains("names `inputs`, which is not defined (did you mean `input`?)"),
        "{all}"
    );
    assert!(
        all.contains("reads `steps.a.outputs`, but a step has only `output` and `status` (did you mean `output`?)"),
        "{all}"
    );
    assert!(
        all.contains("names `step`, which is not defined (did you mean `steps`?)"),
        "{all}"
    );
    // A comprehension's own variable is not a root name; the output is fine.
    assert_eq!(errors.problems.len(), 3, "{all}");
}

#[test]
fn many_problems_reports_each_at_once() {
    assert_problems(
        "many-problems.yaml",
        &[
            (Some("charge"), Some("needs"), "unknown step `reserve`"),
            (Some("charge"), Some("timeout"), "`soon` is not a duration"),
            (Some("charge"), Some("compensate"), "has no compensation"),
            (
                Some("ship"),
                Some("retry.max_attempts"),
                "between 1 and 100",
            ),
            (Some("ship"), Some("input"), "does not compile"),
            (Some("notify"), Some("needs"), "cannot need itself"),
            (Some("notify"), Some("reason"), "needs a `reason`"),
            (Some("wait"), None, "exactly one of these"),
        ],
    );
}

/// Every whole workflow the README shows (a `yaml` block starting with
/// `name:`) validates, and so does each step it shows on its own, set in a
/// workflow of its own.
#[test]
fn the_readmes_workflows_and_steps_validate() {
    let readme = read("../../README.md");
    let mut checked = 0;
    let mut lines = readme.lines();
    while let Some(line) = lines.next() {
        let indent = line.len() - line.trim_start().len();
        if line.trim() != "```yaml" {
            continue;
        }
        let block: Vec<&str> = lines
            .by_ref()
            .take_while(|l| l.trim() != "```")
            .map(|l| l.get(indent..).unwrap_or(""))
            .collect();
        let text = block.join("\n");
        let first = block.first().copied().unwrap_or_default();
        let definition = if first.starts_with("name:") {
            text
        } else if first.ends_with(':') && !first.starts_with(['s', 't']) {
            // A single step (`schedules:` and `triggers:` blocks are parts of a workflow).
            let indented: Vec<String> = block.iter().map(|l| format!("  {l}")).collect();
            format!("name: readme\nsteps:\n{}\n", indented.join("\n"))
        } else {
            continue;
        };
        Workflow::from_text(&definition, Format::Yaml)
            .unwrap_or_else(|e| panic!("a README workflow does not validate: {e}\n{definition}"));
        checked += 1;
    }
    assert!(checked >= 3, "found {checked} README workflows");
}
