//! The README's command blocks, run as a reader would run them, so the README
//! cannot rot: every fenced `sh` block is run in order in one shell (in a
//! scratch directory where `workflows/` and `shared/` are the repository's),
//! with `cargo run -p baton-cli --` and `cargo build` standing for the built
//! binary, and each command's exit code checked against what the README says.
//! Blocks that need an AWS account or a server are skipped by the lists
//! below, each with its reason; a block that is neither run nor listed fails.

mod common;

use std::path::Path;
use std::process::Command;

use common::{BATON, repo_file};

/// Blocks not run, by a part of their first command, and why.
const SKIPPED_BLOCKS: [(&str, &str); 3] = [
    (
        "infra/sam-build.sh && .venv-sam/bin/sam deploy",
        "deploys stacks to an AWS account (cli/tests/own_workflow.rs runs this path on MiniStack)",
    ),
    (
        "infra/install-tools.sh",
        "installs the Lambda build tools and deploys to an AWS account",
    ),
    (
        "curl localhost:3000/openapi.json",
        "needs `baton dev` or `baton ui` serving; the API's tests check the document",
    ),
];

/// Commands not run inside blocks that are, and why.
const SKIPPED_COMMANDS: [(&str, &str); 2] = [
    (
        "tests/run-all.sh",
        "runs every check and test, this one included",
    ),
    (
        "baton ui",
        "serves until stopped; cli/tests/ui_browser.rs drives the console",
    ),
];

/// Exit codes the README promises other than 0, by a part of the command
/// (the first that matches counts).
const EXIT_CODES: [(&str, i32); 4] = [
    (r#"{"refund-payment":"permanent"}"#, 5), // compensation_failed
    ("many-problems.yaml", 2),                // invalid definition
    (r#""process-payment":"always""#, 4),     // compensated
    (r#""ship-order":"permanent""#, 4),       // compensated
];

/// The fenced `sh` blocks of the README, in order.
fn sh_blocks(readme: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in readme.lines() {
        match (&mut current, line.trim_end()) {
            (None, "```sh") => current = Some(String::new()),
            (Some(_), "```") => blocks.push(current.take().unwrap()),
            (Some(block), _) => {
                block.push_str(line);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    blocks
}

/// A block's commands: comment lines dropped, lines joined across a
/// trailing `\` or an open quote.
fn commands(block: &str) -> Vec<String> {
    let mut commands = Vec::new();
    let mut current = String::new();
    let (mut single, mut double) = (false, false);
    for line in block.lines() {
        if current.is_empty() && (line.trim().is_empty() || line.trim_start().starts_with('#')) {
            continue;
        }
        let mut escaped = false;
        let mut previous = ' ';
        for c in line.chars() {
            match c {
                _ if escaped => escaped = false,
                '\\' if !single => escaped = true,
                '\'' if !double => single = !single,
                '"' if !single => double = !double,
                // A comment: its apostrophes quote nothing.
                '#' if !single && !double && previous.is_whitespace() => break,
                _ => {}
            }
            previous = c;
        }
        current.push_str(line);
        if single || double || line.trim_end().ends_with('\\') {
            current.push('\n');
            continue;
        }
        commands.push(std::mem::take(&mut current));
    }
    assert!(current.is_empty(), "unfinished command in:\n{block}");
    commands
}

fn expected_code(command: &str) -> i32 {
    EXIT_CODES
        .iter()
        .find(|(part, _)| command.contains(part))
        .map_or(0, |(_, code)| *code)
}

#[test]
fn every_readme_command_block_runs_as_written() {
    let readme = std::fs::read_to_string(repo_file("README.md")).unwrap();
    let dir = tempfile::Builder::new()
        .prefix("baton-readme-")
        .tempdir()
        .unwrap();
    for shared in ["workflows", "shared"] {
        std::os::unix::fs::symlink(
            repo_file(shared).canonicalize().unwrap(),
            dir.path().join(shared),
        )
        .unwrap();
    }
    let bin_dir = Path::new(BATON).parent().unwrap().display().to_string();
    // `<id>` in the tour is the dead letter just listed.
    let dead_letter_id = r#""$(baton dlq list --json | head -1 | python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])')""#;

    let mut run: Vec<(String, i32)> = Vec::new();
    let mut skipped_blocks = Vec::new();
    let mut skipped_commands = Vec::new();
    for block in sh_blocks(&readme) {
        let commands = commands(&block);
        let first = commands.first().cloned().unwrap_or_default();
        if let Some((part, _)) = SKIPPED_BLOCKS.iter().find(|(p, _)| first.contains(p)) {
            skipped_blocks.push(*part);
            continue;
        }
        for command in commands {
            if let Some((part, _)) = SKIPPED_COMMANDS.iter().find(|(p, _)| command.contains(p)) {
                skipped_commands.push(*part);
                continue;
            }
            let code = expected_code(&command);
            let command = command
                .replace("cargo run -p baton-cli --", BATON)
                .replace("cargo build -p baton-cli", "true")
                .replace("$PWD/target/debug", &bin_dir)
                .replace("<id>", dead_letter_id);
            run.push((command, code));
        }
    }
    for (part, why) in SKIPPED_BLOCKS {
        assert!(
            skipped_blocks.contains(&part),
            "no README block starts with `{part}` (skipped because it {why}): update the list"
        );
    }
    for (part, _) in SKIPPED_COMMANDS {
        assert!(
            skipped_commands.contains(&part),
            "no README command has `{part}`: update the list"
        );
    }
    assert!(
        run.iter().any(|(c, _)| c.contains("baton dlq redrive")),
        "the tour was not found"
    );

    // One shell, so the tour's `export`s carry from block to block; after
    // each command its exit code goes to fd 3.
    let mut script = String::from("set +e\n");
    for (command, _) in &run {
        script.push_str(command);
        script.push_str("\necho $? >&3\n");
    }
    let codes_file = dir.path().join("codes");
    let log = dir.path().join("log");
    let status = Command::new("bash")
        .arg("-c")
        .arg(format!("exec 3>'{}'\n{script}", codes_file.display()))
        .current_dir(dir.path())
        .env_remove("BATON_DB")
        .env_remove("BATON_AWS")
        .env_remove("BATON_FAIL")
        .env_remove("BATON_CONFIG")
        .env_remove("BATON_LOG")
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(dir.path().join("log.err")).unwrap())
        .status()
        .expect("bash runs");
    assert!(status.success(), "the script itself failed");
    let output = std::fs::read_to_string(&log).unwrap()
        + &std::fs::read_to_string(dir.path().join("log.err")).unwrap();
    let codes: Vec<i32> = std::fs::read_to_string(&codes_file)
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    assert_eq!(codes.len(), run.len(), "not every command ran:\n{output}");
    for ((command, expected), code) in run.iter().zip(&codes) {
        assert_eq!(
            code, expected,
            "README command exited {code}, the README says {expected}:\n{command}\n--- output\n{output}"
        );
    }
    // The tour's last claim: each side effect happened once per key.
    let ledger = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .rfind(|l| l.starts_with("[('"))
        .map(str::to_string)
        .unwrap_or_else(|| panic!("the ledger query printed nothing:\n{output}"));
    for effect in ledger.trim_matches(['[', ']']).split("), (") {
        assert!(
            effect.trim_end_matches(')').ends_with(", 1"),
            "an effect ran more than once: {effect} in {ledger}"
        );
    }
}
