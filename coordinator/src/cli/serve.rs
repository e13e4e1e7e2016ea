//! `fog-coordinator serve`: the registry, the dispatcher and the retained status, with
//! an optional embedded broker, reporting to systemd.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use fog_coordinator::http::{Control, HttpServer};
use fog_coordinator::{broker::EmbeddedBroker, service};
use fog_rt::broker::BrokerConfig;
use tokio_util::sync::CancellationToken;

use super::{config_err, failure, load, runtime, Common};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    common: Common,
    /// Also run an embedded MQTT broker on this address (e.g. 0.0.0.0:1883) and use it.
    #[arg(long, value_name = "ADDR")]
    embedded_broker: Option<SocketAddr>,
    /// Task journal directory (overrides `data_dir`; "" keeps task state in memory).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Serve the HTTP API and /metrics here (overrides `http_listen`; "" serves none).
    #[arg(long, value_name = "ADDR")]
    http: Option<String>,
}

pub fn run(a: Args) -> Result<ExitCode, ExitCode> {
    fog_rt::logging::init("FOG_LOG", "info,rumqttd=warn");
    let mut cfg = load(&a.common).map_err(config_err)?;
    if let Some(dir) = a.data_dir {
        cfg.data_dir = (!dir.as_os_str().is_empty()).then_some(dir);
    }
    if let Some(addr) = &a.http {
        cfg.http_listen =
            fog_coordinator::config::http_listen("--http", addr).map_err(config_err)?;
    }
    runtime()?.block_on(async move {
        if let Some(addr) = a.embedded_broker {
            let b = EmbeddedBroker::start(addr).map_err(|e| failure(&e))?;
            // Connect to it over loopback even when it listens on all interfaces.
            let local = SocketAddr::from(([127, 0, 0, 1], b.addr.port()));
            cfg.broker = BrokerConfig {
                keep_alive: cfg.broker.keep_alive,
                ..BrokerConfig::plain(&format!("mqtt://{local}")).map_err(config_err)?
            };
        }
        let shutdown = CancellationToken::new();
        fog_rt::signals::spawn_shutdown_on_signals(shutdown.clone()).map_err(|e| failure(&e))?;
        let (view, view_rx) = tokio::sync::watch::channel(service::empty_snapshot());
        // Bound before serving, so a port in use fails the start (exit 1) instead of
        // leaving a coordinator without the API its operator expects.
        // Commands from the API's signed requests (drain) to the main loop.
        let mut commands = None;
        if let Some(addr) = cfg.http_listen {
            let http = HttpServer::bind(addr).await.map_err(|e| failure(&e))?;
            let (tx, rx) = fog_coordinator::control::channel();
            let control = Control::new(
                cfg.security.clients.clone(),
                cfg.security.max_clock_skew,
                tx,
            );
            tokio::spawn(http.serve_with_control(view_rx, control, shutdown.clone()));
            commands = Some(rx);
        }
        // READY/STATUS/WATCHDOG/STOPPING for the systemd unit (Type=notify); a
        // no-op when not started by systemd.
        let notifier = fog_rt::sdnotify::Notifier::from_env();
        service::serve_with(cfg, shutdown, view, notifier, commands)
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "fog-coordinator stopped");
                ExitCode::FAILURE
            })?;
        Ok(ExitCode::SUCCESS)
    })
}
