//! SIGTERM and SIGINT, the way systemd and a terminal stop a program: the first one
//! cancels (a graceful drain follows), a second one exits at once.

use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio_util::sync::CancellationToken;

/// Installs the SIGTERM and SIGINT handlers now, then spawns the task that waits on
/// them: the first one cancels `shutdown` for a graceful stop, a second one exits at
/// once (for an operator who does not want to wait for the grace period).
///
/// Installed before the caller goes on, not inside the spawned task: on a
/// current-thread runtime that task first runs at the caller's first `.await`, and
/// a start that takes a while (opening the store, replaying a backlog, a slow board)
/// would leave SIGTERM's default action, death without a goodbye, in place until then.
pub fn spawn_shutdown_on_signals(shutdown: CancellationToken) -> std::io::Result<()> {
    let term = signal(SignalKind::terminate())?;
    let int = signal(SignalKind::interrupt())?;
    tokio::spawn(shutdown_on(term, int, shutdown));
    Ok(())
}

async fn shutdown_on(mut term: Signal, mut int: Signal, shutdown: CancellationToken) {
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
