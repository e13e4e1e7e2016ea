//! The subcommands, one file each, and what they share: the common flags, loading the
//! config, the runtime, and the exit codes.
//!
//! Exit codes: 0 success, 1 a runtime failure, 2 a usage error (also clap's), 66 an
//! unreadable input, 78 a bad config.

mod bench;
mod broker;
mod broker_config;
mod demo;
mod drain;
mod http;
mod keys;
mod nodes;
mod report;
mod serve;
mod status;
mod submit;
mod tasks;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use fog_coordinator::config::{CoordinatorConfig, DEFAULT_CONFIG};
use fog_coordinator::status as snapshot;
use fog_proto::Topics;
use fog_rt::config::ConfigError;

/// A config that cannot be used.
const EXIT_CONFIG: u8 = 78;
/// Flags that do not make sense together, or a value out of range.
const EXIT_USAGE: u8 = 2;
/// An input file (or stdin) that cannot be read.
const EXIT_NO_INPUT: u8 = 66;

#[derive(Parser)]
#[command(
    name = "fog-coordinator",
    version,
    about = "fog coordinator-lite: registry, CLI and embedded broker"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args)]
struct Common {
    /// Config file (see print-default-config); defaults apply without one.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Broker URL, overriding the config's scheme, host and port only (mqtt://host:port
    /// or mqtts://host:port); TLS files and credentials from the config are kept.
    #[arg(long)]
    broker: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Keep the registry of agents and publish the coordinator status.
    Serve(serve::Args),
    /// Print the fleet as the coordinator sees it.
    Status(status::Args),
    /// List running, recently ended and dead-lettered tasks (all three by default).
    Tasks(tasks::Args),
    /// Submit a task and print its result (output on stdout, status on stderr).
    Submit(submit::Args),
    /// Submit a load of tasks and report throughput, latency and lost/duplicated results.
    Bench(bench::Args),
    /// Broker, coordinator and agents in one process with a live view.
    Demo(demo::Args),
    /// Run only the embedded MQTT broker (for tests and single-machine sites).
    Broker(broker::Args),
    /// Write a Mosquitto ACL, password file, credentials and listener for the site's
    /// nodes, clients and coordinator.
    BrokerConfig(broker_config::Args),
    /// Keys: the coordinator's signing key (`keys init`, `keys show`) and client keys (`keys client NAME`).
    Keys(keys::Args),
    /// Node keys: list the approved and the waiting ones, approve or revoke one.
    Nodes(nodes::Args),
    /// Drain a node (place nothing new there; what runs finishes), or `--undo`, through
    /// the coordinator's HTTP API, signed with a client key.
    Drain(drain::Args),
    /// Write a self-contained HTML report (fleet, throughput, task profiles,
    /// bottlenecks) from a running coordinator's HTTP API.
    Report(report::Args),
    /// Print the default config with every key documented.
    PrintDefaultConfig,
}

/// Run the subcommand; its exit code.
pub fn run(cli: Cli) -> ExitCode {
    let res = match cli.command {
        Command::PrintDefaultConfig => {
            print!("{DEFAULT_CONFIG}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Broker(a) => broker::run(&a),
        Command::BrokerConfig(a) => broker_config::run(&a),
        Command::Serve(a) => serve::run(a),
        Command::Status(a) => status::run(&a),
        Command::Tasks(a) => tasks::run(&a),
        Command::Submit(a) => submit::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Demo(a) => demo::run(&a),
        Command::Keys(a) => keys::run(a),
        Command::Nodes(a) => nodes::run(&a),
        Command::Report(a) => report::run(&a),
        Command::Drain(a) => drain::run(&a),
    };
    match res {
        Ok(code) | Err(code) => code,
    }
}

/// A bad config: said on stderr, exit 78.
fn config_err(e: ConfigError) -> ExitCode {
    eprintln!("fog-coordinator: {e}");
    ExitCode::from(EXIT_CONFIG)
}

/// A runtime failure: said on stderr, exit 1.
fn failure(e: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("fog-coordinator: {e}");
    ExitCode::FAILURE
}

/// A usage error: said on stderr, exit 2.
fn usage(message: &str) -> ExitCode {
    eprintln!("fog-coordinator: {message}");
    ExitCode::from(EXIT_USAGE)
}

/// What a subcommand that runs agents in this process says when the binary was built
/// without them.
#[cfg(not(feature = "demo"))]
fn needs_demo_feature(what: &str) -> ExitCode {
    usage(&format!(
        "{what} runs agents in this process, and this binary was built without the `demo` feature (rebuild with `--features demo`)"
    ))
}

fn load(common: &Common) -> Result<CoordinatorConfig, ConfigError> {
    let mut cfg = match &common.config {
        Some(p) => CoordinatorConfig::load(p)?,
        None => CoordinatorConfig::from_toml("", "<defaults>")?,
    };
    if let Some(url) = &common.broker {
        cfg.broker = cfg.broker.with_url(url, "--broker")?;
    }
    Ok(cfg)
}

fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("fog-coordinator: starting runtime: {e}");
            ExitCode::FAILURE
        })
}

/// The coordinator's retained status, or a clear error and a failing exit code.
/// `status` and `tasks`: load the config and fetch the coordinator's retained
/// snapshot, waiting at most `timeout_secs` (clamped to 0.1 to 600).
fn fetch_snapshot(
    common: &Common,
    timeout_secs: f64,
) -> Result<fog_proto::CoordinatorStatus, ExitCode> {
    fog_rt::logging::init("FOG_LOG", "warn,rumqttd=warn");
    let cfg = load(common).map_err(config_err)?;
    let timeout = Duration::from_secs_f64(timeout_secs.clamp(0.1, 600.0));
    let topics = Topics::new(cfg.prefix.clone());
    runtime()?.block_on(async move {
        snapshot::fetch(&cfg.broker, &topics, timeout)
            .await
            .map_err(|e| failure(&e))
    })
}

fn print_json(v: &impl serde::Serialize) -> Result<(), ExitCode> {
    let text = serde_json::to_string_pretty(v).map_err(|e| failure(&e))?;
    println!("{text}");
    Ok(())
}
