//! The README's first command, `fog-coordinator demo`, driven in-process for a few
//! seconds: every agent is seen online with readings, and it ends cleanly.

use std::time::Duration;

use fog_coordinator::demo::{run, DemoOptions};
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_runs_and_summarises() {
    fog_e2e::init_logging();
    let opts = DemoOptions {
        agents: 3,
        duration: Some(Duration::from_secs(4)),
        redraw: false,
        show: false,
        tasks_per_sec: 40,
        http: Some("127.0.0.1:0".parse().expect("addr")),
    };
    let summary =
        tokio::time::timeout(Duration::from_secs(30), run(opts, CancellationToken::new()))
            .await
            .expect("demo ends by itself")
            .expect("demo runs");
    assert_eq!(summary.nodes_seen, 3, "{summary}");
    assert!(summary.heartbeats >= 6, "{summary}");
    assert!(summary.readings >= 3, "{summary}");
    assert_eq!(summary.rejected, 0, "{summary}");
    assert!(
        summary.tasks_completed >= 40,
        "the task stream ran: {summary}"
    );
    assert_eq!(summary.tasks_failed, 0, "{summary}");
    // Agents stop first and say goodbye, so none is left online.
    assert_eq!(summary.nodes_online_at_end, 0, "{summary}");
    assert!(
        summary.console.is_some_and(|a| a.port() != 0),
        "the console was served"
    );
}
