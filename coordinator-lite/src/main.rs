//! fog-coordinator command line: parse, set up logging, call the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use fog_agent::config::{BrokerConfig, ConfigError};
use fog_coordinator::config::{CoordinatorConfig, DEFAULT_CONFIG};
use fog_coordinator::{broker, demo, service, status};
use fog_proto::Topics;
use tokio_util::sync::CancellationToken;

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
    /// Broker URL, overriding the config (mqtt://host:port or mqtts://host:port).
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
    /// Broker, coordinator and agents in one process with a live view.
    Demo {
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=200))]
        agents: u16,
        /// Stop after this many seconds (default: run until Ctrl-C).
        #[arg(long)]
        duration: Option<f64>,
    },
    /// Run only the embedded MQTT broker (for tests and single-machine sites).
    Broker {
        #[arg(long, default_value = "127.0.0.1:1883")]
        listen: SocketAddr,
    },
    /// Print the default config with every key documented.
    PrintDefaultConfig,
}

fn init_tracing(default: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("FOG_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        builder.without_time().with_ansi(false).init();
    } else {
        builder.init();
    }
}

fn load(common: &Common) -> Result<CoordinatorConfig, ConfigError> {
    let mut cfg = match &common.config {
        Some(p) => CoordinatorConfig::load(p)?,
        None => CoordinatorConfig::from_toml("", "<defaults>")?,
    };
    if let Some(url) = &common.broker {
        let keep = cfg.broker.clone();
        cfg.broker = BrokerConfig {
            credentials: keep.credentials,
            keep_alive: keep.keep_alive,
            ..BrokerConfig::plain(url)?
        };
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
            init_tracing("info,rumqttd=warn");
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
        } => {
            init_tracing("info,rumqttd=warn");
            let mut cfg = load(&common).map_err(config_err)?;
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
                tokio::spawn(signals(shutdown.clone()));
                let (view, _rx) = tokio::sync::watch::channel(Arc::new(empty_status()));
                service::serve(cfg, shutdown, view).await.map_err(|e| {
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
            init_tracing("warn,rumqttd=warn");
            let cfg = load(&common).map_err(config_err)?;
            let timeout = Duration::from_secs_f64(timeout.clamp(0.1, 600.0));
            runtime()?.block_on(async move {
                let topics = Topics::new(cfg.prefix.clone());
                let s = status::fetch(&cfg.broker, &topics, timeout)
                    .await
                    .map_err(|e| {
                        eprintln!("fog-coordinator: {e}");
                        ExitCode::FAILURE
                    })?;
                if json {
                    let text = serde_json::to_string_pretty(&s).map_err(|e| {
                        eprintln!("fog-coordinator: {e}");
                        ExitCode::FAILURE
                    })?;
                    println!("{text}");
                } else {
                    print!("{}", status::render_table(&s, fog_agent::service::now_ms()));
                }
                Ok(ExitCode::SUCCESS)
            })
        }
        Command::Demo { agents, duration } => {
            init_tracing("warn,rumqttd=off");
            let duration = match duration {
                Some(d) if !(d.is_finite() && d > 0.0) => {
                    eprintln!("fog-coordinator: --duration must be a positive number of seconds");
                    return Err(ExitCode::from(2));
                }
                d => d.map(Duration::from_secs_f64),
            };
            runtime()?.block_on(async move {
                let shutdown = CancellationToken::new();
                tokio::spawn(signals(shutdown.clone()));
                let opts = demo::DemoOptions {
                    agents: agents.into(),
                    duration,
                    redraw: demo::stdout_is_terminal(),
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

fn empty_status() -> fog_proto::CoordinatorStatus {
    fog_proto::CoordinatorStatus {
        online: false,
        at_ms: 0,
        version: String::new(),
        reason: String::new(),
        nodes: Vec::new(),
        counters: Default::default(),
    }
}

/// First SIGTERM/SIGINT: graceful shutdown. Second: exit at once.
async fn signals(shutdown: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    for n in 0.. {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        if n == 0 {
            shutdown.cancel();
        } else {
            std::process::exit(1);
        }
    }
}
