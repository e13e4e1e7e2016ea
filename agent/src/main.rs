//! fog-agent command line: parse, set up logging, load config, call the library.

use std::process::ExitCode;

use fog_agent::cli::{Command, USAGE};
use fog_agent::config::{Config, DEFAULT_CONFIG};
use tokio_util::sync::CancellationToken;

/// sysexits' EX_CONFIG; the systemd unit's RestartPreventExitStatus matches it.
const EXIT_CONFIG: u8 = 78;
/// A usage mistake, as getopt-style tools exit.
const EXIT_USAGE: u8 = 2;

fn load(path: &std::path::Path) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|e| {
        eprintln!("fog-agent: {e}");
        ExitCode::from(EXIT_CONFIG)
    })
}

/// glibc gives each thread that allocates its own malloc arena (up to 8 per core), and
/// each keeps what it freed: in a 35-minute soak the agent's store and worker threads
/// held ~1.5 MiB in arenas of their own. Two arenas are plenty for the agent's few
/// threads. (musl has a single allocator state; nothing to do there.)
fn limit_malloc_arenas() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets an allocator parameter; called before other threads.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

fn main() -> ExitCode {
    let command = match fog_agent::cli::parse(std::env::args_os().skip(1)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("fog-agent: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    match command {
        Command::Help => {
            print!("{USAGE}");
            ExitCode::SUCCESS
        }
        Command::Version => {
            println!("fog-agent {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Command::PrintDefaultConfig => {
            print!("{DEFAULT_CONFIG}");
            ExitCode::SUCCESS
        }
        Command::CheckConfig { config } => match load(&config) {
            Ok(c) => match fog_agent::config::check_files(&c) {
                Ok(()) => {
                    println!(
                        "{}: ok (node {}, broker {})",
                        config.display(),
                        c.node_id,
                        c.broker.url()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("fog-agent: {e}");
                    ExitCode::from(EXIT_CONFIG)
                }
            },
            Err(code) => code,
        },
        Command::Metrics { once, config } => {
            let metrics = match config {
                Some(path) => match load(&path) {
                    Ok(c) => c.metrics,
                    Err(code) => return code,
                },
                None => match Config::from_toml("") {
                    Ok(c) => c.metrics,
                    Err(e) => {
                        eprintln!("fog-agent: {e}");
                        return ExitCode::from(EXIT_CONFIG);
                    }
                },
            };
            let mut collector = fog_agent::metrics::Collector::new(metrics);
            loop {
                // A first sample primes the counters so the printed one has rates.
                collector.reading(fog_agent::service::now_ms());
                std::thread::sleep(std::time::Duration::from_millis(250));
                let reading = collector.reading(fog_agent::service::now_ms());
                match serde_json::to_string_pretty(&reading) {
                    Ok(s) => println!("{s}"),
                    Err(e) => {
                        eprintln!("fog-agent: encoding reading: {e}");
                        return ExitCode::FAILURE;
                    }
                }
                if once {
                    return ExitCode::SUCCESS;
                }
                std::thread::sleep(std::time::Duration::from_secs(1));
            }
        }
        Command::Run { config } => {
            limit_malloc_arenas();
            fog_agent::logging::init("FOG_AGENT_LOG", "info");
            let config = match load(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            if let Err(e) = fog_agent::config::check_files(&config) {
                eprintln!("fog-agent: {e}");
                return ExitCode::from(EXIT_CONFIG);
            }
            // One thread: the agent's work is small and a second reactor costs RSS.
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("fog-agent: starting runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            runtime.block_on(async move {
                let shutdown = CancellationToken::new();
                tokio::spawn(fog_agent::service::shutdown_on_signals(shutdown.clone()));
                match fog_agent::run_with(
                    config,
                    shutdown,
                    fog_agent::sdnotify::Notifier::from_env(),
                )
                .await
                {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        tracing::error!(error = %e, "fog-agent stopped");
                        ExitCode::FAILURE
                    }
                }
            })
        }
    }
}
