//! The AWS side of the command: connecting to AWS or an emulator, creating
//! the resources Baton needs there, or reading them from a deployed stack.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_dynamodb::config::Credentials;
use baton_aws::bootstrap::{Plan, bootstrap};
use baton_aws::{AwsBackend, AwsSettings, RequestCounter};

use crate::app::bad;
use crate::display::{errln, outln};

/// Where `baton bootstrap` writes the settings it created, for later commands.
pub fn settings_file(db: &Path) -> PathBuf {
    db.with_file_name("aws.env")
}

/// SDK configuration; with an explicit endpoint (an emulator), dummy
/// credentials and us-east-1 stand in for whatever is not configured.
pub async fn sdk_config(endpoint: Option<&str>) -> SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest());
    if let Some(url) = endpoint {
        loader = loader.endpoint_url(url);
        if std::env::var_os("AWS_REGION").is_none()
            && std::env::var_os("AWS_DEFAULT_REGION").is_none()
        {
            loader = loader.region(Region::new("us-east-1"));
        }
        if std::env::var_os("AWS_ACCESS_KEY_ID").is_none()
            && std::env::var_os("AWS_PROFILE").is_none()
        {
            loader = loader.credentials_provider(Credentials::new(
                "test",
                "test",
                None,
                None,
                "baton-emulator",
            ));
        }
    }
    loader.load().await
}

fn read_env_file(path: &Path) -> BTreeMap<String, String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| {
            let line = line.trim().trim_start_matches("export ");
            let (k, v) = line.split_once('=')?;
            Some((
                k.trim().to_string(),
                v.trim().trim_matches('\'').to_string(),
            ))
        })
        .collect()
}

/// Settings from the environment, falling back to `.baton/aws.env`.
pub fn settings(db: &Path) -> anyhow::Result<AwsSettings> {
    let mut vars = read_env_file(&settings_file(db));
    vars.extend(std::env::vars().filter(|(k, _)| k.starts_with("BATON_")));
    AwsSettings::from_map(&vars).map_err(|e| {
        bad(format!(
            "{e} (set the BATON_* variables, or run `baton bootstrap --endpoint URL` to create resources and {})",
            settings_file(db).display()
        ))
    })
}

/// The AWS backend; `db` locates the settings `baton bootstrap` wrote.
pub async fn backend(endpoint: Option<&str>, db: &Path) -> anyhow::Result<AwsBackend> {
    let settings = settings(db)?;
    let endpoint = resolved_endpoint(endpoint, db);
    let config = sdk_config(endpoint.as_deref()).await;
    Ok(AwsBackend::with_config(
        &config,
        settings,
        RequestCounter::new(),
    ))
}

/// The endpoint given, else the one `.baton/aws.env` names (an emulator's).
pub fn resolved_endpoint(endpoint: Option<&str>, db: &Path) -> Option<String> {
    endpoint.map(str::to_string).or_else(|| {
        read_env_file(&settings_file(db))
            .get("AWS_ENDPOINT_URL")
            .cloned()
    })
}

pub async fn create(
    endpoint: Option<&str>,
    prefix: &str,
    max_receives: u32,
) -> anyhow::Result<(SdkConfig, AwsSettings)> {
    let config = sdk_config(endpoint).await;
    let placeholder: BTreeMap<String, String> = [
        ("BATON_TABLE".to_string(), "placeholder".to_string()),
        (
            "BATON_COORDINATOR_QUEUE_URL".to_string(),
            "http://placeholder/0/q".to_string(),
        ),
    ]
    .into();
    let setup = AwsBackend::with_config(
        &config,
        AwsSettings::from_map(&placeholder).map_err(|e| anyhow::anyhow!(e))?,
        RequestCounter::new(),
    );
    let mut plan = Plan::new(prefix);
    plan.max_receives = max_receives;
    let settings = bootstrap(setup.clients(), &plan).await.with_context(|| {
        format!(
            "creating resources at {}",
            endpoint.unwrap_or("the default AWS endpoint")
        )
    })?;
    Ok((config, settings))
}

pub async fn bootstrap_command(
    endpoint: Option<&str>,
    db: &Path,
    prefix: &str,
    max_receives: u32,
) -> anyhow::Result<u8> {
    let (_, settings) = create(endpoint, prefix, max_receives).await?;
    let (file, lines) = write_settings(db, &settings, endpoint)?;
    errln!(
        "created table {}, coordinator queue (with a DLQ, maxReceiveCount {max_receives}), bus {}; settings in {}",
        settings.table,
        settings.event_bus,
        file.display()
    );
    for line in lines {
        outln!("{line}");
    }
    Ok(0)
}

/// Writes the settings as `export` lines to `.baton/aws.env`; returns the file and lines.
pub fn write_settings(
    db: &Path,
    settings: &AwsSettings,
    endpoint: Option<&str>,
) -> anyhow::Result<(PathBuf, Vec<String>)> {
    let mut lines: Vec<String> = settings
        .to_env()
        .into_iter()
        .map(|(k, v)| format!("export {k}={v}"))
        .collect();
    if let Some(url) = endpoint {
        lines.push(format!("export AWS_ENDPOINT_URL={url}"));
    }
    let file = settings_file(db);
    if let Some(parent) = file.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&file, lines.join("\n") + "\n")
        .with_context(|| format!("writing {}", file.display()))?;
    Ok((file, lines))
}

/// Why a stack's outputs do not make settings.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StackOutputsError {
    #[error("outputs `{first}` and `{second}` both name {variable} in their descriptions")]
    Duplicate {
        variable: String,
        first: String,
        second: String,
    },
    #[error("output `{key}` names {variable} but has no value")]
    NoValue { key: String, variable: String },
}

/// One stack output as CloudFormation describes it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StackOutput {
    pub key: String,
    pub value: Option<String>,
    pub description: Option<String>,
}

/// The first `BATON_*` variable a description names (`The DynamoDB table (BATON_TABLE).`).
fn variable_named(description: &str) -> Option<String> {
    let start = description.find("BATON_")?;
    let name: String = description[start..]
        .chars()
        .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
        .collect();
    let name = name.trim_end_matches('_');
    (name.len() > "BATON_".len()).then(|| name.to_string())
}

/// The settings a stack provides: each output whose description names a
/// `BATON_*` variable gives that variable its value. Outputs naming none
/// (the API URL, the alarm topic) are for people and are skipped.
pub fn variables_from_outputs(
    outputs: &[StackOutput],
) -> Result<BTreeMap<String, String>, StackOutputsError> {
    let mut vars = BTreeMap::new();
    let mut sources: BTreeMap<String, &str> = BTreeMap::new();
    for output in outputs {
        let Some(variable) = output.description.as_deref().and_then(variable_named) else {
            continue;
        };
        if let Some(first) = sources.get(&variable) {
            return Err(StackOutputsError::Duplicate {
                variable,
                first: first.to_string(),
                second: output.key.clone(),
            });
        }
        let value = output
            .value
            .clone()
            .ok_or_else(|| StackOutputsError::NoValue {
                key: output.key.clone(),
                variable: variable.clone(),
            })?;
        sources.insert(variable.clone(), &output.key);
        vars.insert(variable, value);
    }
    Ok(vars)
}

/// The outputs of a CloudFormation stack.
async fn stack_outputs(config: &SdkConfig, stack: &str) -> anyhow::Result<Vec<StackOutput>> {
    use aws_sdk_cloudformation::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
    let client = aws_sdk_cloudformation::Client::new(config);
    let described = match client.describe_stacks().stack_name(stack).send().await {
        Ok(described) => described,
        // CloudFormation answers a stack it cannot find with a ValidationError.
        Err(SdkError::ServiceError(e)) if e.err().code() == Some("ValidationError") => {
            return Err(bad(format!(
                "no CloudFormation stack `{stack}` here: {} (check the name, the region and the account)",
                e.err().message().unwrap_or("not found")
            )));
        }
        Err(e) => {
            return Err(anyhow::anyhow!(
                "reading CloudFormation stack `{stack}`: {}",
                DisplayErrorContext(&e)
            ));
        }
    };
    let found = described
        .stacks()
        .first()
        .ok_or_else(|| bad(format!("no CloudFormation stack `{stack}` here")))?;
    tracing::debug!(stack, status = ?found.stack_status(), outputs = found.outputs().len(), "stack described");
    Ok(found
        .outputs()
        .iter()
        .map(|o| StackOutput {
            key: o.output_key().unwrap_or_default().to_string(),
            value: o.output_value().map(str::to_string),
            description: o.description().map(str::to_string),
        })
        .collect())
}

/// `baton bootstrap --from-stack NAME`: the settings of a deployed stack,
/// from its outputs, written to `.baton/aws.env`.
pub async fn bootstrap_from_stack(
    endpoint: Option<&str>,
    db: &Path,
    stack: &str,
) -> anyhow::Result<u8> {
    let config = sdk_config(endpoint).await;
    let outputs = stack_outputs(&config, stack).await?;
    let vars =
        variables_from_outputs(&outputs).map_err(|e| bad(format!("stack `{stack}`: {e}")))?;
    let settings = AwsSettings::from_map(&vars).map_err(|e| match e {
        baton_aws::ConfigError::Missing(name) => bad(format!(
            "stack `{stack}` has no output whose description names {name} (is it a Baton stack? outputs naming BATON_* variables: {})",
            if vars.is_empty() {
                "none".to_string()
            } else {
                vars.keys().cloned().collect::<Vec<_>>().join(", ")
            }
        )),
        other => bad(format!("stack `{stack}`: {other}")),
    })?;
    let (file, lines) = write_settings(db, &settings, endpoint)?;
    errln!(
        "read table {}, coordinator queue, bus {} from stack `{stack}`; settings in {}",
        settings.table,
        settings.event_bus,
        file.display()
    );
    for line in lines {
        outln!("{line}");
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn output(key: &str, value: &str, description: &str) -> StackOutput {
        StackOutput {
            key: key.into(),
            value: Some(value.into()),
            description: Some(description.into()),
        }
    }

    #[test]
    fn descriptions_name_the_variables_outputs_provide() {
        let outputs = [
            output(
                "ApiUrl",
                "https://x",
                "Base URL of the HTTP API (requests are signed with SigV4).",
            ),
            output("TableName", "s-table", "The DynamoDB table (BATON_TABLE)."),
            output(
                "CoordinatorQueueUrl",
                "https://sqs/1/s-coordinator",
                "BATON_COORDINATOR_QUEUE_URL.",
            ),
            output(
                "CoordinatorQueueArn",
                "arn:aws:sqs:us-east-1:1:s-coordinator",
                "BATON_COORDINATOR_QUEUE_ARN. Step functions' event-invoke destinations\n(OnSuccess and OnFailure) point here.",
            ),
            output("StepFunctionPrefix", "s-", "BATON_STEP_FUNCTION_PREFIX."),
            StackOutput {
                key: "Nothing".into(),
                value: None,
                description: None,
            },
        ];
        let vars = variables_from_outputs(&outputs).unwrap();
        assert_eq!(
            vars.into_iter().collect::<Vec<_>>(),
            [
                (
                    "BATON_COORDINATOR_QUEUE_ARN",
                    "arn:aws:sqs:us-east-1:1:s-coordinator"
                ),
                ("BATON_COORDINATOR_QUEUE_URL", "https://sqs/1/s-coordinator"),
                ("BATON_STEP_FUNCTION_PREFIX", "s-"),
                ("BATON_TABLE", "s-table"),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string()))
        );
    }

    #[test]
    fn a_variable_named_twice_or_without_a_value_is_refused() {
        let twice = [
            output("A", "1", "BATON_TABLE."),
            output("B", "2", "Also the table (BATON_TABLE)."),
        ];
        assert_eq!(
            variables_from_outputs(&twice),
            Err(StackOutputsError::Duplicate {
                variable: "BATON_TABLE".into(),
                first: "A".into(),
                second: "B".into()
            })
        );
        let empty = [StackOutput {
            key: "T".into(),
            value: None,
            description: Some("BATON_TABLE.".into()),
        }];
        assert!(matches!(
            variables_from_outputs(&empty),
            Err(StackOutputsError::NoValue { .. })
        ));
    }

    #[test]
    fn only_whole_variable_names_count() {
        assert_eq!(
            variable_named("see BATON_EVENT_BUS, the bus"),
            Some("BATON_EVENT_BUS".into())
        );
        assert_eq!(variable_named("BATON_ alone"), None);
        assert_eq!(variable_named("no variable"), None);
    }
}
