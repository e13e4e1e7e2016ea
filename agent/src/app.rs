//! The `fog-agent` program itself: run a parsed command and map every outcome to an
//! exit code (0 done, 2 a usage mistake, 78 a bad config: the unit's
//! `RestartPreventExitStatus=78`, 1 anything else). It lives in the library so the
//! end-to-end tests' agent process (`fog-test-agent`) is this very code, startup
//! checks and exit codes included, and `main.rs` stays one line.

use std::process::ExitCode;

use crate::cli::{Command, USAGE};
use crate::config::{Config, DEFAULT_CONFIG};
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

/// The `fog-agent` program: parse the process's arguments, run the command, and
/// return its exit code.
pub fn main() -> ExitCode {
    let command = match crate::cli::parse(std::env::args_os().skip(1)) {
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
        Command::CheckConfig { config } => check_config(&config),
        Command::Metrics { once, config } => metrics(once, config.as_deref()),
        Command::Run { config } => run(&config),
        Command::Trust { action, config } => crate::trust::cli::run(&action, &config),
    }
}

/// `check-config`: parse, validate and check the files the config names.
fn check_config(config: &std::path::Path) -> ExitCode {
    match load(config) {
        Ok(c) => match crate::config::check_files(&c).and_then(|()| {
            crate::trust::trusted_keys(&c)
                .map_err(|e| fog_rt::config::invalid("<config>", "trust.keys_dir", e.to_string()))
        }) {
            Ok(keys) => {
                println!(
                    "{}: ok (node {}, broker {})\n{}",
                    config.display(),
                    c.node_id,
                    c.broker.url(),
                    crate::trust::store::describe(&c, &keys)
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("fog-agent: {e}");
                ExitCode::from(EXIT_CONFIG)
            }
        },
        Err(code) => code,
    }
}

/// `metrics`: print readings as JSON, once or every second.
fn metrics(once: bool, config: Option<&std::path::Path>) -> ExitCode {
    let metrics = match config {
        Some(path) => match load(path) {
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
    let mut collector = crate::metrics::Collector::new(metrics);
    loop {
        // A first sample primes the counters so the printed one has rates.
        collector.reading(fog_rt::clock::now_ms());
        std::thread::sleep(std::time::Duration::from_millis(250));
        let reading = collector.reading(fog_rt::clock::now_ms());
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

/// SIGHUP as reload requests for the config at `path`. Installed before the agent says
/// READY, so a `systemctl reload` right after start cannot kill it (SIGHUP's default).
fn reloads_on_sighup(path: &std::path::Path) -> std::io::Result<crate::Reloads> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = signal(SignalKind::hangup())?;
    // One pending request is enough: a reload rereads the whole file.
    let (tx, requests) = tokio::sync::mpsc::channel(1);
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            let _ = tx.try_send(());
        }
    });
    Ok(crate::Reloads {
        path: path.to_owned(),
        requests,
    })
}

/// `run`: the agent, on one thread, until SIGTERM or SIGINT; SIGHUP rereads the config.
fn run(path: &std::path::Path) -> ExitCode {
    limit_malloc_arenas();
    crate::logging::init("FOG_AGENT_LOG", "info");
    let config = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if let Err(e) = crate::config::check_files(&config) {
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
        if let Err(e) = fog_rt::signals::spawn_shutdown_on_signals(shutdown.clone()) {
            eprintln!("fog-agent: installing the SIGTERM and SIGINT handlers: {e}");
            return ExitCode::FAILURE;
        }
        let reloads = match reloads_on_sighup(path) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("fog-agent: installing the SIGHUP handler: {e}");
                return ExitCode::FAILURE;
            }
        };
        let notifier = crate::sdnotify::Notifier::from_env();
        match crate::run_with(config, shutdown, notifier, Some(reloads)).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(error = %e, "fog-agent stopped");
                ExitCode::FAILURE
            }
        }
    })
}
