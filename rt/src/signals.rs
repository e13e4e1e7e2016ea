//! SIGTERM and SIGINT, the way systemd and a terminal stop a program: the first one
//! cancels (a graceful drain follows), a second one exits at once.

use tokio_util::sync::CancellationToken;

/// First SIGTERM or SIGINT: cancel `shutdown` for a graceful stop. A second one exits
/// at once (for an operator who does not want to wait for the grace period).
pub async fn shutdown_on_signals(shutdown: CancellationToken) {
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
            tracing::info!("signal received; shutting down (send again to exit at once)");
            shutdown.cancel();
        } else {
            std::process::exit(1);
        }
    }
}
