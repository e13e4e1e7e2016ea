//! fog-coordinator's `serve` as its own process, so end-to-end tests can kill -9 it and
//! start it again on the same data directory (the same library code as the real binary).

fn main() -> std::process::ExitCode {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: fog-test-coordinator CONFIG");
        return std::process::ExitCode::from(2);
    };
    let config = match fog_coordinator::config::CoordinatorConfig::load(std::path::Path::new(&path))
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("fog-test-coordinator: {e}");
            return std::process::ExitCode::from(78);
        }
    };
    if let Ok(spec) = std::env::var("FOG_TEST_LOG") {
        use tracing_subscriber::layer::SubscriberExt;
        use tracing_subscriber::util::SubscriberInitExt;
        let filter = fog_rt::logging::parse_filter(&spec).unwrap_or_default();
        let _ = tracing_subscriber::registry()
            .with(filter)
            .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
            .try_init();
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let shutdown = tokio_util::sync::CancellationToken::new();
        let (view, _rx) = tokio::sync::watch::channel(fog_coordinator::service::empty_snapshot());
        match fog_coordinator::service::serve(config, shutdown, view).await {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("fog-test-coordinator: {e}");
                std::process::ExitCode::FAILURE
            }
        }
    })
}
