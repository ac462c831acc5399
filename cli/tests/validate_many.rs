//! The README's tour validates `shared/core/tests/invalid/many-problems.yaml`:
//! every problem is reported at once, naming the step and field, and the exit
//! code is 2.

mod common;

use common::{Sandbox, path_arg, repo_file};

#[test]
fn validate_reports_every_problem_of_many_problems_yaml() {
    let sb = Sandbox::new();
    let file = path_arg(&repo_file("shared/core/tests/invalid/many-problems.yaml"));
    let out = sb.baton(&["validate", &file]);
    out.expect_code(2);
    assert!(out.stdout.is_empty(), "{}", out.stdout);
    assert!(
        out.stderr
            .contains("many-problems.yaml: 8 problems in workflow definition:"),
        "{}",
        out.stderr
    );
    for expected in [
        "line 8: step `charge`, `needs`: unknown step `reserve`",
        "step `charge`, `timeout`: `soon` is not a duration",
        "step `charge`, `compensate`: mutates outside state but has no compensation",
        "step `ship`, `retry.max_attempts`: must be between 1 and 100, not 500",
        "step `ship`, `input`: expression `input.orderId +` does not compile",
        "step `notify`, `needs`: a step cannot need itself",
        "step `notify`, `reason`: `compensate: none` needs a `reason`",
        "step `wait`: has function, wait — a step does exactly one of these",
    ] {
        assert!(
            out.stderr.contains(expected),
            "`{expected}` is not reported:\n{}",
            out.stderr
        );
    }

    // The same problems, for machines.
    let out = sb.baton(&["validate", "--json", &file]);
    out.expect_code(2);
    let report = out.json();
    assert_eq!(report["valid"], false);
    assert_eq!(
        report["problems"].as_array().unwrap().len(),
        8,
        "{report:#}"
    );
}

/// Misspelt fields are all reported at once with what they likely mean, and a
/// valid definition that uses another tool's template syntax is warned about.
#[test]
fn validate_reports_every_misspelt_field_and_warns_of_foreign_templates() {
    let sb = Sandbox::new();
    let typos = sb.path().join("typos.yaml");
    std::fs::write(
        &typos,
        "name: typos\nsteps:\n  a:\n    functoin: f\n    mutates: false\n    retyr: { max_attempts: 2 }\n",
    )
    .unwrap();
    let out = sb.baton(&["validate", &path_arg(&typos)]);
    out.expect_code(2);
    for expected in [
        "2 unknown fields",
        "steps.a: unknown field `functoin` (did you mean `function`?) (line 4)",
        "steps.a: unknown field `retyr` (did you mean `retry`?) (line 6)",
    ] {
        assert!(out.stderr.contains(expected), "{expected}:\n{}", out.stderr);
    }

    let foreign = sb.path().join("foreign.yaml");
    std::fs::write(
        &foreign,
        "name: foreign\ndefaults: { retry: { max_attempts: 1 } }\nsteps:\n  a: { function: f, mutates: false, input: { id: \"{{ input.id }}\" } }\n",
    )
    .unwrap();
    let out = sb.baton(&["validate", &path_arg(&foreign)]);
    out.expect_code(0);
    assert!(
        out.stderr.contains(
            "warning: steps.a.input.id: `{{ input.id }}` is passed on as literal text: `{{ }}` is not Baton's syntax; an expression is written `${ input.id }`"
        ),
        "{}",
        out.stderr
    );
    let out = sb.baton(&["validate", "--json", &path_arg(&foreign)]);
    out.expect_code(0);
    assert_eq!(out.json()["warnings"].as_array().map(Vec::len), Some(1));
}
