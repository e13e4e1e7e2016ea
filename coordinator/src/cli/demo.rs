//! `fog-coordinator demo`: broker, coordinator and agents in this process, with a live
//! view (needs the `demo` feature).

use std::process::ExitCode;
#[cfg(feature = "demo")]
use std::time::Duration;

#[cfg(feature = "demo")]
use super::{failure, runtime, usage};

#[derive(clap::Args)]
pub struct Args {
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=200))]
    agents: u16,
    /// Stop after this many seconds (default: run until Ctrl-C).
    #[arg(long)]
    duration: Option<f64>,
    /// Tasks per second the demo submits (sha256, echo, sleep); 0 for none.
    #[arg(long, default_value_t = 50)]
    tasks_per_sec: u16,
    /// Serve the web console, the HTTP API and /metrics here ("" for none; the
    /// default picks a free local port and prints the URL first).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    http: String,
}

#[cfg(not(feature = "demo"))]
pub fn run(_: &Args) -> Result<ExitCode, ExitCode> {
    Err(super::needs_demo_feature("`demo`"))
}

#[cfg(feature = "demo")]
pub fn run(a: &Args) -> Result<ExitCode, ExitCode> {
    use fog_coordinator::demo;
    use tokio_util::sync::CancellationToken;

    fog_rt::logging::init("FOG_LOG", "warn,rumqttd=off");
    let duration = match a.duration {
        Some(d) if !(d.is_finite() && d > 0.0) => {
            return Err(usage("--duration must be a positive number of seconds"));
        }
        d => d.map(Duration::from_secs_f64),
    };
    runtime()?.block_on(async move {
        let shutdown = CancellationToken::new();
        fog_rt::signals::spawn_shutdown_on_signals(shutdown.clone()).map_err(|e| failure(&e))?;
        let opts = demo::DemoOptions {
            agents: a.agents.into(),
            duration,
            redraw: demo::stdout_is_terminal(),
            show: true,
            tasks_per_sec: a.tasks_per_sec.into(),
            http: fog_coordinator::config::http_listen("--http", &a.http)
                .map_err(|e| usage(&e.to_string()))?,
        };
        let summary = demo::run(opts, shutdown).await.map_err(|e| failure(&e))?;
        println!("{summary}");
        Ok(ExitCode::SUCCESS)
    })
}
