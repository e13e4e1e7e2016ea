//! fog-agent's run loop as its own process, so end-to-end tests can kill -9 it and start
//! it again on the same data directory (the same library code as the real binary).

fn main() -> std::process::ExitCode {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: fog-test-agent CONFIG");
        return std::process::ExitCode::from(2);
    };
    let config = match fog_agent::config::Config::load(std::path::Path::new(&path)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("fog-test-agent: {e}");
            return std::process::ExitCode::from(78);
        }
    };
    fog_agent::logging::init("FOG_AGENT_LOG", "warn");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let shutdown = tokio_util::sync::CancellationToken::new();
        // SIGTERM and SIGINT as the real binary handles them.
        tokio::spawn(fog_agent::service::shutdown_on_signals(shutdown.clone()));
        // As the real binary: report to systemd when $NOTIFY_SOCKET says so.
        let notifier = fog_agent::sdnotify::Notifier::from_env();
        match fog_agent::run_with(config, shutdown, notifier).await {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("fog-test-agent: {e}");
                std::process::ExitCode::FAILURE
            }
        }
    })
}
