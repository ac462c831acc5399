//! `template.yaml` against the rules a deployment must keep: the stack holds
//! Baton only (the API, the coordinator, its queue and DLQ; steps are the
//! user's own Lambda functions, named `StepFunctionPrefix*`, in their own
//! stacks), the coordinator queue dead-letters after a numeric number of
//! receives, its DLQ alarms at a numeric threshold, the coordinator runs as
//! at least two instances, IAM grants no wildcard action and reaches the step
//! functions by their name prefix only and the payload bucket under
//! `payloads/` only, the bucket is private and expires what it holds, and the
//! names, variables, outputs and binaries the template wires up are the ones
//! the code uses.

use std::collections::{BTreeMap, BTreeSet};

use baton_aws::CoordinatorMessage;
use baton_deploy_tests::{Template, as_list, get_att, reference, repo_path};
use http::Method;
use serde_json::Value;

/// The `Resource: "*"` statements the template may contain: role, action,
/// and why AWS requires it.
const RESOURCE_STAR_ALLOWED: &[(&str, &str, &str)] = &[
    (
        "ApiRole",
        "scheduler:ListSchedules",
        "ListSchedules supports no resource-level permissions; deploying a workflow lists the \
         group's schedules to create, update and delete its own",
    ),
    (
        "ApiRole",
        "events:ListRules",
        "ListRules supports no resource-level permissions; deploying a workflow lists the \
         bus's rules to replace and delete its triggers' own",
    ),
];

/// The resource the step functions' permissions name: every function of the
/// stack's account and region whose name starts with `StepFunctionPrefix`,
/// qualified (`name:alias`, `name:version`) or not.
const STEP_FUNCTIONS_ARN: &str =
    "arn:${AWS::Partition}:lambda:${AWS::Region}:${AWS::AccountId}:function:${StepFunctionPrefix}*";

/// Where the functions keep large payloads: under `payloads/`, the prefix
/// the bucket's lifecycle rule expires.
const PAYLOAD_PREFIX: &str = "payloads/";

/// The resource the payload permissions name: the bucket's objects under
/// [`PAYLOAD_PREFIX`].
const PAYLOAD_OBJECTS_ARN: &str = "${PayloadBucket.Arn}/payloads/*";

/// The Lambda functions: `(logical id, resource)`.
fn functions(t: &Template) -> Vec<(&str, &Value)> {
    t.resources_of_type("AWS::Serverless::Function").collect()
}

/// The environment a function runs with: `Globals.Function`'s variables,
/// overridden by its own (SAM merges the two maps).
fn environment(t: &Template, function: &Value) -> BTreeMap<String, Value> {
    let mut variables = BTreeMap::new();
    for source in [
        &t.doc["Globals"]["Function"]["Environment"]["Variables"],
        &function["Properties"]["Environment"]["Variables"],
    ] {
        for (name, value) in source.as_object().into_iter().flatten() {
            variables.insert(name.clone(), value.clone());
        }
    }
    variables
}

/// The queues that feed a function, with the function: from SAM `SQS`
/// events and plain event source mappings.
fn feeding_queues(t: &Template) -> Vec<(String, String)> {
    let mut feeds = Vec::new();
    for (id, function) in functions(t) {
        for (_, event) in function["Properties"]["Events"]
            .as_object()
            .into_iter()
            .flatten()
        {
            if event["Type"] == "SQS" {
                let queue = get_att(&event["Properties"]["Queue"], "Arn")
                    .unwrap_or_else(|| panic!("{id}: an SQS event's Queue is not !GetAtt Q.Arn"));
                feeds.push((queue.to_string(), id.to_string()));
            }
        }
    }
    for (id, mapping) in t.resources_of_type("AWS::Lambda::EventSourceMapping") {
        if let Some(queue) = get_att(&mapping["Properties"]["EventSourceArn"], "Arn")
            && t.resource(queue)
                .is_some_and(|q| q["Type"] == "AWS::SQS::Queue")
        {
            feeds.push((queue.to_string(), id.to_string()));
        }
    }
    feeds
}

/// The DLQ of a queue, by its redrive policy.
fn dlq_of<'a>(t: &'a Template, queue: &str) -> Option<&'a str> {
    get_att(
        &t.resource(queue)?["Properties"]["RedrivePolicy"]["deadLetterTargetArn"],
        "Arn",
    )
}

/// Every queue some redrive policy targets.
fn dlqs(t: &Template) -> BTreeSet<String> {
    t.resources_of_type("AWS::SQS::Queue")
        .filter_map(|(id, _)| dlq_of(t, id))
        .map(str::to_string)
        .collect()
}

/// The function built from a given binary.
fn function_by_binary<'a>(t: &'a Template, binary: &str) -> (&'a str, &'a Value) {
    functions(t)
        .into_iter()
        .find(|(_, f)| f["Metadata"]["BuildProperties"]["Binary"] == binary)
        .unwrap_or_else(|| panic!("no function is built from binary `{binary}`"))
}

/// The queues an alarm watches (`QueueName` dimensions, in plain and
/// metric-math alarms), as the logical ids of the queues.
fn alarmed_queues(alarm: &Value) -> Vec<String> {
    let mut dimension_lists: Vec<&Value> = vec![&alarm["Properties"]["Dimensions"]];
    for metric in as_list(&alarm["Properties"]["Metrics"]) {
        dimension_lists.push(&metric["MetricStat"]["Metric"]["Dimensions"]);
    }
    dimension_lists
        .into_iter()
        .flat_map(as_list)
        .filter(|d| d["Name"] == "QueueName")
        .filter_map(|d| get_att(&d["Value"], "QueueName"))
        .map(str::to_string)
        .collect()
}

fn metric_names(alarm: &Value) -> Vec<String> {
    let mut names: Vec<String> = alarm["Properties"]["MetricName"]
        .as_str()
        .map(str::to_string)
        .into_iter()
        .collect();
    for metric in as_list(&alarm["Properties"]["Metrics"]) {
        if let Some(name) = metric["MetricStat"]["Metric"]["MetricName"].as_str() {
            names.push(name.to_string());
        }
    }
    names
}

#[test]
fn every_queue_feeding_a_function_redrives_to_its_dlq_after_a_numeric_count() {
    let t = Template::load();
    let feeds = feeding_queues(&t);
    assert_eq!(
        feeds,
        [(
            "CoordinatorQueue".to_string(),
            "CoordinatorFunction".to_string()
        )],
        "only the coordinator consumes a queue"
    );
    for (queue, function) in feeds {
        let policy = &t
            .resource(&queue)
            .unwrap_or_else(|| panic!("{queue} is not a resource"))["Properties"]["RedrivePolicy"];
        let dlq = dlq_of(&t, &queue)
            .unwrap_or_else(|| panic!("{queue} (feeds {function}) has no redrive policy"));
        assert_ne!(dlq, queue);
        assert_eq!(
            t.resource(dlq).map(|d| &d["Type"]),
            Some(&Value::from("AWS::SQS::Queue")),
            "{queue}'s DLQ {dlq} is not a queue of this stack"
        );
        let limit = t
            .number(&policy["maxReceiveCount"])
            .unwrap_or_else(|| panic!("{queue}: maxReceiveCount is not numeric: {policy}"));
        assert!(
            (1.0..=1000.0).contains(&limit.value) && limit.min.is_none_or(|m| m >= 1.0),
            "{queue}: maxReceiveCount {limit:?}"
        );
    }
}

#[test]
fn every_dlq_alarms_on_a_numeric_threshold_and_at_80_percent_of_its_budget() {
    let t = Template::load();
    let dlqs = dlqs(&t);
    assert_eq!(
        dlqs,
        BTreeSet::from(["CoordinatorQueueDlq".to_string()]),
        "the coordinator queue's DLQ is the only one"
    );
    let alarms: Vec<(&str, &Value)> = t.resources_of_type("AWS::CloudWatch::Alarm").collect();
    for dlq in &dlqs {
        let watching: Vec<&(&str, &Value)> = alarms
            .iter()
            .filter(|(_, a)| alarmed_queues(a).contains(dlq))
            .filter(|(_, a)| {
                metric_names(a).contains(&"ApproximateNumberOfMessagesVisible".to_string())
            })
            .collect();
        assert!(!watching.is_empty(), "no alarm watches DLQ {dlq}");
        for (id, alarm) in &watching {
            let threshold = t.number(&alarm["Properties"]["Threshold"]);
            assert!(threshold.is_some(), "{id}: threshold is not numeric");
            assert!(
                !as_list(&alarm["Properties"]["AlarmActions"]).is_empty(),
                "{id} notifies nobody"
            );
        }
        // First dead letter: depth > threshold (default 0).
        let first = watching.iter().find(|(_, a)| {
            a["Properties"]["ComparisonOperator"] == "GreaterThanThreshold"
                && a["Properties"]["MetricName"] == "ApproximateNumberOfMessagesVisible"
        });
        let (id, first) = first.unwrap_or_else(|| panic!("{dlq}: no depth > threshold alarm"));
        let threshold = t.number(&first["Properties"]["Threshold"]).unwrap();
        assert_eq!(
            threshold.value, 0.0,
            "{id}: the default fires on the first dead letter"
        );
        // Capacity: 100 * depth / budget >= percent (default 80).
        let capacity = watching.iter().find(|(_, a)| {
            as_list(&a["Properties"]["Metrics"]).iter().any(|m| {
                m["Expression"]["Fn::Sub"]
                    .as_str()
                    .is_some_and(|e| e.contains("${DlqCapacityBudget}"))
            })
        });
        let (id, capacity) = capacity.unwrap_or_else(|| panic!("{dlq}: no capacity alarm"));
        let percent = t.number(&capacity["Properties"]["Threshold"]).unwrap();
        assert_eq!(percent.value, 80.0, "{id}");
    }
    let budget = t.number(&serde_json::json!({"Ref": "DlqCapacityBudget"}));
    assert!(
        budget.is_some_and(|b| b.value >= 1.0),
        "a numeric DLQ budget"
    );
}

#[test]
fn the_coordinator_may_run_at_least_two_instances() {
    let t = Template::load();
    let (id, coordinator) = function_by_binary(&t, "coordinator");
    let events: Vec<&Value> = coordinator["Properties"]["Events"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(_, e)| e)
        .filter(|e| e["Type"] == "SQS")
        .collect();
    assert_eq!(events.len(), 1, "{id}: one SQS event source");
    let concurrency = t
        .number(&events[0]["Properties"]["ScalingConfig"]["MaximumConcurrency"])
        .unwrap_or_else(|| panic!("{id}: MaximumConcurrency is not numeric"));
    assert!(concurrency.value >= 2.0, "{concurrency:?}");
    if concurrency.parameter.is_some() {
        assert!(
            concurrency.min.is_some_and(|m| m >= 2.0),
            "the parameter may go below 2: {concurrency:?}"
        );
    }
    // Nothing caps the function itself below 2 either.
    if let Some(reserved) = coordinator["Properties"].get("ReservedConcurrentExecutions") {
        assert!(t.number(reserved).is_some_and(|r| r.value >= 2.0));
    }
}

/// Every IAM policy statement of the template: `(where, statement)`.
fn statements(t: &Template) -> Vec<(String, &Value)> {
    let mut found = Vec::new();
    for (id, resource) in t.resources() {
        let properties = &resource["Properties"];
        let mut documents: Vec<&Value> = Vec::new();
        match resource["Type"].as_str().unwrap_or_default() {
            "AWS::IAM::Role" => {
                documents.push(&properties["AssumeRolePolicyDocument"]);
                for policy in as_list(&properties["Policies"]) {
                    documents.push(&policy["PolicyDocument"]);
                }
            }
            "AWS::IAM::Policy"
            | "AWS::IAM::ManagedPolicy"
            | "AWS::SQS::QueuePolicy"
            | "AWS::SNS::TopicPolicy" => documents.push(&properties["PolicyDocument"]),
            "AWS::Serverless::Function" => {
                for policy in as_list(&properties["Policies"]) {
                    documents.push(policy);
                }
            }
            _ => {}
        }
        for document in documents {
            for statement in as_list(&document["Statement"]) {
                found.push((id.to_string(), statement));
            }
        }
    }
    found
}

#[test]
fn no_iam_statement_grants_a_wildcard_action_and_resource_star_is_listed() {
    let t = Template::load();
    let statements = statements(&t);
    // Every role's trust and permission statements are read.
    let roles: BTreeSet<&str> = statements.iter().map(|(r, _)| r.as_str()).collect();
    assert_eq!(
        roles,
        BTreeSet::from([
            "ApiRole",
            "CoordinatorQueuePolicy",
            "CoordinatorRole",
            "SchedulerRole"
        ])
    );
    assert!(statements.len() >= 20, "{}", statements.len());
    let mut resource_star = Vec::new();
    for (role, statement) in &statements {
        assert!(
            statement.get("NotAction").is_none(),
            "{role}: NotAction grants everything else"
        );
        assert!(
            statement.get("NotResource").is_none(),
            "{role}: NotResource"
        );
        for action in as_list(&statement["Action"]) {
            let action = action
                .as_str()
                .unwrap_or_else(|| panic!("{role}: action {action}"));
            assert!(!action.contains('*'), "{role} grants `{action}`");
        }
        if as_list(&statement["Resource"]).iter().any(|r| *r == "*") {
            for action in as_list(&statement["Action"]) {
                resource_star.push((
                    role.clone(),
                    action.as_str().unwrap_or_default().to_string(),
                ));
            }
        }
    }
    let allowed: Vec<(String, String)> = RESOURCE_STAR_ALLOWED
        .iter()
        .map(|(role, action, _)| (role.to_string(), action.to_string()))
        .collect();
    assert_eq!(resource_star, allowed, "Resource \"*\" outside the list");
    // SAM gives a function without a Role its own, with the managed
    // AWSLambdaBasicExecutionRole (logs on Resource "*").
    for (id, function) in functions(&t) {
        let role = get_att(&function["Properties"]["Role"], "Arn")
            .unwrap_or_else(|| panic!("{id} has no role of this template"));
        assert_eq!(
            t.resource(role).map(|r| &r["Type"]),
            Some(&Value::from("AWS::IAM::Role"))
        );
        assert!(function["Properties"].get("Policies").is_none(), "{id}");
    }
}

/// Whether an IAM resource pattern (`*` any run of characters, `?` one)
/// matches `arn`.
fn iam_matches(pattern: &str, arn: &str) -> bool {
    fn go(p: &[u8], s: &[u8]) -> bool {
        match p.split_first() {
            None => s.is_empty(),
            Some((b'*', rest)) => (0..=s.len()).any(|i| go(rest, &s[i..])),
            Some((b'?', rest)) => !s.is_empty() && go(rest, &s[1..]),
            Some((c, rest)) => s.first() == Some(c) && go(rest, &s[1..]),
        }
    }
    go(pattern.as_bytes(), arn.as_bytes())
}

/// A `!Sub` string with the pseudo parameters, `StepFunctionPrefix` and
/// payload bucket of a stack in us-east-1 of account 123456789012, deployed
/// with prefix `orders-` and given bucket `demo-payloadbucket-1a2b`.
fn resolve_sub(text: &str) -> String {
    text.replace("${AWS::Partition}", "aws")
        .replace("${AWS::Region}", "us-east-1")
        .replace("${AWS::AccountId}", "123456789012")
        .replace("${StepFunctionPrefix}", "orders-")
        .replace(
            "${PayloadBucket.Arn}",
            "arn:aws:s3:::demo-payloadbucket-1a2b",
        )
}

#[test]
fn iam_is_least_privilege_and_reaches_step_functions_by_their_prefix_only() {
    let t = Template::load();
    let statements = statements(&t);
    // (role, action, resource) of every Lambda grant, and of every S3 grant.
    let mut lambda_grants: BTreeSet<(String, String, String)> = BTreeSet::new();
    let mut s3_grants: BTreeSet<(String, String, String)> = BTreeSet::new();
    for (role, statement) in &statements {
        assert_eq!(statement["Effect"], "Allow", "{role}: {statement}");
        let actions = as_list(&statement["Action"]);
        assert!(!actions.is_empty(), "{role}: a statement without Action");
        let resources = as_list(&statement["Resource"]);
        for action in &actions {
            let action = action
                .as_str()
                .unwrap_or_else(|| panic!("{role}: action {action} is not text"));
            let (service, name) = action
                .split_once(':')
                .unwrap_or_else(|| panic!("{role}: `{action}` is not service:action"));
            assert!(
                action != "*" && name != "*" && !service.is_empty(),
                "{role} grants `{action}`"
            );
            let grants = match service {
                "lambda" => &mut lambda_grants,
                "s3" => &mut s3_grants,
                _ => continue,
            };
            assert!(
                !resources.iter().any(|r| *r == "*"),
                "{role}: `{action}` on Resource \"*\""
            );
            for resource in &resources {
                let resource = resource["Fn::Sub"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{role}: `{action}` on {resource}"));
                grants.insert((role.clone(), action.to_string(), resource.to_string()));
            }
        }
    }
    // The coordinator invokes the step functions; the API reads their
    // configuration when a workflow is deployed and invokes the steps a
    // start, signal or cancel makes ready; nothing else touches Lambda.
    let grant = |role: &str, action: &str| {
        (
            role.to_string(),
            action.to_string(),
            STEP_FUNCTIONS_ARN.to_string(),
        )
    };
    assert_eq!(
        lambda_grants,
        BTreeSet::from([
            grant("CoordinatorRole", "lambda:InvokeFunction"),
            grant("ApiRole", "lambda:GetFunction"),
            grant("ApiRole", "lambda:GetFunctionEventInvokeConfig"),
            grant("ApiRole", "lambda:InvokeFunction"),
        ])
    );
    // Both functions put and read payloads (HeadObject is authorised by
    // s3:GetObject) under the payload prefix, and do nothing else in S3.
    let payload_grant = |role: &str, action: &str| {
        (
            role.to_string(),
            action.to_string(),
            PAYLOAD_OBJECTS_ARN.to_string(),
        )
    };
    assert_eq!(
        s3_grants,
        BTreeSet::from([
            payload_grant("ApiRole", "s3:GetObject"),
            payload_grant("ApiRole", "s3:PutObject"),
            payload_grant("CoordinatorRole", "s3:GetObject"),
            payload_grant("CoordinatorRole", "s3:PutObject"),
        ])
    );
    for (binary, role) in [("coordinator", "CoordinatorRole"), ("api", "ApiRole")] {
        let (id, function) = function_by_binary(&t, binary);
        assert_eq!(
            get_att(&function["Properties"]["Role"], "Arn"),
            Some(role),
            "{id}"
        );
    }
    // The prefix reaches the step functions, qualified or not, and only them.
    let arn = resolve_sub(STEP_FUNCTIONS_ARN);
    let function = "arn:aws:lambda:us-east-1:123456789012:function:";
    for name in [
        "orders-validate",
        "orders-validate:live",
        "orders-validate:7",
    ] {
        assert!(iam_matches(&arn, &format!("{function}{name}")), "{name}");
    }
    for other in [
        format!("{function}orders"),
        format!("{function}billing-charge"),
        format!("{function}xorders-validate"),
        "arn:aws:lambda:eu-west-1:123456789012:function:orders-validate".to_string(),
        "arn:aws:lambda:us-east-1:210987654321:function:orders-validate".to_string(),
        "arn:aws:lambda:us-east-1:123456789012:layer:orders-validate".to_string(),
    ] {
        assert!(!iam_matches(&arn, &other), "{other}");
    }
    // The payload grant reaches the bucket's objects under the prefix only:
    // not the bucket itself, its other keys, or another bucket.
    let arn = resolve_sub(PAYLOAD_OBJECTS_ARN);
    let bucket = "arn:aws:s3:::demo-payloadbucket-1a2b";
    for key in ["payloads/ex-1/4f2a", "payloads/nightly-2026-03-09/ab/cd"] {
        assert!(iam_matches(&arn, &format!("{bucket}/{key}")), "{key}");
    }
    for other in [
        bucket.to_string(),
        format!("{bucket}/"),
        format!("{bucket}/other/ex-1/4f2a"),
        format!("{bucket}/payloads"),
        "arn:aws:s3:::demo-payloadbucket-1a2b-copy/payloads/ex-1/4f2a".to_string(),
    ] {
        assert!(!iam_matches(&arn, &other), "{other}");
    }
    // The prefix is the operator's choice, a plain start of a function name.
    let prefix = t
        .parameter("StepFunctionPrefix")
        .expect("a StepFunctionPrefix parameter");
    assert_eq!(prefix["Type"], "String");
    assert!(prefix.get("Default").is_none(), "{prefix}");
    assert_eq!(prefix["AllowedPattern"], "^[A-Za-z0-9_-]{1,40}$");
    assert!(
        prefix["ConstraintDescription"]
            .as_str()
            .is_some_and(|d| !d.trim().is_empty()),
        "{prefix}"
    );
}

#[test]
fn the_stack_holds_baton_only_no_step_queues_or_functions() {
    let t = Template::load();
    let ids = |kind: &str| -> BTreeSet<String> {
        t.resources_of_type(kind)
            .map(|(id, _)| id.to_string())
            .collect()
    };
    let set = |ids: &[&str]| -> BTreeSet<String> { ids.iter().map(|s| s.to_string()).collect() };
    assert_eq!(
        ids("AWS::SQS::Queue"),
        set(&["CoordinatorQueue", "CoordinatorQueueDlq"])
    );
    assert_eq!(
        ids("AWS::Serverless::Function"),
        set(&["ApiFunction", "CoordinatorFunction"])
    );
    assert_eq!(
        ids("AWS::IAM::Role"),
        set(&["ApiRole", "CoordinatorRole", "SchedulerRole"])
    );
    assert_eq!(
        ids("AWS::Logs::LogGroup"),
        set(&["ApiLogGroup", "CoordinatorLogGroup"])
    );
    assert_eq!(ids("AWS::S3::Bucket"), set(&["PayloadBucket"]));
    // The step functions' event-invoke configs, event sources and
    // permissions belong to the stacks that own the functions.
    for (id, resource) in t.resources() {
        let kind = resource["Type"].as_str().unwrap_or_default();
        assert!(!kind.starts_with("AWS::Lambda::"), "{id}: {kind}");
    }
    for (id, function) in functions(&t) {
        assert!(
            function["Properties"].get("EventInvokeConfig").is_none(),
            "{id}"
        );
    }
    for parameter in [
        "StepMaxConcurrency",
        "StepFunctionTimeout",
        "StepQueueVisibilityTimeout",
    ] {
        assert!(
            t.parameter(parameter).is_none(),
            "{parameter} serves no resource"
        );
    }
    // Every parameter is used.
    let text = serde_json::to_string(&t.doc["Resources"]).unwrap()
        + &serde_json::to_string(&t.doc["Globals"]).unwrap()
        + &serde_json::to_string(&t.doc["Outputs"]).unwrap()
        + &serde_json::to_string(&t.doc["Conditions"]).unwrap();
    for (name, _) in t.doc["Parameters"].as_object().expect("parameters") {
        assert!(
            text.contains(&format!("{{\"Ref\":\"{name}\"}}"))
                || text.contains(&format!("${{{name}}}")),
            "parameter {name} is not used"
        );
    }
}

#[test]
fn roles_reach_only_their_own_queue_and_the_scheduler_role_only_the_coordinator() {
    let t = Template::load();
    for (queue, function) in feeding_queues(&t) {
        let role = get_att(&t.resource(&function).unwrap()["Properties"]["Role"], "Arn").unwrap();
        let role = &t.resource(role).unwrap()["Properties"];
        let receives: Vec<String> = as_list(&role["Policies"])
            .into_iter()
            .flat_map(|p| as_list(&p["PolicyDocument"]["Statement"]))
            .filter(|s| {
                as_list(&s["Action"])
                    .iter()
                    .any(|a| *a == "sqs:ReceiveMessage")
            })
            .flat_map(|s| as_list(&s["Resource"]))
            .filter_map(|r| get_att(r, "Arn").map(str::to_string))
            .collect();
        assert_eq!(
            receives,
            std::slice::from_ref(&queue),
            "{function} may receive from other queues"
        );
    }
    let scheduler = &t.resource("SchedulerRole").expect("SchedulerRole")["Properties"];
    let grants: Vec<(String, String)> = as_list(&scheduler["Policies"])
        .into_iter()
        .flat_map(|p| as_list(&p["PolicyDocument"]["Statement"]))
        .flat_map(|s| {
            let resources: Vec<String> = as_list(&s["Resource"])
                .iter()
                .map(|r| get_att(r, "Arn").unwrap_or("?").to_string())
                .collect();
            as_list(&s["Action"]).into_iter().flat_map(move |a| {
                let a = a.as_str().unwrap_or_default().to_string();
                resources.clone().into_iter().map(move |r| (a.clone(), r))
            })
        })
        .collect();
    assert_eq!(
        grants,
        [(
            "sqs:SendMessage".to_string(),
            "CoordinatorQueue".to_string()
        )]
    );
    // Only the scheduler may be handed that role.
    for (role, statement) in statements(&t) {
        if as_list(&statement["Action"])
            .iter()
            .any(|a| *a == "iam:PassRole")
        {
            assert_eq!(
                get_att(&statement["Resource"], "Arn"),
                Some("SchedulerRole"),
                "{role}"
            );
            assert_eq!(
                statement["Condition"]["StringEquals"]["iam:PassedToService"],
                "scheduler.amazonaws.com",
                "{role}"
            );
        }
    }
}

/// The binaries of a package directory: its `[[bin]]` targets, `src/bin/*.rs`,
/// and `src/main.rs` under the package's name when no target names it.
fn binaries(package: &str) -> BTreeSet<String> {
    let dir = repo_path(package);
    let manifest: toml::Table = std::fs::read_to_string(dir.join("Cargo.toml"))
        .expect("Cargo.toml")
        .parse()
        .expect("a manifest");
    let mut names: BTreeSet<String> = manifest
        .get("bin")
        .and_then(|b| b.as_array())
        .into_iter()
        .flatten()
        .filter_map(|b| b.get("name")?.as_str().map(str::to_string))
        .collect();
    if names.is_empty() && dir.join("src/main.rs").exists() {
        names.extend(manifest["package"]["name"].as_str().map(str::to_string));
    }
    if let Ok(entries) = std::fs::read_dir(dir.join("src/bin")) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            if let Some(stem) = name.strip_suffix(".rs") {
                names.insert(stem.to_string());
            }
        }
    }
    names
}

#[test]
fn functions_are_cargo_lambda_binaries_on_al2023_with_a_chosen_architecture() {
    let t = Template::load();
    let architecture = t
        .parameter("Architecture")
        .expect("an Architecture parameter");
    assert_eq!(architecture["Default"], "arm64");
    assert_eq!(
        architecture["AllowedValues"],
        serde_json::json!(["arm64", "x86_64"])
    );
    let mut by_package: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (id, function) in functions(&t) {
        assert_eq!(
            t.function_property(function, "Runtime"),
            Some(&Value::from("provided.al2023")),
            "{id}"
        );
        assert_eq!(
            t.function_property(function, "Handler"),
            Some(&Value::from("bootstrap"))
        );
        let architectures = t
            .function_property(function, "Architectures")
            .expect("Architectures");
        assert_eq!(
            as_list(architectures).first().and_then(|a| reference(a)),
            Some("Architecture"),
            "{id}"
        );
        assert_eq!(
            function["Metadata"]["BuildMethod"], "rust-cargolambda",
            "{id}"
        );
        let binary = function["Metadata"]["BuildProperties"]["Binary"]
            .as_str()
            .unwrap_or_else(|| panic!("{id}: no BuildProperties.Binary"));
        let package = function["Properties"]["CodeUri"].as_str().expect("CodeUri");
        assert!(
            binaries(package).contains(binary),
            "{id}: {package} has no binary `{binary}` ({:?})",
            binaries(package)
        );
        by_package
            .entry(package.to_string())
            .or_default()
            .insert(binary.to_string());
    }
    // Every function binary of the packages is deployed.
    for (package, deployed) in by_package {
        assert_eq!(deployed, binaries(&package), "{package}");
    }
}

#[test]
fn sqs_event_sources_report_batch_item_failures_and_cap_concurrency() {
    let t = Template::load();
    for (id, function) in functions(&t) {
        for (name, event) in function["Properties"]["Events"]
            .as_object()
            .into_iter()
            .flatten()
        {
            if event["Type"] != "SQS" {
                continue;
            }
            let p = &event["Properties"];
            assert_eq!(
                p["FunctionResponseTypes"],
                serde_json::json!(["ReportBatchItemFailures"]),
                "{id}.{name}"
            );
            let cap = t.number(&p["ScalingConfig"]["MaximumConcurrency"]);
            assert!(
                cap.as_ref().is_some_and(|c| c.value >= 2.0),
                "{id}.{name}: {cap:?}"
            );
        }
    }
}

/// The `BATON_[A-Z_]+` names in `text`, as a command reading settings out of
/// the outputs' descriptions finds them.
fn baton_names(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("BATON_") {
        let tail = &rest[at + "BATON_".len()..];
        let len = tail
            .find(|c: char| !(c.is_ascii_uppercase() || c == '_'))
            .unwrap_or(tail.len());
        if len > 0 {
            names.push(format!("BATON_{}", &tail[..len]));
        }
        rest = &tail[len..];
    }
    names
}

#[test]
fn queues_and_variables_are_named_as_the_code_looks_them_up() {
    let t = Template::load();
    let (_, coordinator) = function_by_binary(&t, "coordinator");
    let env = environment(&t, coordinator);
    // The API and the coordinator read the same settings.
    for (id, function) in functions(&t) {
        assert_eq!(environment(&t, function), env, "{id}");
    }
    let var = |name: &str| env.get(name).unwrap_or_else(|| panic!("{name} is not set"));
    assert!(
        !env.contains_key("BATON_STEP_QUEUE_PREFIX"),
        "steps have no queues"
    );
    assert_eq!(
        reference(var("BATON_STEP_FUNCTION_PREFIX")),
        Some("StepFunctionPrefix")
    );
    assert_eq!(reference(var("BATON_TABLE")), Some("Table"));
    assert_eq!(
        reference(var("BATON_PAYLOAD_BUCKET")),
        Some("PayloadBucket")
    );
    assert_eq!(
        reference(var("BATON_COORDINATOR_QUEUE_URL")),
        Some("CoordinatorQueue")
    );
    assert_eq!(
        get_att(var("BATON_COORDINATOR_QUEUE_ARN"), "Arn"),
        Some("CoordinatorQueue")
    );
    assert_eq!(reference(var("BATON_EVENT_BUS")), Some("EventBus"));
    assert_eq!(
        reference(var("BATON_SCHEDULE_GROUP")),
        Some("ScheduleGroup")
    );
    assert_eq!(
        get_att(var("BATON_SCHEDULER_ROLE_ARN"), "Arn"),
        Some("SchedulerRole")
    );
    // Every value the parameter allows is one the functions accept.
    assert_eq!(reference(var("BATON_EVENTS")), Some("LifecycleEvents"));
    let events = &t.doc["Parameters"]["LifecycleEvents"];
    assert_eq!(
        events["Default"],
        baton_aws::config::DEFAULT_EVENTS.as_str(),
        "the template's default is the functions' own"
    );
    let allowed: Vec<&str> = events["AllowedValues"]
        .as_array()
        .expect("allowed values")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(allowed, baton_core::EventDetail::NAMES);
    // The settings the functions read all come from the template.
    let vars: BTreeMap<String, String> = env
        .keys()
        .map(|k| {
            let value = if k == "BATON_EVENTS" {
                "all"
            } else {
                "http://placeholder/1/q"
            };
            (k.clone(), value.to_string())
        })
        .collect();
    let settings = baton_aws::AwsSettings::from_map(&vars).expect("the template's variables");
    // BATON_PAYLOAD_LIMIT keeps its default.
    for (name, _) in settings.to_env() {
        assert!(
            vars.contains_key(&name) || name == "BATON_PAYLOAD_LIMIT",
            "{name} is not set"
        );
    }

    let queue_name = |id: &str| names(&t.resource(id).unwrap()["Properties"]["QueueName"]);
    assert_eq!(
        queue_name("CoordinatorQueue").as_deref(),
        Some("${AWS::StackName}-coordinator")
    );
    assert_eq!(
        queue_name("CoordinatorQueueDlq").as_deref(),
        Some("${AWS::StackName}-coordinator-dlq")
    );
}

#[test]
fn outputs_name_the_settings_they_hold_and_export_what_an_app_stack_imports() {
    let t = Template::load();
    let outputs = t.doc["Outputs"].as_object().expect("outputs");
    let keys: BTreeSet<&str> = outputs.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        BTreeSet::from([
            "ApiUrl",
            "TableName",
            "PayloadBucket",
            "CoordinatorQueueUrl",
            "CoordinatorQueueArn",
            "CoordinatorDlqUrl",
            "StepFunctionPrefix",
            "EventBusName",
            "ScheduleGroupName",
            "SchedulerRoleArn",
            "AlarmTopicArn",
        ])
    );
    // Each setting's output carries the variable's name in its description
    // and the value the functions run with.
    let (_, coordinator) = function_by_binary(&t, "coordinator");
    let env = environment(&t, coordinator);
    let mut settings: BTreeMap<String, String> = BTreeMap::new();
    for (key, output) in outputs {
        let description = output["Description"]
            .as_str()
            .unwrap_or_else(|| panic!("{key} has no Description"));
        let names = baton_names(description);
        assert!(names.len() <= 1, "{key} names several settings: {names:?}");
        if let Some(name) = names.into_iter().next() {
            assert_eq!(
                env.get(&name),
                Some(&output["Value"]),
                "{key}: {name} is not what the functions read"
            );
            assert!(settings.insert(name, key.clone()).is_none(), "{key}");
        }
    }
    // Every setting of a resource or of StepFunctionPrefix has its output;
    // BATON_LOG and BATON_EVENTS are the functions' own knobs.
    let expected: BTreeSet<String> = env
        .keys()
        .filter(|name| !["BATON_LOG", "BATON_EVENTS"].contains(&name.as_str()))
        .cloned()
        .collect();
    assert_eq!(settings.keys().cloned().collect::<BTreeSet<_>>(), expected);
    assert_eq!(
        settings
            .get("BATON_STEP_FUNCTION_PREFIX")
            .map(String::as_str),
        Some("StepFunctionPrefix")
    );
    assert_eq!(
        outputs["TableName"]["Description"],
        "The DynamoDB table (BATON_TABLE)."
    );
    assert_eq!(
        settings.get("BATON_PAYLOAD_BUCKET").map(String::as_str),
        Some("PayloadBucket")
    );
    // What an app's stack imports to point its step functions' destinations
    // at the coordinator queue, name them for the coordinator's grant, and
    // let them pass large payloads by reference.
    for key in ["CoordinatorQueueArn", "PayloadBucket", "StepFunctionPrefix"] {
        assert_eq!(
            names(&outputs[key]["Export"]["Name"]).as_deref(),
            Some(format!("${{AWS::StackName}}-{key}").as_str()),
            "{key}"
        );
    }
    let mut exported: Vec<&String> = outputs
        .iter()
        .filter(|(_, o)| o.get("Export").is_some())
        .map(|(k, _)| k)
        .collect();
    exported.sort();
    assert_eq!(
        exported,
        ["CoordinatorQueueArn", "PayloadBucket", "StepFunctionPrefix"]
    );
}

fn names(value: &Value) -> Option<String> {
    value["Fn::Sub"].as_str().map(str::to_string)
}

#[test]
fn the_table_is_on_demand_with_point_in_time_recovery_and_ttl() {
    let t = Template::load();
    let tables: Vec<_> = t.resources_of_type("AWS::DynamoDB::Table").collect();
    assert_eq!(tables.len(), 1);
    let p = &tables[0].1["Properties"];
    assert_eq!(p["BillingMode"], "PAY_PER_REQUEST");
    assert_eq!(
        p["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"],
        true
    );
    assert_eq!(p["TimeToLiveSpecification"]["Enabled"], true);
    assert_eq!(p["TimeToLiveSpecification"]["AttributeName"], "expires");
    let keys: Vec<(&Value, &Value)> = as_list(&p["KeySchema"])
        .iter()
        .map(|k| (&k["AttributeName"], &k["KeyType"]))
        .collect();
    assert_eq!(
        keys,
        [
            (&Value::from("pk"), &Value::from("HASH")),
            (&Value::from("sk"), &Value::from("RANGE"))
        ]
    );
}

#[test]
fn the_payload_bucket_is_private_encrypted_and_expires_payloads_after_their_retention() {
    let t = Template::load();
    let buckets: Vec<_> = t.resources_of_type("AWS::S3::Bucket").collect();
    assert_eq!(buckets.len(), 1);
    let (id, bucket) = buckets[0];
    // Kept, like the table, whose items refer to its objects.
    for policy in ["DeletionPolicy", "UpdateReplacePolicy"] {
        assert_eq!(bucket[policy], "Retain", "{id}: {policy}");
    }
    let p = &bucket["Properties"];
    let block = &p["PublicAccessBlockConfiguration"];
    for setting in [
        "BlockPublicAcls",
        "BlockPublicPolicy",
        "IgnorePublicAcls",
        "RestrictPublicBuckets",
    ] {
        assert_eq!(block[setting], true, "{id}: {setting}");
    }
    assert!(p.get("AccessControl").is_none(), "{id}: a canned ACL");
    assert_eq!(
        t.resources_of_type("AWS::S3::BucketPolicy").count(),
        0,
        "the roles' statements are the bucket's only grants"
    );
    let encryption = as_list(&p["BucketEncryption"]["ServerSideEncryptionConfiguration"]);
    assert_eq!(encryption.len(), 1, "{id}");
    assert_eq!(
        encryption[0]["ServerSideEncryptionByDefault"]["SSEAlgorithm"], "AES256",
        "{id}: SSE-S3"
    );
    // An expiry on a versioned bucket only hides objects behind delete
    // markers: the bucket is not versioned, so it deletes them.
    assert_ne!(
        p["VersioningConfiguration"]["Status"], "Enabled",
        "{id} is versioned"
    );
    // One rule over the payload prefix: expire after the retention, and
    // drop the parts of an upload nobody finished.
    let rules = as_list(&p["LifecycleConfiguration"]["Rules"]);
    assert_eq!(rules.len(), 1, "{id}: {rules:?}");
    let rule = rules[0];
    assert_eq!(rule["Status"], "Enabled");
    assert_eq!(rule["Prefix"], PAYLOAD_PREFIX);
    assert!(
        rule.get("TagFilters").is_none()
            && rule.get("ObjectSizeGreaterThan").is_none()
            && rule.get("ObjectSizeLessThan").is_none(),
        "every payload expires, whatever its tags or size: {rule}"
    );
    let days = t
        .number(&rule["ExpirationInDays"])
        .unwrap_or_else(|| panic!("{id}: ExpirationInDays is not numeric"));
    assert_eq!(days.parameter.as_deref(), Some("PayloadRetentionDays"));
    assert_eq!(days.value, 400.0);
    assert_eq!(days.min, Some(1.0), "{days:?}");
    assert_eq!(
        rule["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"],
        1
    );
    let retention = t
        .parameter("PayloadRetentionDays")
        .expect("a PayloadRetentionDays parameter");
    assert!(
        retention["Description"]
            .as_str()
            .is_some_and(|d| d.contains("longest execution") && d.contains("retention")),
        "{retention}"
    );
    // Every object the functions may write is one the rule expires.
    let granted = resolve_sub(PAYLOAD_OBJECTS_ARN);
    let expired = format!(
        "arn:aws:s3:::demo-payloadbucket-1a2b/{}",
        rule["Prefix"].as_str().unwrap()
    );
    assert!(
        granted.starts_with(&expired),
        "{granted} is not under {expired}"
    );
}

#[test]
fn liveness_function_errors_and_compensation_failures_alarm() {
    let t = Template::load();
    let alarms: Vec<&Value> = t
        .resources_of_type("AWS::CloudWatch::Alarm")
        .map(|(_, a)| a)
        .collect();
    let numeric = |a: &Value| t.number(&a["Properties"]["Threshold"]).is_some();

    let (coordinator_id, coordinator) = function_by_binary(&t, "coordinator");
    let coordinator_queue = feeding_queues(&t)
        .into_iter()
        .find(|(_, f)| f == coordinator_id)
        .map(|(q, _)| q)
        .unwrap();
    assert!(
        alarms.iter().any(
            |a| a["Properties"]["MetricName"] == "ApproximateAgeOfOldestMessage"
                && alarmed_queues(a).contains(&coordinator_queue)
                && numeric(a)
        ),
        "no oldest-message alarm on the coordinator queue"
    );

    for (id, _) in functions(&t) {
        assert!(
            alarms
                .iter()
                .any(|a| a["Properties"]["MetricName"] == "Errors"
                    && as_list(&a["Properties"]["Dimensions"])
                        .iter()
                        .any(|d| d["Name"] == "FunctionName" && reference(&d["Value"]) == Some(id))
                    && numeric(a)),
            "no Errors alarm for {id}"
        );
    }

    let log_group = reference(&coordinator["Properties"]["LoggingConfig"]["LogGroup"])
        .expect("the coordinator logs to a log group of this stack");
    let filters: Vec<&Value> = t
        .resources_of_type("AWS::Logs::MetricFilter")
        .map(|(_, f)| f)
        .filter(|f| reference(&f["Properties"]["LogGroupName"]) == Some(log_group))
        .collect();
    let compensation = filters
        .iter()
        .find(|f| {
            f["Properties"]["FilterPattern"]
                .as_str()
                .is_some_and(|p| p.contains("compensation.failed"))
        })
        .expect("a metric filter for compensation.failed on the coordinator's logs");
    let metric = &as_list(&compensation["Properties"]["MetricTransformations"])[0];
    assert!(
        alarms
            .iter()
            .any(|a| a["Properties"]["MetricName"] == metric["MetricName"]
                && a["Properties"]["Namespace"] == metric["MetricNamespace"]
                && numeric(a)),
        "no alarm on {}",
        metric["MetricName"]
    );
}

#[test]
fn the_http_api_signs_with_iam_and_routes_only_to_the_apis_routes() {
    let t = Template::load();
    let apis: Vec<_> = t.resources_of_type("AWS::Serverless::HttpApi").collect();
    assert_eq!(apis.len(), 1);
    let (api_id, api) = apis[0];
    assert_eq!(api["Properties"]["Auth"]["DefaultAuthorizer"], "AWS_IAM");
    assert_eq!(api["Properties"]["Auth"]["EnableIamAuthorizer"], true);
    let (_, function) = function_by_binary(&t, "api");
    let mut routes = BTreeSet::new();
    for (name, event) in function["Properties"]["Events"]
        .as_object()
        .expect("events")
    {
        assert_eq!(event["Type"], "HttpApi", "{name}");
        let p = &event["Properties"];
        assert_eq!(reference(&p["ApiId"]), Some(api_id), "{name}");
        assert!(
            p.get("Auth").is_none(),
            "{name} overrides the IAM authorizer"
        );
        let method: Method = p["Method"].as_str().unwrap().parse().unwrap();
        let path = p["Path"]
            .as_str()
            .unwrap()
            .replace("{name}", "n")
            .replace("{id}", "i");
        assert!(
            baton_api::routes::resolve(&method, &path, None).is_ok(),
            "{name}: {method} {path} is no route of the API"
        );
        routes.insert((method.to_string(), p["Path"].as_str().unwrap().to_string()));
    }
    // API Gateway refuses a route it does not list before the function sees it.
    let served: BTreeSet<(String, String)> = baton_api::routes::ROUTES
        .iter()
        .map(|r| (r.method.to_string(), r.path.to_string()))
        .collect();
    assert_eq!(routes, served, "the template's routes against the API's");
}

#[test]
fn the_example_schedule_sends_a_start_to_the_coordinator_in_new_york_time() {
    let t = Template::load();
    let schedules: Vec<_> = t.resources_of_type("AWS::Scheduler::Schedule").collect();
    assert_eq!(schedules.len(), 1);
    let p = &schedules[0].1["Properties"];
    // Nightly at 02:00, written as Baton writes `0 2 * * *` for EventBridge.
    assert_eq!(
        p["ScheduleExpression"],
        baton_core::schedule::eventbridge_expression("0 2 * * *").unwrap()
    );
    assert_eq!(p["ScheduleExpressionTimezone"], "America/New_York");
    assert_eq!(reference(&p["GroupName"]), Some("ScheduleGroup"));
    assert_eq!(
        get_att(&p["Target"]["Arn"], "Arn"),
        Some("CoordinatorQueue")
    );
    assert_eq!(
        get_att(&p["Target"]["RoleArn"], "Arn"),
        Some("SchedulerRole")
    );
    // What the scheduler sends for the firing of 9 March 2026, 02:00 EDT.
    let input = p["Target"]["Input"]
        .as_str()
        .expect("Input")
        .replace("<aws.scheduler.scheduled-time>", "2026-03-09T06:00:00Z");
    let message: CoordinatorMessage = serde_json::from_str(&input).expect("a coordinator message");
    let instant = baton_core::schedule::parse_scheduled_time("2026-03-09T06:00:00Z").unwrap();
    let CoordinatorMessage::Start {
        workflow,
        execution_id,
        ..
    } = &message
    else {
        panic!("not a start: {message:?}");
    };
    assert_eq!(workflow, "order-processing");
    assert_eq!(
        execution_id,
        &baton_core::schedule::execution_id("order-processing", "nightly", instant)
    );
    // It is the events/ sample's body, so the sample shows what arrives.
    let sample: Value = serde_json::from_str(
        &std::fs::read_to_string(repo_path("events/scheduler-cron-start.json")).unwrap(),
    )
    .unwrap();
    let body: Value = serde_json::from_str(sample["Records"][0]["body"].as_str().unwrap()).unwrap();
    assert_eq!(body, serde_json::from_str::<Value>(&input).unwrap());
}

#[test]
fn the_dashboard_shows_every_queue_dlq_function_and_the_compensation_metrics_and_no_other() {
    let t = Template::load();
    let stack = |value: &Value| {
        value["Fn::Sub"]
            .as_str()
            .map(|s| s.replace("${AWS::StackName}", "demo"))
            .unwrap_or_else(|| panic!("not a stack-named value: {value}"))
    };
    let text = std::fs::read_to_string(repo_path("infra/dashboard.json"))
        .expect("infra/dashboard.json")
        .replace("${StackName}", "demo")
        .replace("${Region}", "us-east-1");
    let dashboard: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    // Every metric line: [namespace, metric, dimension, value, ..., {options}].
    let lines: Vec<Vec<String>> = as_list(&dashboard["widgets"])
        .into_iter()
        .flat_map(|w| as_list(&w["properties"]["metrics"]))
        .map(|m| {
            as_list(m)
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .collect();
    let shows = |namespace: &str, metric: &str, dimension: Option<(&str, &str)>| {
        lines.iter().any(|l| {
            l.first().map(String::as_str) == Some(namespace)
                && l.get(1).map(String::as_str) == Some(metric)
                && dimension.is_none_or(|(d, v)| {
                    l.get(2).map(String::as_str) == Some(d)
                        && l.get(3).map(String::as_str) == Some(v)
                })
        })
    };
    let dlqs = dlqs(&t);
    let mut deployed: BTreeSet<(String, String)> = BTreeSet::new();
    for (id, queue) in t.resources_of_type("AWS::SQS::Queue") {
        let name = stack(&queue["Properties"]["QueueName"]);
        deployed.insert(("QueueName".to_string(), name.clone()));
        let dimension = Some(("QueueName", name.as_str()));
        assert!(
            shows("AWS/SQS", "ApproximateNumberOfMessagesVisible", dimension),
            "depth of {name}"
        );
        if !dlqs.contains(id) {
            assert!(
                shows("AWS/SQS", "ApproximateAgeOfOldestMessage", dimension),
                "age of {name}"
            );
        }
    }
    for (_, function) in functions(&t) {
        let name = stack(&function["Properties"]["FunctionName"]);
        deployed.insert(("FunctionName".to_string(), name.clone()));
        let dimension = Some(("FunctionName", name.as_str()));
        assert!(shows("AWS/Lambda", "Errors", dimension), "errors of {name}");
        assert!(
            shows("AWS/Lambda", "Duration", dimension),
            "duration of {name}"
        );
    }
    for (_, filter) in t.resources_of_type("AWS::Logs::MetricFilter") {
        let metric = &as_list(&filter["Properties"]["MetricTransformations"])[0];
        let namespace = stack(&metric["MetricNamespace"]);
        let name = metric["MetricName"].as_str().unwrap();
        assert!(shows(&namespace, name, None), "{namespace} {name}");
    }
    // No line shows a queue or function this stack does not deploy (the
    // step functions are watched in their own stacks).
    for line in &lines {
        if let (Some(dimension), Some(value)) = (line.get(2), line.get(3))
            && ["QueueName", "FunctionName"].contains(&dimension.as_str())
        {
            assert!(
                deployed.contains(&(dimension.clone(), value.clone())),
                "the dashboard shows {dimension} {value}, which the stack does not deploy"
            );
        }
    }
}
