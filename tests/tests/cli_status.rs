//! `fog-coordinator status` reads the coordinator's retained status: the same fetch
//! the CLI runs, against a real broker, rendered as the table and as JSON.

use std::time::Duration;

use fog_coordinator::registry::LivenessConfig;
use fog_e2e::{init_logging, RunningAgent, RunningCoordinator, TestBroker};
use fog_proto::{NodeState, Topics};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_the_fleet() {
    init_logging();
    let broker = TestBroker::start().expect("broker");
    let mut coord =
        RunningCoordinator::start(&broker.url(), LivenessConfig::default()).expect("coordinator");
    let agent = RunningAgent::start("status-1", &broker.url(), "", "").expect("agent");
    coord
        .wait_for("status-1 online with load", Duration::from_secs(20), |s| {
            s.nodes.iter().any(|n| {
                n.node.as_str() == "status-1" && n.state == NodeState::Online && n.mem_pct.is_some()
            })
        })
        .await;
    let cfg = fog_rt::broker::BrokerConfig::plain(&broker.url()).expect("url");
    // Two tasks for the task lists: one completes, one has no node for its kind.
    let mut c =
        fog_coordinator::client::Client::connect(&cfg, Topics::default(), Duration::from_secs(10))
            .await
            .expect("client");
    for kind in ["echo", "resize"] {
        let sub = fog_coordinator::client::submission(
            kind,
            b"hi".to_vec(),
            0,
            Duration::from_secs(5),
            false,
        );
        fog_coordinator::client::submit_and_wait(&mut c, sub, Duration::from_secs(20))
            .await
            .expect("a final result");
    }
    // The snapshot is published every 100 ms; give the retained copy a moment to catch up.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let s = fog_coordinator::status::fetch(&cfg, &Topics::default(), Duration::from_secs(5))
        .await
        .expect("status");
    let table = fog_coordinator::status::render_table(&s, fog_rt::clock::now_ms());
    assert!(
        table.contains("status-1") && table.contains("online"),
        "{table}"
    );
    assert!(table.contains(std::env::consts::ARCH), "{table}");
    let json = serde_json::to_value(&s).expect("json");
    assert_eq!(json["nodes"][0]["node"], "status-1");
    // Degraded when this machine's CPU is above 80 % (a parallel build): both are fine.
    let health = json["nodes"][0]["health"].as_str().unwrap_or_default();
    assert!(matches!(health, "healthy" | "degraded"), "{health}");
    assert_eq!(json["nodes"][0]["breaker"], "closed");
    let all = fog_coordinator::status::TaskLists {
        running: true,
        recent: true,
        dead: true,
    };
    let tasks = fog_coordinator::status::render_tasks(&s, fog_rt::clock::now_ms(), all);
    assert!(
        tasks.contains("running (0)")
            && tasks.contains("recent (2)")
            && tasks.contains("dead-lettered (0)"),
        "{tasks}"
    );
    assert!(
        tasks.contains("completed")
            && tasks.contains("rejected")
            && tasks.contains("no online node runs kind \"resize\""),
        "{tasks}"
    );

    // Nobody serving: a clear error, not a hang.
    agent.stop().await;
    coord.stop().await;
    let empty = TestBroker::start().expect("broker");
    let cfg = fog_rt::broker::BrokerConfig::plain(&empty.url()).expect("url");
    let err = fog_coordinator::status::fetch(&cfg, &Topics::default(), Duration::from_millis(500))
        .await
        .expect_err("no coordinator");
    assert!(
        err.to_string()
            .contains("is `fog-coordinator serve` running"),
        "{err}"
    );
}
