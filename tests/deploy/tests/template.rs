//! `template.yaml` against the rules a deployment must keep: every queue that
//! feeds a function dead-letters after a numeric number of receives, every
//! DLQ alarms at a numeric threshold, the coordinator runs as at least two
//! instances, IAM grants no wildcard action, and the names, variables and
//! binaries the template wires up are the ones the code uses.

use std::collections::{BTreeMap, BTreeSet};

use baton_aws::CoordinatorMessage;
use baton_core::WorkflowDefinition;
use baton_core::definition::{Compensate, Format};
use baton_deploy_tests::{Template, as_list, get_att, reference, repo_path};
use http::Method;
use serde_json::Value;

/// The `Resource: "*"` statements the template may contain: role, action,
/// and why AWS requires it.
const RESOURCE_STAR_ALLOWED: &[(&str, &str, &str)] = &[(
    "ApiRole",
    "scheduler:ListSchedules",
    "ListSchedules supports no resource-level permissions; deploying a workflow lists the \
     group's schedules to create, update and delete its own",
)];

/// The Lambda functions: `(logical id, resource)`.
fn functions(t: &Template) -> Vec<(&str, &Value)> {
    t.resources_of_type("AWS::Serverless::Function").collect()
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
    assert_eq!(feeds.len(), 9, "coordinator + 8 step functions: {feeds:?}");
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
    assert_eq!(dlqs.len(), 9, "{dlqs:?}");
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
    assert!(statements.len() > 20, "{}", statements.len());
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

/// The functions the order saga (the workflow this stack deploys) calls,
/// step and compensation.
fn saga_functions() -> BTreeSet<String> {
    let text = std::fs::read_to_string(repo_path("workflows/order-saga.yaml")).expect("the saga");
    let definition = WorkflowDefinition::parse(&text, Format::Yaml).expect("a definition");
    let mut names = BTreeSet::new();
    for (_, step) in definition.steps.iter() {
        names.extend(step.function.clone());
        if let Some(Compensate::Run(compensation)) = &step.compensate {
            names.insert(compensation.function.clone());
        }
    }
    names
}

#[test]
fn queues_and_variables_are_named_as_the_code_looks_them_up() {
    let t = Template::load();
    let env = &t.doc["Globals"]["Function"]["Environment"]["Variables"];
    let names = |value: &Value| value["Fn::Sub"].as_str().map(str::to_string);
    assert_eq!(
        names(&env["BATON_STEP_QUEUE_PREFIX"]).as_deref(),
        Some("${AWS::StackName}-step-")
    );
    assert_eq!(reference(&env["BATON_TABLE"]), Some("Table"));
    assert_eq!(
        reference(&env["BATON_COORDINATOR_QUEUE_URL"]),
        Some("CoordinatorQueue")
    );
    assert_eq!(
        get_att(&env["BATON_COORDINATOR_QUEUE_ARN"], "Arn"),
        Some("CoordinatorQueue")
    );
    assert_eq!(reference(&env["BATON_EVENT_BUS"]), Some("EventBus"));
    assert_eq!(
        reference(&env["BATON_SCHEDULE_GROUP"]),
        Some("ScheduleGroup")
    );
    assert_eq!(
        get_att(&env["BATON_SCHEDULER_ROLE_ARN"], "Arn"),
        Some("SchedulerRole")
    );
    // Every value the parameter allows is one the functions accept.
    assert_eq!(reference(&env["BATON_EVENTS"]), Some("LifecycleEvents"));
    let events = &t.doc["Parameters"]["LifecycleEvents"];
    assert_eq!(events["Default"], "all");
    let allowed: Vec<&str> = events["AllowedValues"]
        .as_array()
        .expect("allowed values")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(allowed, baton_core::EventDetail::NAMES);
    // The settings the functions read all come from the template.
    let vars: BTreeMap<String, String> = env
        .as_object()
        .expect("variables")
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
    for (name, _) in settings.to_env() {
        assert!(
            vars.contains_key(&name) || name == "BATON_PAYLOAD_LIMIT",
            "{name} is not set"
        );
    }

    let queue_name = |id: &str| names(&t.resource(id).unwrap()["Properties"]["QueueName"]);
    let mut step_queues = BTreeSet::new();
    for (queue, function) in feeding_queues(&t) {
        let binary = t.resource(&function).unwrap()["Metadata"]["BuildProperties"]["Binary"]
            .as_str()
            .unwrap()
            .to_string();
        let name = queue_name(&queue).unwrap_or_else(|| panic!("{queue} has no QueueName"));
        let expected = if binary == "coordinator" {
            "${AWS::StackName}-coordinator".to_string()
        } else {
            step_queues.insert(binary.clone());
            format!("${{AWS::StackName}}-step-{binary}")
        };
        assert_eq!(name, expected, "{queue} feeds {function}");
        let dlq = dlq_of(&t, &queue).unwrap();
        assert_eq!(queue_name(dlq), Some(format!("{expected}-dlq")), "{dlq}");
    }
    assert_eq!(
        saga_functions(),
        step_queues,
        "the saga's functions and the step queues"
    );
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
    let mut routes = 0;
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
        routes += 1;
    }
    assert_eq!(routes, 9);
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
fn the_dashboard_shows_every_queue_dlq_function_and_the_compensation_metrics() {
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
    for (id, queue) in t.resources_of_type("AWS::SQS::Queue") {
        let name = stack(&queue["Properties"]["QueueName"]);
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
}
