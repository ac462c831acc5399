//! Creates the table, the coordinator queue (with a DLQ, redrive policy and
//! a policy letting the event bus's rules send to it), payload bucket, event
//! bus and schedule group on an emulator (moto server, LocalStack) or an account,
//! for local development and tests. Deployed stacks get them from the SAM
//! template instead.

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType, TimeToLiveSpecification,
};
use aws_sdk_sqs::types::QueueAttributeName;
use baton_runtime::ports::{StoreError, StoreResult};

use crate::config::{AwsSettings, BUCKET_PAYLOAD_LIMIT, DEFAULT_EVENTS};
use crate::payloads::PREFIX;
use crate::queues::Clients;
use crate::store::{EXPIRES, STATUS_INDEX, sdk_error};

#[derive(Debug, Clone)]
pub struct Plan {
    /// Prefix of every resource name, e.g. `baton`.
    pub prefix: String,
    /// The redrive policy's maxReceiveCount.
    pub max_receives: u32,
    /// Visibility timeout of the queues, in seconds.
    pub visibility_timeout_s: u32,
    /// Role the scheduler assumes (any ARN on an emulator).
    pub scheduler_role_arn: String,
    /// Days a payload object is kept (the bucket's lifecycle rule).
    pub payload_retention_days: i32,
}

impl Plan {
    pub fn new(prefix: impl Into<String>) -> Plan {
        Plan {
            prefix: prefix.into(),
            max_receives: 5,
            visibility_timeout_s: 60,
            scheduler_role_arn: "arn:aws:iam::123456789012:role/baton-scheduler".into(),
            payload_retention_days: 400,
        }
    }
}

/// Creates what is missing and returns the settings that name it all.
pub async fn bootstrap(clients: &Clients, plan: &Plan) -> StoreResult<AwsSettings> {
    let table = format!("{}-table", plan.prefix);
    create_table(clients, &table).await?;
    let (coordinator_url, coordinator_arn) =
        create_queue_with_dlq(clients, &format!("{}-coordinator", plan.prefix), plan).await?;
    let bus = format!("{}-events", plan.prefix);
    match clients
        .eventbridge
        .create_event_bus()
        .name(&bus)
        .send()
        .await
    {
        Ok(_) => {}
        Err(e) if matches!(&e, aws_sdk_eventbridge::error::SdkError::ServiceError(s) if s.err().is_resource_already_exists_exception()) =>
            {}
        Err(e) => return Err(sdk_error(e)),
    }
    allow_rules_to_send(clients, &coordinator_url, &coordinator_arn, &bus).await?;
    let group = format!("{}-schedules", plan.prefix);
    match clients
        .scheduler
        .create_schedule_group()
        .name(&group)
        .send()
        .await
    {
        Ok(_) => {}
        Err(e) if matches!(&e, aws_sdk_scheduler::error::SdkError::ServiceError(s) if s.err().is_conflict_exception()) =>
            {}
        Err(e) => return Err(sdk_error(e)),
    }
    let bucket = format!("{}-payloads", plan.prefix.to_lowercase());
    create_payload_bucket(clients, &bucket, plan.payload_retention_days).await?;
    Ok(AwsSettings {
        table,
        coordinator_queue_url: coordinator_url,
        coordinator_queue_arn: Some(coordinator_arn),
        step_function_prefix: None,
        event_bus: bus,
        schedule_group: group,
        scheduler_role_arn: Some(plan.scheduler_role_arn.clone()),
        payload_limit: BUCKET_PAYLOAD_LIMIT,
        payload_bucket: Some(bucket),
        events: DEFAULT_EVENTS,
    })
}

/// The payload bucket, its objects expiring after `days` (as the template's
/// lifecycle rule does).
async fn create_payload_bucket(clients: &Clients, bucket: &str, days: i32) -> StoreResult<()> {
    use aws_sdk_s3::types::{
        BucketLifecycleConfiguration, ExpirationStatus, LifecycleExpiration, LifecycleRule,
        LifecycleRuleFilter,
    };
    match clients.s3.create_bucket().bucket(bucket).send().await {
        Ok(_) => {}
        Err(e) if matches!(&e, aws_sdk_s3::error::SdkError::ServiceError(s) if s.err().is_bucket_already_owned_by_you() || s.err().is_bucket_already_exists()) =>
            {}
        Err(e) => return Err(sdk_error(e)),
    }
    let invalid = |e: aws_sdk_s3::error::BuildError| StoreError::Unavailable(e.to_string());
    let rule = LifecycleRule::builder()
        .id("payloads-expire")
        .filter(LifecycleRuleFilter::builder().prefix(PREFIX).build())
        .status(ExpirationStatus::Enabled)
        .expiration(LifecycleExpiration::builder().days(days).build())
        .build()
        .map_err(invalid)?;
    clients
        .s3
        .put_bucket_lifecycle_configuration()
        .bucket(bucket)
        .lifecycle_configuration(
            BucketLifecycleConfiguration::builder()
                .rules(rule)
                .build()
                .map_err(invalid)?,
        )
        .send()
        .await
        .map_err(sdk_error)?;
    Ok(())
}

async fn create_table(clients: &Clients, table: &str) -> StoreResult<()> {
    let key = |name: &str, kind| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(kind)
            .build()
            .map_err(|e| StoreError::Unavailable(e.to_string()))
    };
    let attribute = |name: &str| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .map_err(|e| StoreError::Unavailable(e.to_string()))
    };
    let result = clients
        .dynamodb
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest)
        .key_schema(key("pk", KeyType::Hash)?)
        .key_schema(key("sk", KeyType::Range)?)
        .attribute_definitions(attribute("pk")?)
        .attribute_definitions(attribute("sk")?)
        .attribute_definitions(attribute("status")?)
        .attribute_definitions(attribute("ord")?)
        .global_secondary_indexes(
            GlobalSecondaryIndex::builder()
                .index_name(STATUS_INDEX)
                .key_schema(key("status", KeyType::Hash)?)
                .key_schema(key("ord", KeyType::Range)?)
                .projection(
                    Projection::builder()
                        .projection_type(ProjectionType::Include)
                        .non_key_attributes("workflow")
                        .build(),
                )
                .build()
                .map_err(|e| StoreError::Unavailable(e.to_string()))?,
        )
        .send()
        .await;
    match result {
        Ok(_) => {}
        Err(e) if matches!(&e, aws_sdk_dynamodb::error::SdkError::ServiceError(s) if s.err().is_resource_in_use_exception()) =>
        {
            return Ok(());
        }
        Err(e) => return Err(sdk_error(e)),
    }
    clients
        .dynamodb
        .update_time_to_live()
        .table_name(table)
        .time_to_live_specification(
            TimeToLiveSpecification::builder()
                .attribute_name(EXPIRES)
                .enabled(true)
                .build()
                .map_err(|e| StoreError::Unavailable(e.to_string()))?,
        )
        .send()
        .await
        .map_err(sdk_error)?;
    Ok(())
}

/// Creates `name` and `name-dlq` with a redrive policy between them; returns the main queue's URL and ARN.
async fn create_queue_with_dlq(
    clients: &Clients,
    name: &str,
    plan: &Plan,
) -> StoreResult<(String, String)> {
    let dlq_url = clients
        .sqs
        .create_queue()
        .queue_name(format!("{name}-dlq"))
        .attributes(QueueAttributeName::MessageRetentionPeriod, "1209600")
        .send()
        .await
        .map_err(sdk_error)?
        .queue_url()
        .unwrap_or_default()
        .to_string();
    let dlq_arn = queue_arn(clients, &dlq_url).await?;
    let redrive =
        serde_json::json!({ "deadLetterTargetArn": dlq_arn, "maxReceiveCount": plan.max_receives })
            .to_string();
    let url = clients
        .sqs
        .create_queue()
        .queue_name(name)
        .attributes(QueueAttributeName::RedrivePolicy, redrive)
        .attributes(
            QueueAttributeName::VisibilityTimeout,
            plan.visibility_timeout_s.to_string(),
        )
        .send()
        .await
        .map_err(sdk_error)?
        .queue_url()
        .unwrap_or_default()
        .to_string();
    let arn = queue_arn(clients, &url).await?;
    Ok((url, arn))
}

/// The coordinator queue's policy: EventBridge may send it what the rules of
/// `bus` match (the rules of workflows' triggers, see [`crate::rules`]), as
/// the template's queue policy allows.
async fn allow_rules_to_send(
    clients: &Clients,
    url: &str,
    arn: &str,
    bus: &str,
) -> StoreResult<()> {
    // arn:aws:sqs:{region}:{account}:{name}
    let parts: Vec<&str> = arn.split(':').collect();
    let (Some(region), Some(account)) = (parts.get(3), parts.get(4)) else {
        return Err(StoreError::Corrupt {
            what: format!("queue ARN `{arn}`"),
            message: "not an SQS queue ARN".into(),
        });
    };
    let policy = serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "TriggerRules",
            "Effect": "Allow",
            "Principal": { "Service": "events.amazonaws.com" },
            "Action": "sqs:SendMessage",
            "Resource": arn,
            "Condition": { "ArnLike": {
                "aws:SourceArn": format!("arn:aws:events:{region}:{account}:rule/{bus}/*")
            } }
        }]
    });
    clients
        .sqs
        .set_queue_attributes()
        .queue_url(url)
        .attributes(QueueAttributeName::Policy, policy.to_string())
        .send()
        .await
        .map_err(sdk_error)?;
    Ok(())
}

async fn queue_arn(clients: &Clients, url: &str) -> StoreResult<String> {
    let out = clients
        .sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(sdk_error)?;
    out.attributes()
        .and_then(|a| a.get(&QueueAttributeName::QueueArn))
        .cloned()
        .ok_or_else(|| StoreError::Unavailable(format!("queue {url} has no ARN")))
}
