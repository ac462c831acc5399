//! The AWS side of the command: connecting to AWS or an emulator, and
//! creating the resources Baton needs there.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_dynamodb::config::Credentials;
use baton_aws::bootstrap::{Plan, bootstrap};
use baton_aws::{AwsBackend, AwsSettings, RequestCounter};

use crate::app::bad;

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
    let endpoint = endpoint.map(str::to_string).or_else(|| {
        read_env_file(&settings_file(db))
            .get("AWS_ENDPOINT_URL")
            .cloned()
    });
    let config = sdk_config(endpoint.as_deref()).await;
    Ok(AwsBackend::with_config(
        &config,
        settings,
        RequestCounter::new(),
    ))
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
    eprintln!(
        "created table {}, coordinator queue (with a DLQ, maxReceiveCount {max_receives}), bus {}; settings in {}",
        settings.table,
        settings.event_bus,
        file.display()
    );
    for line in lines {
        println!("{line}");
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
