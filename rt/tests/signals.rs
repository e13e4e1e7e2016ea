//! SIGTERM sent to this very process, so a test binary of its own: the handlers must
//! be in place as soon as `spawn_shutdown_on_signals` returns, not at the caller's
//! first `.await` (before the fix, this test's process was killed by the signal).

use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[test]
fn sigterm_during_a_start_that_does_not_yield_is_a_graceful_stop() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let shutdown = CancellationToken::new();
        fog_rt::signals::spawn_shutdown_on_signals(shutdown.clone()).expect("handlers");
        // systemd stops the service while its start is still busy without yielding
        // (opening the store, replaying a backlog, a slow board).
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &std::process::id().to_string()])
            .status()
            .expect("kill runs")
            .success();
        assert!(sent);
        std::thread::sleep(Duration::from_millis(300));
        tokio::time::timeout(Duration::from_secs(10), shutdown.cancelled())
            .await
            .expect("the SIGTERM cancels the shutdown token");
    });
}
