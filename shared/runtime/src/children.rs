//! What deploying a workflow that runs others as children checks first: each
//! workflow its `workflow:` steps name (and version, if pinned) is deployed,
//! so a missing one is refused before anything is stored rather than failing
//! a step at run time.

use baton_core::Workflow;

use crate::ports::{StoreError, StoreResult, WorkflowStore};

/// Refuses `workflow` ([`StoreError::Refused`], one problem per missing
/// child) unless every workflow it runs as a child is deployed. A workflow
/// that runs itself needs nothing more.
pub async fn check_children<S: WorkflowStore>(store: &S, workflow: &Workflow) -> StoreResult<()> {
    let mut problems = Vec::new();
    for (name, version) in workflow.children() {
        if name == &*workflow.name && version.is_none() {
            continue;
        }
        if store.get_workflow(name, version).await?.is_none() {
            let which = match version {
                Some(v) => format!("`{name}` version {v}"),
                None => format!("`{name}`"),
            };
            problems.push(format!("workflow {which} is not deployed: deploy it first"));
        }
    }
    if problems.is_empty() {
        return Ok(());
    }
    Err(StoreError::Refused {
        what: format!(
            "workflow `{}` runs workflows that do not exist",
            workflow.name
        ),
        problems,
    })
}
