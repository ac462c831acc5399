//! The workflows every benchmark runs, as YAML, so the same shapes run on the
//! embedded backend, on moto server and (rewritten by hand) on the peers.

use baton_core::WorkflowDefinition;
use baton_core::definition::Format;

/// Steps of the sequential workload.
pub const SEQUENCE_STEPS: usize = 10;
/// Branches of the fan-out workload; it has a root and a join besides.
pub const FAN_OUT_BRANCHES: usize = 10;
/// Steps of one fan-out execution: root, branches, join.
pub const FAN_OUT_STEPS: usize = FAN_OUT_BRANCHES + 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    Sequence,
    FanOut,
}

impl Shape {
    pub fn name(self) -> &'static str {
        match self {
            Shape::Sequence => "sequence-10",
            Shape::FanOut => "fan-out-10",
        }
    }

    pub fn steps(self) -> usize {
        match self {
            Shape::Sequence => SEQUENCE_STEPS,
            Shape::FanOut => FAN_OUT_STEPS,
        }
    }

    /// The workflow, each step calling `function` with a per-attempt `timeout`.
    pub fn yaml(self, function: &str, timeout: &str) -> String {
        let mut text = format!(
            "name: {}\ndefaults: {{ retry: {{ max_attempts: 3, backoff: exponential, delay: 1s }}, timeout: {timeout} }}\nsteps:\n",
            self.name()
        );
        match self {
            Shape::Sequence => {
                for i in 0..SEQUENCE_STEPS {
                    text.push_str(&format!("  s{i}: {{ function: {function}, mutates: false"));
                    if i > 0 {
                        text.push_str(&format!(", needs: [s{}]", i - 1));
                    }
                    text.push_str(" }\n");
                }
            }
            Shape::FanOut => {
                text.push_str(&format!(
                    "  root: {{ function: {function}, mutates: false }}\n"
                ));
                let branches: Vec<String> =
                    (0..FAN_OUT_BRANCHES).map(|i| format!("b{i}")).collect();
                for b in &branches {
                    text.push_str(&format!(
                        "  {b}: {{ function: {function}, mutates: false, needs: [root] }}\n"
                    ));
                }
                text.push_str(&format!(
                    "  join: {{ function: {function}, mutates: false, needs: [{}] }}\n",
                    branches.join(", ")
                ));
            }
        }
        text
    }

    pub fn definition(self, function: &str, timeout: &str) -> WorkflowDefinition {
        parse(&self.yaml(function, timeout))
    }

    /// A step's position: `s3` is 3; `root` 0, `b4` 5, `join` 11.
    pub fn step_index(self, step: &str) -> Option<usize> {
        match (self, step) {
            (Shape::Sequence, s) => s.strip_prefix('s')?.parse().ok(),
            (Shape::FanOut, "root") => Some(0),
            (Shape::FanOut, "join") => Some(FAN_OUT_STEPS - 1),
            (Shape::FanOut, b) => b.strip_prefix('b')?.parse::<usize>().ok().map(|i| i + 1),
        }
    }
}

/// One step that waits an hour, then a no-op: executions that sit on a timer.
pub fn waiting(function: &str) -> WorkflowDefinition {
    parse(&format!(
        "name: wait-1h\ndefaults: {{ retry: {{ max_attempts: 3 }} }}\nsteps:\n  nap: {{ wait: 1h }}\n  after: {{ function: {function}, mutates: false, needs: [nap] }}\n"
    ))
}

fn parse(text: &str) -> WorkflowDefinition {
    let definition = WorkflowDefinition::parse(text, Format::Yaml)
        .unwrap_or_else(|e| panic!("benchmark workflow does not parse: {e}\n{text}"));
    baton_core::Workflow::from_definition(definition.clone())
        .unwrap_or_else(|e| panic!("benchmark workflow does not validate: {e}\n{text}"));
    definition
}
