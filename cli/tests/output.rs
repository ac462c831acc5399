//! Where the command's output goes: stdout holds only what the command
//! prints, logs go to stderr without colour escapes when it is not a
//! terminal, and a reader that closes stdout early (`| head -1`) ends the
//! command quietly instead of with a panic.

mod common;

use std::process::Stdio;

use common::{Sandbox, path_arg, repo_file};

/// Runs `baton ARGS` with its stdout closed before it writes anything, as
/// `baton ARGS | head -c 0` would; returns its exit code and stderr.
fn with_stdout_closed(sb: &Sandbox, args: &[&str]) -> (Option<i32>, String) {
    let mut child = sb
        .command(args, &[])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the baton binary runs");
    // Closing the read end now makes the first write fail with EPIPE.
    drop(child.stdout.take());
    let output = child.wait_with_output().expect("baton ends");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn a_closed_stdout_ends_each_command_quietly() {
    let sb = Sandbox::new();
    let saga = path_arg(&repo_file("workflows/order-saga.yaml"));
    sb.baton(&[
        "run",
        &saga,
        "--id",
        "o-1",
        "--input",
        r#"{"orderId":"o-1"}"#,
    ])
    .expect_code(0);
    for args in [
        vec!["status", "--json", "o-1"],
        vec!["status", "o-1"],
        vec!["list"],
        vec!["list", "--json"],
        vec!["history", "o-1"],
        vec!["history", "o-1", "--json", "--lifecycle"],
        vec!["graph", saga.as_str()],
        vec!["validate", saga.as_str()],
        vec!["dlq", "list"],
        vec!["run", saga.as_str(), "--id", "o-2"],
    ] {
        let (code, stderr) = with_stdout_closed(&sb, &args);
        assert_eq!(
            code,
            Some(141),
            "`baton {}` did not stop as a closed pipe stops a command\n{stderr}",
            args.join(" ")
        );
        assert!(
            stderr.is_empty(),
            "`baton {}` complained about its reader leaving:\n{stderr}",
            args.join(" ")
        );
    }
    // An open stdout still gets everything.
    let out = sb.baton(&["history", "o-1"]);
    out.expect_code(0);
    assert!(out.stdout.lines().count() > 3, "{}", out.stdout);
}

#[test]
fn logs_go_to_stderr_without_colour_when_it_is_a_pipe() {
    let sb = Sandbox::new();
    let saga = path_arg(&repo_file("workflows/order-saga.yaml"));
    // Every payment attempt fails, and each failed attempt is logged as a warning.
    let out = sb.baton_env(
        &[
            "run",
            &saga,
            "--json",
            "--input",
            r#"{"orderId":"o-2","fail":{"process-payment":"always"}}"#,
        ],
        &[("BATON_LOG", "warn")],
    );
    out.expect_code(4);
    assert!(
        out.stderr.contains("WARN") && out.stderr.contains("step attempt failed"),
        "the warnings were not logged to stderr:\n{}",
        out.stderr
    );
    assert!(
        !out.stderr.contains("\x1b["),
        "colour escapes in a log that is not a terminal:\n{:?}",
        out.stderr
    );
    // Stdout is the run's events and nothing else: each line is JSON.
    let lines = out.json_lines();
    assert!(
        lines.iter().any(|e| e["kind"] == "step.failed"),
        "{}",
        out.stdout
    );
    assert_eq!(lines.last().unwrap()["status"], "compensated");
    assert!(!out.stdout.contains("WARN"), "{}", out.stdout);
}
