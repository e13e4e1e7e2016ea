//! fog-coordinator command line: parse, set up logging, call the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use fog_coordinator::config::{CoordinatorConfig, DEFAULT_CONFIG};
use fog_coordinator::{broker, client, demo, service, status};
use fog_proto::Topics;
use fog_rt::{broker::BrokerConfig, config::ConfigError};
use tokio_util::sync::CancellationToken;

/// mimalloc, not glibc's malloc: the coordinator allocates a task's records on its
/// main thread and frees many of them on the journal thread, and glibc's cross-thread
/// frees (taking the owning arena's lock) were 17 % of the journal thread and much of
/// the main thread's time under load (docs/performance.md). The agent keeps glibc's:
/// there every resident KiB counts and the hot path does not allocate per task.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const EXIT_CONFIG: u8 = 78;

#[derive(Parser)]
#[command(
    name = "fog-coordinator",
    version,
    about = "fog coordinator-lite: registry, CLI and embedded broker"
)]
struct Cli {
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
    Serve {
        #[command(flatten)]
        common: Common,
        /// Also run an embedded MQTT broker on this address (e.g. 0.0.0.0:1883) and use it.
        #[arg(long, value_name = "ADDR")]
        embedded_broker: Option<SocketAddr>,
        /// Task journal directory (overrides `data_dir`; "" keeps task state in memory).
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
    },
    /// Print the fleet as the coordinator sees it.
    Status {
        #[command(flatten)]
        common: Common,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        /// Seconds to wait for the coordinator's status.
        #[arg(long, default_value_t = 5.0)]
        timeout: f64,
    },
    /// List running, recently ended and dead-lettered tasks (all three by default).
    Tasks {
        #[command(flatten)]
        common: Common,
        /// Only tasks in flight (placed or waiting for a node).
        #[arg(long)]
        running: bool,
        /// Only tasks that ended recently.
        #[arg(long)]
        recent: bool,
        /// Only dead-lettered tasks (out of attempts).
        #[arg(long)]
        dead: bool,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        #[arg(long, default_value_t = 5.0)]
        timeout: f64,
    },
    /// Submit a task and print its result (output on stdout, status on stderr).
    Submit {
        #[command(flatten)]
        common: Common,
        /// Task kind (echo, sha256, sleep, or a command the agents declare).
        #[arg(long)]
        kind: String,
        /// The payload as text.
        #[arg(long, conflicts_with = "payload_file")]
        payload: Option<String>,
        /// Read the payload from a file ("-" for stdin).
        #[arg(long, value_name = "PATH")]
        payload_file: Option<PathBuf>,
        /// Read the payload from stdin (same as --payload-file -).
        #[arg(value_name = "-", hide = true)]
        stdin: Option<String>,
        #[arg(long, default_value_t = 0)]
        priority: u8,
        /// Seconds the task may run.
        #[arg(long, default_value_t = 60.0)]
        timeout: f64,
        /// Answer from the agents' content cache when the same kind and payload ran before.
        #[arg(long)]
        cacheable: bool,
        /// Wait for the result (otherwise print the task id once submitted).
        #[arg(long)]
        wait: bool,
    },
    /// Submit a load of tasks and report throughput, latency and lost/duplicated results.
    Bench {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 10_000)]
        tasks: usize,
        #[arg(long, default_value_t = 256)]
        concurrency: usize,
        #[arg(long, default_value = "sha256")]
        kind: String,
        #[arg(long, default_value_t = 1024)]
        payload_bytes: usize,
        /// Seconds without any result before the rest count as lost.
        #[arg(long, default_value_t = 30.0)]
        wait: f64,
        /// Placement strategy for every task (default: the coordinator's): round_robin,
        /// weighted_round_robin, least_connections, response_time, consistent_hash,
        /// p2c, adaptive.
        #[arg(long)]
        strategy: Option<fog_coordinator::placement::Strategy>,
        /// Run against a fleet started in this process (embedded broker, coordinator
        /// and N agents) instead of the configured broker.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=64))]
        fleet: Option<u16>,
        /// Kill one agent of the --fleet (as a crash would) this many seconds into the
        /// run, to show a failover under load.
        #[arg(long, value_name = "SECS", requires = "fleet")]
        kill_agent_after: Option<f64>,
    },
    /// Broker, coordinator and agents in one process with a live view.
    Demo {
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=200))]
        agents: u16,
        /// Stop after this many seconds (default: run until Ctrl-C).
        #[arg(long)]
        duration: Option<f64>,
        /// Tasks per second the demo submits (sha256, echo, sleep); 0 for none.
        #[arg(long, default_value_t = 50)]
        tasks_per_sec: u16,
    },
    /// Run only the embedded MQTT broker (for tests and single-machine sites).
    Broker {
        #[arg(long, default_value = "127.0.0.1:1883")]
        listen: SocketAddr,
    },
    /// Print the default config with every key documented.
    PrintDefaultConfig,
}

/// The coordinator's retained status, or a clear error and a failing exit code.
async fn fetch_status(
    cfg: &CoordinatorConfig,
    timeout: Duration,
) -> Result<fog_proto::CoordinatorStatus, ExitCode> {
    status::fetch(&cfg.broker, &Topics::new(cfg.prefix.clone()), timeout)
        .await
        .map_err(|e| {
            eprintln!("fog-coordinator: {e}");
            ExitCode::FAILURE
        })
}

fn print_json(v: &impl serde::Serialize) -> Result<(), ExitCode> {
    let text = serde_json::to_string_pretty(v).map_err(|e| {
        eprintln!("fog-coordinator: {e}");
        ExitCode::FAILURE
    })?;
    println!("{text}");
    Ok(())
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

fn main() -> ExitCode {
    match real_main() {
        Ok(code) | Err(code) => code,
    }
}

fn real_main() -> Result<ExitCode, ExitCode> {
    let cli = Cli::parse();
    let config_err = |e: ConfigError| {
        eprintln!("fog-coordinator: {e}");
        ExitCode::from(EXIT_CONFIG)
    };
    match cli.command {
        Command::PrintDefaultConfig => {
            print!("{DEFAULT_CONFIG}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Broker { listen } => {
            fog_rt::logging::init("FOG_LOG", "info,rumqttd=warn");
            broker::EmbeddedBroker::start(listen).map_err(|e| {
                eprintln!("fog-coordinator: {e}");
                ExitCode::FAILURE
            })?;
            println!("listening on {listen}");
            loop {
                std::thread::park();
            }
        }
        Command::Serve {
            common,
            embedded_broker,
            data_dir,
        } => {
            fog_rt::logging::init("FOG_LOG", "info,rumqttd=warn");
            let mut cfg = load(&common).map_err(config_err)?;
            if let Some(dir) = data_dir {
                cfg.data_dir = (!dir.as_os_str().is_empty()).then_some(dir);
            }
            runtime()?.block_on(async move {
                if let Some(addr) = embedded_broker {
                    let b = broker::EmbeddedBroker::start(addr).map_err(|e| {
                        eprintln!("fog-coordinator: {e}");
                        ExitCode::FAILURE
                    })?;
                    // Connect to it over loopback even when it listens on all interfaces.
                    let local = SocketAddr::from(([127, 0, 0, 1], b.addr.port()));
                    cfg.broker = BrokerConfig {
                        keep_alive: cfg.broker.keep_alive,
                        ..BrokerConfig::plain(&format!("mqtt://{local}")).map_err(config_err)?
                    };
                }
                let shutdown = CancellationToken::new();
                tokio::spawn(fog_rt::signals::shutdown_on_signals(shutdown.clone()));
                let (view, _rx) = tokio::sync::watch::channel(service::empty_snapshot());
                // READY/STATUS/WATCHDOG/STOPPING for the systemd unit (Type=notify); a
                // no-op when not started by systemd.
                let notifier = fog_rt::sdnotify::Notifier::from_env();
                service::serve_with(cfg, shutdown, view, notifier)
                    .await
                    .map_err(|e| {
                        tracing::error!(error = %e, "fog-coordinator stopped");
                        ExitCode::FAILURE
                    })?;
                Ok(ExitCode::SUCCESS)
            })
        }
        Command::Status {
            common,
            json,
            timeout,
        } => {
            fog_rt::logging::init("FOG_LOG", "warn,rumqttd=warn");
            let cfg = load(&common).map_err(config_err)?;
            let timeout = Duration::from_secs_f64(timeout.clamp(0.1, 600.0));
            runtime()?.block_on(async move {
                let s = fetch_status(&cfg, timeout).await?;
                if json {
                    print_json(&s)?;
                } else {
                    print!("{}", status::render_table(&s, fog_rt::clock::now_ms()));
                }
                Ok(ExitCode::SUCCESS)
            })
        }
        Command::Tasks {
            common,
            running,
            recent,
            dead,
            json,
            timeout,
        } => {
            fog_rt::logging::init("FOG_LOG", "warn,rumqttd=warn");
            let cfg = load(&common).map_err(config_err)?;
            let timeout = Duration::from_secs_f64(timeout.clamp(0.1, 600.0));
            let all = !(running || recent || dead);
            let which = status::TaskLists {
                running: all || running,
                recent: all || recent,
                dead: all || dead,
            };
            runtime()?.block_on(async move {
                let s = fetch_status(&cfg, timeout).await?;
                if json {
                    let pick = |on: bool, v: &Vec<fog_proto::TaskSummary>| {
                        if on {
                            v.clone()
                        } else {
                            Vec::new()
                        }
                    };
                    let out = serde_json::json!({
                        "running": pick(which.running, &s.running),
                        "recent": pick(which.recent, &s.recent),
                        "dead": pick(which.dead, &s.dead),
                    });
                    print_json(&out)?;
                } else {
                    print!(
                        "{}",
                        status::render_tasks(&s, fog_rt::clock::now_ms(), which)
                    );
                }
                Ok(ExitCode::SUCCESS)
            })
        }
        Command::Submit {
            common,
            kind,
            payload,
            payload_file,
            stdin,
            priority,
            timeout,
            cacheable,
            wait,
        } => {
            fog_rt::logging::init("FOG_LOG", "warn,rumqttd=warn");
            let cfg = load(&common).map_err(config_err)?;
            let bytes = match (payload, payload_file.as_deref(), stdin.as_deref()) {
                (Some(p), None, None) => p.into_bytes(),
                (None, Some(p), None) if p.as_os_str() == "-" => read_stdin()?,
                (None, None, Some("-")) => read_stdin()?,
                (None, Some(p), None) => std::fs::read(p).map_err(|e| {
                    eprintln!("fog-coordinator: reading {}: {e}", p.display());
                    ExitCode::from(66)
                })?,
                _ => {
                    eprintln!("fog-coordinator: give exactly one of --payload TEXT, --payload-file PATH or - (stdin)");
                    return Err(ExitCode::from(2));
                }
            };
            if !(timeout.is_finite() && timeout > 0.0) {
                eprintln!("fog-coordinator: --timeout must be a positive number of seconds");
                return Err(ExitCode::from(2));
            }
            let timeout = Duration::from_secs_f64(timeout.min(86_400.0));
            runtime()?.block_on(async move {
                let fail = |e: fog_coordinator::client::ClientError| {
                    eprintln!("fog-coordinator: {e}");
                    ExitCode::FAILURE
                };
                let mut c = client::Client::connect(
                    &cfg.broker,
                    Topics::new(cfg.prefix.clone()),
                    Duration::from_secs(10),
                )
                .await
                .map_err(fail)?;
                let sub = client::submission(&kind, bytes, priority, timeout, cacheable);
                if !wait {
                    let id = c.submit(sub).await.map_err(fail)?;
                    c.close().await;
                    println!("{id}");
                    return Ok(ExitCode::SUCCESS);
                }
                let r = client::submit_and_wait(&mut c, sub, timeout + Duration::from_secs(30))
                    .await
                    .map_err(fail)?;
                c.close().await;
                Ok(print_result(&r))
            })
        }
        Command::Bench {
            common,
            tasks,
            concurrency,
            kind,
            payload_bytes,
            wait,
            strategy,
            fleet,
            kill_agent_after,
        } => {
            fog_rt::logging::init("FOG_LOG", "warn,rumqttd=off");
            let cfg = load(&common).map_err(config_err)?;
            runtime()?.block_on(async move {
                let fail = |e: &dyn std::fmt::Display| {
                    eprintln!("fog-coordinator: {e}");
                    ExitCode::FAILURE
                };
                let mut local = match fleet {
                    Some(n) => {
                        eprintln!("starting a fleet of {n} agents in this process...");
                        Some(
                            fog_coordinator::fleet::Fleet::start(usize::from(n), cfg.placement.clone())
                                .await
                                .map_err(|e| fail(&e))?,
                        )
                    }
                    None => None,
                };
                let broker = local.as_ref().map_or(cfg.broker.clone(), |f| f.broker_cfg.clone());
                let mut c = client::Client::connect(
                    &broker,
                    Topics::new(cfg.prefix.clone()),
                    Duration::from_secs(10),
                )
                .await
                .map_err(|e| fail(&e))?
                // Submissions go out in the config's encoding, like everything else the
                // coordinator's side publishes.
                .encoding(cfg.encoding);
                let opts = client::BenchOptions {
                    kind,
                    tasks,
                    concurrency,
                    payload_bytes,
                    wait: Duration::from_secs_f64(wait.clamp(0.1, 3600.0)),
                    strategy: strategy.map(|s| s.to_string()).unwrap_or_default(),
                    progress: true,
                };
                let (report, killed) = {
                    let run = client::bench(&mut c, &opts);
                    tokio::pin!(run);
                    let kill_at = tokio::time::sleep(Duration::from_secs_f64(
                        kill_agent_after.unwrap_or(0.0).clamp(0.0, 86_400.0),
                    ));
                    tokio::pin!(kill_at);
                    let mut killed: Option<String> = None;
                    let report = loop {
                        tokio::select! {
                            r = &mut run => break r.map_err(|e| fail(&e))?,
                            _ = &mut kill_at, if kill_agent_after.is_some() && killed.is_none() => {
                                killed = local.as_mut().and_then(|f| f.kill_one());
                                if let Some(node) = &killed {
                                    eprintln!("\nkilled agent {node} (its connection dropped without a goodbye)");
                                }
                            }
                        }
                    };
                    (report, killed)
                };
                c.close().await;
                println!("{report}");
                if let Some(f) = local {
                    // One more snapshot so the counters include the end of the run.
                    tokio::time::sleep(Duration::from_millis(600)).await;
                    let s = f.snapshot();
                    let get = |k: &str| s.counters.get(k).copied().unwrap_or(0);
                    if let Some(node) = &killed {
                        println!(
                            "failover: {node} killed; {} tasks it held were placed again elsewhere ({} re-placements in all, {} dead-lettered)",
                            get("tasks_node_lost_total"),
                            get("tasks_replaced_total"),
                            get("tasks_dead_lettered_total"),
                        );
                    }
                    f.stop().await;
                }
                Ok(if report.lost == 0 && report.duplicated == 0 {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                })
            })
        }
        Command::Demo {
            agents,
            duration,
            tasks_per_sec,
        } => {
            fog_rt::logging::init("FOG_LOG", "warn,rumqttd=off");
            let duration = match duration {
                Some(d) if !(d.is_finite() && d > 0.0) => {
                    eprintln!("fog-coordinator: --duration must be a positive number of seconds");
                    return Err(ExitCode::from(2));
                }
                d => d.map(Duration::from_secs_f64),
            };
            runtime()?.block_on(async move {
                let shutdown = CancellationToken::new();
                tokio::spawn(fog_rt::signals::shutdown_on_signals(shutdown.clone()));
                let opts = demo::DemoOptions {
                    agents: agents.into(),
                    duration,
                    redraw: demo::stdout_is_terminal(),
                    show: true,
                    tasks_per_sec: tasks_per_sec.into(),
                };
                let summary = demo::run(opts, shutdown).await.map_err(|e| {
                    eprintln!("fog-coordinator: {e}");
                    ExitCode::FAILURE
                })?;
                println!("{summary}");
                Ok(ExitCode::SUCCESS)
            })
        }
    }
}

fn read_stdin() -> Result<Vec<u8>, ExitCode> {
    use std::io::Read as _;
    let mut v = Vec::new();
    std::io::stdin().read_to_end(&mut v).map_err(|e| {
        eprintln!("fog-coordinator: reading stdin: {e}");
        ExitCode::from(66)
    })?;
    Ok(v)
}

/// Output to stdout, status and timings to stderr; non-zero exit unless completed.
fn print_result(r: &fog_proto::TaskResult) -> ExitCode {
    use fog_proto::Outcome;
    use std::io::Write as _;
    match &r.outcome {
        Outcome::Completed {
            output,
            truncated,
            exit_code,
            duration_ms,
            cpu_ms,
            peak_rss_bytes,
            from_cache,
        } => {
            let _ = std::io::stdout().write_all(&output.0);
            let _ = std::io::stdout().flush();
            eprintln!(
                "completed on {} (attempt {}): {duration_ms} ms wall, {cpu_ms} ms cpu, peak rss {peak_rss_bytes} B{}{}{}",
                r.node,
                r.attempt,
                exit_code.map(|c| format!(", exit {c}")).unwrap_or_default(),
                if *truncated { ", output truncated" } else { "" },
                if *from_cache { ", from cache" } else { "" },
            );
            ExitCode::SUCCESS
        }
        Outcome::Failed {
            error,
            retryable,
            exit_code,
            duration_ms,
        } => {
            eprintln!(
                "failed on {} after {duration_ms} ms{}{}: {error}",
                r.node,
                exit_code
                    .map(|c| format!(" (exit {c})"))
                    .unwrap_or_default(),
                if *retryable { " (retryable)" } else { "" }
            );
            ExitCode::FAILURE
        }
        Outcome::TimedOut { after_ms } => {
            eprintln!("timed out on {} after {after_ms} ms", r.node);
            ExitCode::FAILURE
        }
        Outcome::Rejected { reason, retryable } => {
            eprintln!(
                "rejected by {}: {reason}{}",
                r.node,
                if *retryable { " (retryable)" } else { "" }
            );
            ExitCode::FAILURE
        }
        Outcome::Accepted => {
            eprintln!("accepted by {} but no final result", r.node);
            ExitCode::FAILURE
        }
    }
}
