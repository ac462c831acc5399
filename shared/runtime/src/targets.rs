//! Step targets: where each function runs, chosen per function name.
//!
//! A small TOML file (`baton.toml`) maps function names to targets:
//!
//! ```toml
//! [functions.process-payment]
//! command = ["python3", "scripts/pay.py"]     # JSON on stdin, JSON on stdout
//!
//! [functions.ship-order]
//! lambda = "ship-order"                        # the Lambda Invoke API
//! endpoint = "http://127.0.0.1:9001"           # e.g. `cargo lambda watch`
//!
//! [functions.validate-order]
//! handler = "validate-order"                   # an in-process handler
//! ```
//!
//! A function without an entry runs the in-process handler of the same name,
//! if one is registered.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use thiserror::Error;
use tokio::io::AsyncWriteExt;

use crate::step::{Registry, StepContext, StepError, StepHandler};

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetsConfig {
    #[serde(default)]
    pub functions: BTreeMap<String, FunctionConfig>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FunctionConfig {
    /// Name of an in-process handler.
    pub handler: Option<String>,
    /// Program and arguments of a local command.
    pub command: Option<Vec<String>>,
    /// Extra environment for the command.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Name (or ARN) of a Lambda function.
    pub lambda: Option<String>,
    /// Lambda Invoke API endpoint (default: the AWS SDK's, honouring `AWS_ENDPOINT_URL`).
    pub endpoint: Option<String>,
}

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {message}")]
    Read { path: String, message: String },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

impl TargetsConfig {
    pub fn load(path: &Path) -> Result<TargetsConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        Self::parse(&text).map_err(|message| ConfigError::Invalid {
            path: path.display().to_string(),
            message,
        })
    }

    pub fn parse(text: &str) -> Result<TargetsConfig, String> {
        let config: TargetsConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        for (name, f) in &config.functions {
            let kinds = [f.handler.is_some(), f.command.is_some(), f.lambda.is_some()]
                .iter()
                .filter(|k| **k)
                .count();
            if kinds != 1 {
                return Err(format!(
                    "function `{name}`: give exactly one of `handler`, `command` or `lambda`"
                ));
            }
            if f.command.as_ref().is_some_and(|c| c.is_empty()) {
                return Err(format!("function `{name}`: `command` is empty"));
            }
        }
        Ok(config)
    }
}

/// Invokes a Lambda function; implemented by a crate that links the AWS SDK.
pub trait LambdaInvoker: Send + Sync {
    fn invoke(
        &self,
        function: &str,
        endpoint: Option<&str>,
        context: &StepContext,
        input: &Value,
    ) -> crate::step::StepFuture;
}

#[derive(Clone)]
pub enum Target {
    InProcess(Arc<dyn StepHandler>),
    Command {
        program: String,
        args: Vec<String>,
        env: BTreeMap<String, String>,
    },
    Lambda {
        function: String,
        endpoint: Option<String>,
    },
}

/// Resolves and invokes functions.
#[derive(Clone)]
pub struct Targets {
    registry: Registry,
    config: TargetsConfig,
    lambda: Option<Arc<dyn LambdaInvoker>>,
}

impl Targets {
    pub fn new(registry: Registry, config: TargetsConfig) -> Targets {
        Targets {
            registry,
            config,
            lambda: None,
        }
    }

    pub fn with_lambda(mut self, invoker: Arc<dyn LambdaInvoker>) -> Targets {
        self.lambda = Some(invoker);
        self
    }

    pub fn resolve(&self, function: &str) -> Option<Target> {
        match self.config.functions.get(function) {
            Some(FunctionConfig {
                handler: Some(h), ..
            }) => self.registry.get(h).map(Target::InProcess),
            Some(FunctionConfig {
                command: Some(cmd),
                env,
                ..
            }) => Some(Target::Command {
                program: cmd[0].clone(),
                args: cmd[1..].to_vec(),
                env: env.clone(),
            }),
            Some(FunctionConfig {
                lambda: Some(name),
                endpoint,
                ..
            }) => Some(Target::Lambda {
                function: name.clone(),
                endpoint: endpoint.clone(),
            }),
            _ => self.registry.get(function).map(Target::InProcess),
        }
    }

    /// Functions of a workflow that no target serves.
    pub fn missing<'a>(&self, functions: impl IntoIterator<Item = &'a str>) -> Vec<String> {
        functions
            .into_iter()
            .filter(|f| self.resolve(f).is_none())
            .map(str::to_string)
            .collect()
    }

    /// Runs one attempt, giving up at the context's deadline.
    pub async fn invoke(
        &self,
        context: StepContext,
        input: Value,
        timeout: Duration,
    ) -> Result<Value, StepError> {
        let Some(target) = self.resolve(&context.function) else {
            return Err(StepError::permanent(
                "UnknownFunction",
                format!("no target for function `{}`", context.function),
            ));
        };
        let work = async {
            match target {
                Target::InProcess(handler) => handler.call(context, input).await,
                Target::Command { program, args, env } => {
                    run_command(&program, &args, &env, &context, &input).await
                }
                Target::Lambda { function, endpoint } => match &self.lambda {
                    Some(invoker) => {
                        invoker
                            .invoke(&function, endpoint.as_deref(), &context, &input)
                            .await
                    }
                    None => Err(StepError::permanent(
                        "LambdaUnavailable",
                        "this build cannot invoke Lambda functions",
                    )),
                },
            }
        };
        match tokio::time::timeout(timeout, work).await {
            Ok(result) => result,
            Err(_) => Err(StepError::retryable(
                "Timeout",
                format!("no result within {} ms", timeout.as_millis()),
            )),
        }
    }
}

/// Runs a local command: the input as JSON on stdin, the output as JSON on
/// stdout; a non-zero exit is a failure with stderr as its message. Exit code
/// 3 marks a failure retrying cannot fix.
async fn run_command(
    program: &str,
    args: &[String],
    env: &BTreeMap<String, String>,
    context: &StepContext,
    input: &Value,
) -> Result<Value, StepError> {
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .envs(env)
        .env("BATON_EXECUTION_ID", &context.execution_id)
        .env("BATON_WORKFLOW", &context.workflow)
        .env("BATON_STEP", &context.step)
        .env("BATON_ATTEMPT", context.attempt.to_string())
        .env("BATON_IDEMPOTENCY_KEY", &context.idempotency_key)
        .env("BATON_DEADLINE_MS", context.deadline.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            StepError::permanent("CommandFailed", format!("cannot start `{program}`: {e}"))
        })?;
    let body = serde_json::to_vec(input).unwrap_or_default();
    if let Some(mut stdin) = child.stdin.take() {
        // A command that ignores its input may close stdin early; that is not a failure.
        let _ = stdin.write_all(&body).await;
    }
    let output = child
        .wait_with_output()
        .await
        .map_err(|e| StepError::retryable("CommandFailed", format!("`{program}`: {e}")))?;
    if !output.status.success() {
        let message = String::from_utf8_lossy(&output.stderr).trim().to_string();
        let message = if message.is_empty() {
            format!("`{program}` exited with {}", output.status)
        } else {
            message
        };
        return Err(if output.status.code() == Some(3) {
            StepError::permanent("CommandFailed", message)
        } else {
            StepError::retryable("CommandFailed", message)
        });
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    if stdout.trim().is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_str(&stdout).map_err(|e| {
        StepError::permanent(
            "InvalidOutput",
            format!("`{program}` printed something that is not JSON: {e}"),
        )
    })
}

/// One function's target as a [`StepHandler`], so code that runs handlers
/// (the step SDK, local pollers) can run commands and Lambda targets too.
struct TargetHandler {
    targets: Targets,
}

impl StepHandler for TargetHandler {
    fn call(&self, context: StepContext, input: Value) -> crate::step::StepFuture {
        let targets = self.targets.clone();
        Box::pin(async move {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0);
            let timeout = Duration::from_millis(context.deadline.saturating_sub(now).max(1));
            targets.invoke(context, input, timeout).await
        })
    }
}

impl Targets {
    /// A handler running `function` on its target, if it has one.
    pub fn resolve_handler(&self, function: &str) -> Option<Arc<dyn StepHandler>> {
        self.resolve(function)?;
        Some(Arc::new(TargetHandler {
            targets: self.clone(),
        }))
    }
}
