//! Home Assistant discovery against a real broker (the embedded one, or Mosquitto with
//! `FOG_E2E_MOSQUITTO=1`), watched as Home Assistant would watch it: a node's configs
//! are retained (a subscriber that comes later gets them), its live state arrives on
//! the flat state topic, every config is published again when Home Assistant says
//! `online` on its status topic, and a node killed without a goodbye turns
//! disconnected.

use std::time::Duration;

use fog_e2e::{
    eventually, fleet, init_logging, RunningAgent, RunningCoordinator, TestBroker, Watcher,
};
use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, QoS};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(20);
const CPU_CONFIG: &str = "homeassistant/sensor/fog_ha-1/cpu/config";

/// Configs seen by `w` so far, by topic.
fn configs(w: &mut Watcher, seen: &mut Vec<fog_e2e::watcher::Arrived>) -> usize {
    seen.extend(w.drain());
    seen.iter().filter(|m| m.topic.ends_with("/config")).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_state_and_home_assistant_restarts() {
    init_logging();
    let broker = TestBroker::start().expect("broker");
    let mut cfg = fleet(&broker.url()).expect("fleet").coordinator();
    cfg.home_assistant.enabled = true;
    let coord = RunningCoordinator::start_with(cfg).expect("coordinator");
    let agent = RunningAgent::start("ha-1", &broker.url(), "metrics_interval_secs = 0.5", "")
        .expect("agent");

    let mut live = Watcher::start(broker.addr, "fog/v1/ha/ha-1/#").await;
    let state: Value = eventually("a live state for ha-1", WAIT, || {
        let msgs = live.drain();
        async move {
            let m = msgs
                .iter()
                .rev()
                .find(|m| m.topic == "fog/v1/ha/ha-1/state")?;
            serde_json::from_slice(&m.payload).ok()
        }
    })
    .await;
    assert!(state["memory_available"].as_u64() > Some(0), "{state}");
    // ON when the reading has a notice (here often "clock not synchronised").
    assert!(
        matches!(state["alert"].as_str(), Some("ON" | "OFF")),
        "{state}"
    );

    // Retained: a Home Assistant that subscribes now gets the device at once.
    let mut ha = Watcher::start(broker.addr, "homeassistant/#").await;
    let mut seen = Vec::new();
    let entities = eventually("the retained configs", WAIT, || {
        let n = configs(&mut ha, &mut seen);
        async move { (n >= 10).then_some(n) }
    })
    .await;
    let cpu = seen
        .iter()
        .find(|m| m.topic == CPU_CONFIG)
        .expect("the CPU sensor");
    assert!(cpu.retained, "delivered as retained");
    let c: Value = serde_json::from_slice(&cpu.payload).expect("JSON");
    assert_eq!(c["state_topic"], "fog/v1/ha/ha-1/state");
    assert_eq!(c["device"]["model"], std::env::consts::ARCH);

    // Home Assistant restarts and says so: every config again, not retained copies.
    let mut opts = MqttOptions::new("fake-home-assistant", "127.0.0.1", broker.addr.port());
    opts.set_keep_alive(Duration::from_secs(5));
    let (client, mut eventloop) = AsyncClient::new(opts, 16);
    let driver = tokio::spawn(async move {
        while let Ok(ev) = eventloop.poll().await {
            if matches!(ev, Event::Outgoing(Outgoing::Disconnect)) {
                break;
            }
        }
    });
    seen.clear();
    client
        .publish("homeassistant/status", QoS::AtLeastOnce, false, "online")
        .await
        .expect("publish");
    eventually(
        "every config again after Home Assistant's online",
        WAIT,
        || {
            let n = configs(&mut ha, &mut seen);
            async move { (n >= entities).then_some(()) }
        },
    )
    .await;
    assert!(
        seen.iter().any(|m| m.topic == CPU_CONFIG && !m.retained),
        "published again, live"
    );

    // Killed without a goodbye: disconnected once the broker's Last Will arrives.
    agent.abort();
    eventually("ha-1 disconnected", WAIT, || {
        let msgs = live.drain();
        async move {
            msgs.iter()
                .any(|m| m.topic == "fog/v1/ha/ha-1/online" && m.payload == b"OFF")
                .then_some(())
        }
    })
    .await;
    let _ = client.disconnect().await;
    let _ = driver.await;
    coord.stop().await;
}
