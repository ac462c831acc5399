//! Renders a workflow's shape as Mermaid or Graphviz DOT text.

use crate::workflow::{Action, Workflow};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GraphFormat {
    Mermaid,
    Dot,
}

fn label(workflow: &Workflow, i: usize) -> String {
    let step = &workflow.steps[i];
    let what = match &step.action {
        Action::Call(call) => {
            let mut s = call.function.to_string();
            if call.for_each.is_some() {
                s.push_str(" (for each)");
            }
            if let Some(c) = &call.compensation {
                s.push_str(&format!(" / undo: {}", c.function));
            }
            s
        }
        Action::Wait { millis } => format!("wait {}", crate::duration::format_millis(*millis)),
        Action::WaitUntil(_) => "wait until".to_string(),
        Action::WaitFor { signal, .. } => format!("wait for signal {signal}"),
    };
    let condition = if step.condition.is_some() {
        " [if]"
    } else {
        ""
    };
    format!("{}{}: {}", step.name, condition, what)
}

pub fn render(workflow: &Workflow, format: GraphFormat) -> String {
    let mut out = String::new();
    match format {
        GraphFormat::Mermaid => {
            out.push_str("flowchart TD\n");
            for (i, step) in workflow.steps.iter().enumerate() {
                out.push_str(&format!(
                    "  {}[\"{}\"]\n",
                    step.name,
                    label(workflow, i).replace('"', "'")
                ));
            }
            for step in &workflow.steps {
                for &n in &step.needs {
                    out.push_str(&format!("  {} --> {}\n", workflow.steps[n].name, step.name));
                }
            }
        }
        GraphFormat::Dot => {
            out.push_str(&format!(
                "digraph \"{}\" {{\n  rankdir=TB;\n",
                workflow.name
            ));
            for (i, step) in workflow.steps.iter().enumerate() {
                out.push_str(&format!(
                    "  \"{}\" [label=\"{}\"];\n",
                    step.name,
                    label(workflow, i).replace('"', "'")
                ));
            }
            for step in &workflow.steps {
                for &n in &step.needs {
                    out.push_str(&format!(
                        "  \"{}\" -> \"{}\";\n",
                        workflow.steps[n].name, step.name
                    ));
                }
            }
            out.push_str("}\n");
        }
    }
    out
}
