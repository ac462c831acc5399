//! The `baton` command.
//!
//! Exit codes: 0 success; 1 an operational error; 2 bad input (a malformed
//! definition, input, unknown function, oversized payload: nothing written);
//! for `run` and `follow`: 3 failed, 4 compensated, 5 compensation_failed, 6 cancelled;
//! `signal` exits 1 when the signal was not delivered. A command whose stdout
//! is closed by its reader (`baton list | head -1`) stops quietly with 141.

mod app;
mod aws;
mod dev;
mod display;
mod dlq;
mod emit;
mod follow;
mod run;
mod ui;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::app::BadInput;

#[derive(Parser)]
#[command(
    name = "baton",
    version,
    about = "Durable workflows: validate, graph, run and operate them"
)]
struct Cli {
    /// SQLite database of the embedded backend.
    #[arg(
        long,
        global = true,
        env = "BATON_DB",
        default_value = ".baton/baton.db"
    )]
    db: PathBuf,
    /// Step targets file (which function runs where); optional.
    #[arg(
        long,
        global = true,
        env = "BATON_CONFIG",
        default_value = "baton.toml"
    )]
    config: PathBuf,
    /// Operate on the AWS backend (deploy, start, status, history, list, cancel, signal, dlq) named
    /// by the BATON_* variables or `.baton/aws.env` (written by `baton bootstrap`). `run` and
    /// `worker` have no AWS form and refuse it.
    #[arg(
        long,
        global = true,
        env = "BATON_AWS",
        action = clap::ArgAction::SetTrue,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    aws: bool,
    /// AWS endpoint (moto server, LocalStack); default: the standard AWS_ENDPOINT_URL or AWS itself.
    #[arg(long, global = true)]
    endpoint: Option<String>,
    #[command(subcommand)]
    command: Commands,
}

#[derive(Clone, Copy, ValueEnum)]
enum GraphFormatArg {
    Mermaid,
    Dot,
}

#[derive(Subcommand)]
enum Commands {
    /// Check a definition and report every problem (exit 2 if any).
    Validate {
        file: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Print a definition's graph.
    Graph {
        file: PathBuf,
        #[arg(long, value_enum, default_value = "mermaid")]
        format: GraphFormatArg,
    },
    /// Print the JSON Schema of the definition format.
    Schema,
    /// Register a definition as the next version of its workflow (with `--aws`, on AWS,
    /// where its schedules become EventBridge Scheduler schedules).
    Deploy { file: PathBuf },
    /// Print when each schedule of a definition fires next, in its zone and in UTC.
    Schedules {
        file: PathBuf,
        /// How many fire times per schedule.
        #[arg(long, default_value_t = 5)]
        next: usize,
        /// List the times after this instant (RFC 3339) instead of after now.
        #[arg(long)]
        after: Option<String>,
    },
    /// Start an execution, work it to the end here, and follow its progress (embedded backend
    /// only; on AWS, `baton --aws start`).
    Run {
        file: PathBuf,
        /// JSON input, or @path to a JSON file.
        #[arg(long, default_value = "{}")]
        input: String,
        /// Execution id (default: generated). Running again with the same id resumes it.
        #[arg(long)]
        id: Option<String>,
        /// One JSON object per line instead of text.
        #[arg(long)]
        json: bool,
        /// Workers to run in this process.
        #[arg(long, default_value_t = 1)]
        workers: usize,
    },
    /// Start an execution for `baton worker` to run (with `--aws`, on AWS: the coordinator
    /// dispatches its first steps from here and the stack's coordinator carries it on).
    Start {
        /// A definition file, or the name of a deployed workflow. With `--aws`, the workflow
        /// must be deployed there (`baton --aws deploy FILE`); a file names it by its `name`.
        workflow: String,
        /// JSON input, or @path to a JSON file.
        #[arg(long, default_value = "{}")]
        input: String,
        /// Execution id (default: generated). Starting an existing id creates nothing.
        #[arg(long)]
        id: Option<String>,
        /// Keep the finished execution this long (`7d`) instead of the workflow's `retention`.
        #[arg(long)]
        retention: Option<String>,
        /// Fail the execution, undoing what it did, if it runs longer than this (`1h`),
        /// instead of the workflow's `timeout`.
        #[arg(long)]
        timeout: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Send an EventBridge-style event: every deployed workflow whose `triggers` match it starts
    /// one execution, its id derived from the event's id, so the same id starts nothing twice.
    /// With --aws, put it on the stack's event bus (BATON_EVENT_BUS), whose rules deliver it.
    Emit {
        #[arg(long)]
        source: String,
        #[arg(long)]
        detail_type: String,
        /// The event's detail: a JSON object, or @path to a JSON file.
        #[arg(long, default_value = "{}")]
        detail: String,
        /// The event's id (default: generated; on AWS, EventBridge gives it).
        #[arg(long)]
        id: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Run timers and tasks until interrupted (embedded backend only; on AWS the stack's
    /// coordinator does this).
    Worker {
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        /// Only run these functions (comma-separated).
        #[arg(long, value_delimiter = ',')]
        functions: Vec<String>,
    },
    /// Show an execution's state.
    Status {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Show an execution's progress until it ends (redrawn on a terminal; elsewhere one line per
    /// change). Exits as `run` does: 0 succeeded, 3 failed, 4 compensated, 5 compensation_failed,
    /// 6 cancelled.
    Follow {
        id: String,
        /// How often to look, in milliseconds.
        #[arg(long, default_value_t = 1000)]
        interval_ms: u64,
    },
    /// Show the events an execution went through.
    History {
        id: String,
        #[arg(long)]
        json: bool,
        /// Lifecycle events (step.started, ...) instead of applied engine events.
        #[arg(long)]
        lifecycle: bool,
    },
    /// List executions, newest first.
    List {
        #[arg(long)]
        status: Option<String>,
        /// Only executions of this workflow.
        #[arg(long)]
        workflow: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Continue a listing: the cursor the previous page printed.
        #[arg(long)]
        after: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Delete finished executions whose retention has passed (embedded backend
    /// only; a worker also does this every 10 minutes, and on AWS DynamoDB's
    /// time to live does).
    Gc {
        #[arg(long)]
        json: bool,
    },
    /// Stop an execution and compensate what it did.
    Cancel {
        id: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Run a failed execution again from where it failed: the steps that did not succeed get
    /// fresh attempts under the same idempotency keys (a worker, or on AWS the coordinator,
    /// runs them).
    Redrive {
        id: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Send a signal to an execution.
    Signal {
        id: String,
        name: String,
        /// JSON payload, or @path.
        #[arg(long, default_value = "null")]
        data: String,
        /// Names this signal: sending it again with the same id changes nothing.
        #[arg(long)]
        signal_id: Option<String>,
    },
    /// Inspect and act on dead letters.
    Dlq {
        #[command(subcommand)]
        command: dlq::DlqCommand,
    },
    /// Run the AWS backend locally against an emulator: resources, API, coordinator and step pollers.
    Dev {
        #[arg(long, default_value = "baton")]
        prefix: String,
        /// Port of the HTTP API on 127.0.0.1.
        #[arg(long, default_value_t = 3000)]
        port: u16,
        /// Workflow definitions to deploy.
        files: Vec<PathBuf>,
        #[arg(long, default_value_t = 5)]
        max_receives: u32,
        /// Invoke steps as Lambda functions on the endpoint (an emulator that runs function
        /// code, or AWS) instead of running them in this process.
        #[arg(long)]
        lambda: bool,
    },
    /// Serve the web console on 127.0.0.1: executions (graph, timeline, history, actions),
    /// workflows and dead letters, with the HTTP API under /api. Over the embedded database,
    /// or with `--aws` over the AWS backend with your own credentials.
    Ui {
        /// Port on 127.0.0.1 (0 picks a free one).
        #[arg(long, default_value_t = 3100)]
        port: u16,
    },
    /// Create the table, the coordinator queue with its DLQ, event bus and schedule group on an
    /// emulator or account; or, with `--from-stack`, read them from a deployed stack. Either way
    /// the settings go to `.baton/aws.env` for `baton --aws` commands.
    Bootstrap {
        /// Resource name prefix.
        #[arg(long, default_value = "baton")]
        prefix: String,
        /// The coordinator queue's redrive limit (maxReceiveCount).
        #[arg(long, default_value_t = 5)]
        max_receives: u32,
        /// Create nothing: take the settings from this CloudFormation stack's outputs (each
        /// output's description names the BATON_* variable its value sets).
        #[arg(long, value_name = "STACK", conflicts_with_all = ["prefix", "max_receives"])]
        from_stack: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `run` shows progress itself; a worker's log is its only output.
    app::init_tracing(match cli.command {
        Commands::Worker { .. } => "info",
        Commands::Run { .. } => "error",
        _ => "warn",
    });
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            display::errln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            if error.downcast_ref::<display::StdoutClosed>().is_some() {
                // The reader has what it wanted; there is no one to tell.
                ExitCode::from(display::STDOUT_CLOSED_CODE)
            } else if let Some(bad) = error.downcast_ref::<BadInput>() {
                display::errln!("error: {bad}");
                ExitCode::from(2)
            } else {
                display::errln!("error: {error:#}");
                ExitCode::from(1)
            }
        }
    }
}

/// The AWS backend when `--aws` was given.
async fn aws_backend(
    aws: bool,
    endpoint: Option<&str>,
    db: &std::path::Path,
) -> anyhow::Result<Option<std::sync::Arc<baton_aws::AwsBackend>>> {
    if !aws {
        return Ok(None);
    }
    Ok(Some(std::sync::Arc::new(aws::backend(endpoint, db).await?)))
}

/// Refuses `--aws` for a command that would otherwise quietly run on the
/// embedded backend.
fn embedded_only(aws: bool, command: &str, instead: &str) -> anyhow::Result<()> {
    if aws {
        return Err(app::bad(format!(
            "`baton {command}` runs on the embedded backend only and has no AWS form (--aws or BATON_AWS is set): {instead}"
        )));
    }
    Ok(())
}

async fn dispatch(cli: Cli) -> anyhow::Result<u8> {
    let Cli {
        db,
        config,
        aws,
        endpoint,
        command,
    } = cli;
    match command {
        Commands::Validate { file, json } => app::validate(&file, json),
        Commands::Graph { file, format } => {
            let workflow = app::load_workflow(&file)?;
            let format = match format {
                GraphFormatArg::Mermaid => baton_core::graph::GraphFormat::Mermaid,
                GraphFormatArg::Dot => baton_core::graph::GraphFormat::Dot,
            };
            display::out!("{}", baton_core::graph::render(&workflow, format));
            Ok(0)
        }
        Commands::Schema => {
            display::out!("{}", baton_core::schema::workflow_schema_json());
            Ok(0)
        }
        Commands::Deploy { file } => match aws_backend(aws, endpoint.as_deref(), &db).await? {
            Some(b) => app::deploy(b.as_ref(), &file).await,
            None => app::deploy(app::open_backend(&db)?.as_ref(), &file).await,
        },
        Commands::Schedules { file, next, after } => app::schedules(&file, next, after.as_deref()),
        Commands::Run {
            file,
            input,
            id,
            json,
            workers,
        } => {
            embedded_only(
                aws,
                "run",
                "start it on AWS with `baton --aws start WORKFLOW` and follow it with `baton --aws status ID`",
            )?;
            run::run(&db, &config, &file, &input, id, json, workers).await
        }
        Commands::Start {
            workflow,
            input,
            id,
            retention,
            timeout,
            json,
        } => {
            let settings = app::StartSettings {
                retention: retention.as_deref(),
                timeout: timeout.as_deref(),
            };
            match aws_backend(aws, endpoint.as_deref(), &db).await? {
                Some(b) => app::start_aws(b, &workflow, &input, id, settings, json).await,
                None => app::start(&db, &config, &workflow, &input, id, settings, json).await,
            }
        }
        Commands::Emit {
            source,
            detail_type,
            detail,
            id,
            json,
        } => {
            let args = emit::EmitArgs {
                source: &source,
                detail_type: &detail_type,
                detail: &detail,
                id: id.as_deref(),
                json,
            };
            if aws {
                emit::check_aws_args(&args)?;
            }
            match aws_backend(aws, endpoint.as_deref(), &db).await? {
                Some(b) => emit::emit_aws(b, args).await,
                None => emit::emit(&db, args).await,
            }
        }
        Commands::Worker {
            concurrency,
            functions,
        } => {
            embedded_only(
                aws,
                "worker",
                "on AWS the stack's coordinator function runs executions; deploy the stack (template.yaml), or use `baton dev` against an emulator",
            )?;
            app::worker(&db, &config, concurrency, functions).await
        }
        Commands::Status { id, json } => match aws_backend(aws, endpoint.as_deref(), &db).await? {
            Some(b) => app::status(b.as_ref(), &id, json).await,
            None => app::status(app::open_backend(&db)?.as_ref(), &id, json).await,
        },
        Commands::Follow { id, interval_ms } => {
            let interval = std::time::Duration::from_millis(interval_ms.max(10));
            match aws_backend(aws, endpoint.as_deref(), &db).await? {
                Some(b) => follow::follow(b.as_ref(), &id, interval).await,
                None => follow::follow(app::open_backend(&db)?.as_ref(), &id, interval).await,
            }
        }
        Commands::History {
            id,
            json,
            lifecycle,
        } => match aws_backend(aws, endpoint.as_deref(), &db).await? {
            Some(b) => app::history(b.as_ref(), None, &id, json, lifecycle).await,
            None => {
                let b = app::open_backend(&db)?;
                app::history(b.as_ref(), Some(b.as_ref()), &id, json, lifecycle).await
            }
        },
        Commands::List {
            status,
            workflow,
            limit,
            after,
            json,
        } => {
            let filter = app::ListFilter {
                status,
                workflow,
                limit,
                after,
            };
            match aws_backend(aws, endpoint.as_deref(), &db).await? {
                Some(b) => app::list(b.as_ref(), &filter, json).await,
                None => app::list(app::open_backend(&db)?.as_ref(), &filter, json).await,
            }
        }
        Commands::Gc { json } => {
            embedded_only(
                aws,
                "gc",
                "on AWS, DynamoDB deletes a finished execution's items once their `expires` time passes",
            )?;
            app::gc(app::open_backend(&db)?.as_ref(), json).await
        }
        Commands::Cancel { id, reason } => {
            match aws_backend(aws, endpoint.as_deref(), &db).await? {
                Some(b) => app::cancel(b, &id, reason).await,
                None => app::cancel(app::open_backend(&db)?, &id, reason).await,
            }
        }
        Commands::Redrive { id, reason } => {
            match aws_backend(aws, endpoint.as_deref(), &db).await? {
                Some(b) => app::redrive(b, &id, reason).await,
                None => app::redrive(app::open_backend(&db)?, &id, reason).await,
            }
        }
        Commands::Signal {
            id,
            name,
            data,
            signal_id,
        } => match aws_backend(aws, endpoint.as_deref(), &db).await? {
            Some(b) => app::signal(b, &id, &name, &data, signal_id).await,
            None => app::signal(app::open_backend(&db)?, &id, &name, &data, signal_id).await,
        },
        Commands::Dlq { command } => match aws_backend(aws, endpoint.as_deref(), &db).await? {
            Some(b) => {
                let endpoint = aws::resolved_endpoint(endpoint.as_deref(), &db);
                dlq::dlq(b, dlq::Runner::Lambda { endpoint }, command).await
            }
            None => {
                let runner = dlq::Runner::Local {
                    db: &db,
                    config: &config,
                };
                dlq::dlq(app::open_backend(&db)?, runner, command).await
            }
        },
        Commands::Dev {
            prefix,
            port,
            files,
            max_receives,
            lambda,
        } => {
            let options = dev::DevOptions {
                endpoint,
                prefix,
                port,
                files,
                max_receives,
                lambda,
            };
            dev::dev(&db, &config, options).await
        }
        Commands::Ui { port } => {
            let redrive = ui::Redrive {
                db: db.clone(),
                config: config.clone(),
                aws,
                endpoint: endpoint.clone(),
            };
            match aws_backend(aws, endpoint.as_deref(), &db).await? {
                Some(b) => ui::ui(b, None, redrive, port).await,
                None => {
                    let b = app::open_backend(&db)?;
                    ui::ui(b.clone(), Some(b), redrive, port).await
                }
            }
        }
        Commands::Bootstrap {
            prefix,
            max_receives,
            from_stack,
        } => match from_stack {
            Some(stack) => aws::bootstrap_from_stack(endpoint.as_deref(), &db, &stack).await,
            None => aws::bootstrap_command(endpoint.as_deref(), &db, &prefix, max_receives).await,
        },
    }
}
