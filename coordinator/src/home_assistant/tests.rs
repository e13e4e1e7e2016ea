use std::collections::BTreeMap;
use std::sync::Arc;

use fog_proto::{Birth, Encoding, Network, NodeId, NodeState, Reading, Temperature, Topics};
use serde_json::Value;

use super::{HomeAssistant, HomeAssistantConfig, Message, LIVE_WITHIN_MS, PER_TICK};
use crate::view::{NodeDetail, View};

const NOW: u64 = 1_796_200_000_000;

fn birth(id: &NodeId, encoding: Encoding) -> Birth {
    Birth {
        node: id.clone(),
        version: "0.1.0".into(),
        arch: "aarch64".into(),
        cores: 4,
        memory_bytes: 1 << 30,
        labels: BTreeMap::new(),
        encoding,
        task_kinds: Vec::new(),
        heartbeat_interval_ms: 5000,
        metrics_interval_ms: 10_000,
        keep_alive_secs: 30,
        started_at_ms: 1,
        node_key: String::new(),
        task_trust: Default::default(),
    }
}

fn reading(at_ms: u64) -> Reading {
    let mut r = Reading {
        at_ms,
        uptime_secs: 100,
        ..Default::default()
    };
    r.cpu.total_pct = Some(12.5);
    r.temperatures.push(Temperature {
        sensor: "thermal_zone0/cpu-thermal".into(),
        celsius: 48.5,
    });
    r.networks.push(Network {
        interface: "eth0".into(),
        rx_bytes_per_sec: Some(1000.4),
        ..Default::default()
    });
    r
}

/// One node `id` in `state`, its birth in `encoding`, with `reading`.
fn view(id: &str, state: NodeState, encoding: Encoding, reading: Option<Reading>) -> View {
    let mut v = (*crate::service::empty_snapshot()).clone();
    let node = NodeId::new(id).expect("valid");
    let mut summary = crate::http::tests::fleet_view().status.nodes[0].clone();
    summary.node = node.clone();
    summary.state = state;
    v.status.nodes = vec![summary];
    v.details.insert(
        node.clone(),
        NodeDetail {
            birth: Some(Arc::new(birth(&node, encoding))),
            reading: reading.map(Arc::new),
            offline_reason: String::new(),
        },
    );
    v
}

fn ha() -> HomeAssistant {
    HomeAssistant::new(
        HomeAssistantConfig::default(),
        Topics::default(),
        Encoding::Json,
    )
}

fn out(ha: &mut HomeAssistant) -> Vec<Message> {
    ha.drain().collect()
}

fn config(msgs: &[Message], topic: &str) -> Value {
    let m = msgs.iter().find(|m| m.topic == topic).unwrap_or_else(|| {
        panic!(
            "no {topic} in {:?}",
            msgs.iter().map(|m| &m.topic).collect::<Vec<_>>()
        )
    });
    assert!(m.retain, "{topic} is retained");
    serde_json::from_slice(&m.payload).expect("JSON")
}

#[test]
fn a_node_becomes_a_device_with_sanitised_ids() {
    let mut h = ha();
    h.on_view(
        &view(
            "pi.1",
            NodeState::Online,
            Encoding::Json,
            Some(reading(NOW)),
        ),
        NOW,
    );
    let msgs = out(&mut h);
    let cpu = config(&msgs, "homeassistant/sensor/fog_pi_1/cpu/config");
    assert_eq!(cpu["name"], "CPU", "no device name in the entity name");
    assert_eq!(cpu["unique_id"], "fog_pi_1_cpu");
    assert_eq!(cpu["default_entity_id"], "sensor.fog_pi_1_cpu");
    assert!(
        cpu.get("object_id").is_none(),
        "the deprecated object_id is not used"
    );
    assert_eq!(cpu["state_topic"], "fog/v1/ha/pi.1/state");
    assert_eq!(cpu["value_template"], "{{ value_json.cpu }}");
    assert_eq!(cpu["unit_of_measurement"], "%");
    assert_eq!(cpu["expire_after"], 30, "three 10 s reading intervals");
    assert_eq!(cpu["device"]["identifiers"][0], "fog_pi_1");
    assert_eq!(cpu["device"]["model"], "aarch64");
    assert_eq!(cpu["device"]["sw_version"], "0.1.0");
    assert_eq!(cpu["origin"]["name"], "fog");
    assert_eq!(cpu["availability_mode"], "all");
    let avail: Vec<&str> = cpu["availability"]
        .as_array()
        .expect("list")
        .iter()
        .map(|a| a["topic"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        avail,
        ["fog/v1/nodes/pi.1/status", "fog/v1/coordinator/status"]
    );
    assert_eq!(
        cpu["availability"][0]["value_template"],
        "{{ 'online' if value_json.online else 'offline' }}"
    );

    let t = config(
        &msgs,
        "homeassistant/sensor/fog_pi_1/temp_thermal_zone0_cpu_thermal/config",
    );
    assert_eq!(
        (
            t["device_class"].as_str(),
            t["unit_of_measurement"].as_str()
        ),
        (Some("temperature"), Some("°C"))
    );
    let online = config(&msgs, "homeassistant/binary_sensor/fog_pi_1/online/config");
    assert_eq!(online["device_class"], "connectivity");
    assert_eq!(online["state_topic"], "fog/v1/ha/pi.1/online");
    assert_eq!(
        online["availability"].as_array().map(Vec::len),
        Some(1),
        "the coordinator's only"
    );
    config(&msgs, "homeassistant/sensor/fog_pi_1/net_eth0_rx/config");
    config(&msgs, "homeassistant/binary_sensor/fog_pi_1/alert/config");

    let conn = msgs
        .iter()
        .find(|m| m.topic == "fog/v1/ha/pi.1/online")
        .expect("connectivity");
    assert_eq!((conn.payload.as_slice(), conn.retain), (&b"ON"[..], true));
    let state = msgs
        .iter()
        .find(|m| m.topic == "fog/v1/ha/pi.1/state")
        .expect("state");
    assert!(!state.retain, "live state is not retained");
    let s: Value = serde_json::from_slice(&state.payload).expect("JSON");
    assert_eq!(
        (
            s["cpu"].as_f64(),
            s["alert"].as_str(),
            s["net_eth0_rx"].as_f64()
        ),
        (Some(12.5), Some("OFF"), Some(1000.0))
    );
    // Every entity's key is in the state.
    for m in msgs.iter().filter(|m| m.topic.ends_with("/config")) {
        let c: Value = serde_json::from_slice(&m.payload).expect("JSON");
        if let Some(t) = c["value_template"].as_str() {
            let key = t
                .trim_start_matches("{{ value_json.")
                .trim_end_matches(" }}");
            assert!(s.get(key).is_some(), "{key} missing from the state {s}");
        }
    }
}

#[test]
fn configs_go_out_once_until_home_assistant_comes_online() {
    let mut h = ha();
    let v = view(
        "pi-1",
        NodeState::Online,
        Encoding::Json,
        Some(reading(NOW)),
    );
    h.on_view(&v, NOW);
    let first: Vec<Message> = out(&mut h)
        .into_iter()
        .filter(|m| m.topic.ends_with("/config"))
        .collect();
    assert!(first.len() >= 10, "{}", first.len());
    h.on_view(&v, NOW + 1000);
    assert!(
        out(&mut h).is_empty(),
        "nothing changed, nothing said (the state was sent already)"
    );
    h.on_status(b"offline");
    assert!(out(&mut h).is_empty());
    h.on_status(b"online");
    let again = out(&mut h);
    assert_eq!(again.len(), first.len());
    assert!(again
        .iter()
        .all(|m| m.retain && m.topic.ends_with("/config")));
}

#[test]
fn only_live_readings_become_state() {
    let mut h = ha();
    let state_of = |h: &mut HomeAssistant| -> Vec<Message> {
        out(h)
            .into_iter()
            .filter(|m| m.topic.ends_with("/state"))
            .collect()
    };
    // A reading from before an outage, replayed: history, not now.
    let old = NOW - LIVE_WITHIN_MS - 1;
    h.on_view(
        &view(
            "pi-1",
            NodeState::Online,
            Encoding::Json,
            Some(reading(old)),
        ),
        NOW,
    );
    assert!(state_of(&mut h).is_empty());
    h.on_view(
        &view(
            "pi-1",
            NodeState::Online,
            Encoding::Json,
            Some(reading(NOW)),
        ),
        NOW,
    );
    assert_eq!(state_of(&mut h).len(), 1);
    // An older one arriving late does not overwrite it.
    h.on_view(
        &view(
            "pi-1",
            NodeState::Online,
            Encoding::Json,
            Some(reading(NOW - 5000)),
        ),
        NOW,
    );
    assert!(state_of(&mut h).is_empty());
    // An offline node's last reading is not state.
    h.on_view(
        &view(
            "pi-1",
            NodeState::Offline,
            Encoding::Json,
            Some(reading(NOW + 1000)),
        ),
        NOW + 1000,
    );
    let msgs = out(&mut h);
    assert!(msgs.iter().all(|m| !m.topic.ends_with("/state")));
    let conn = msgs
        .iter()
        .find(|m| m.topic == "fog/v1/ha/pi-1/online")
        .expect("connectivity");
    assert_eq!(conn.payload, b"OFF");
}

#[test]
fn a_postcard_node_has_no_status_availability() {
    let mut h = ha();
    h.on_view(
        &view(
            "pi-1",
            NodeState::Online,
            Encoding::Postcard,
            Some(reading(NOW)),
        ),
        NOW,
    );
    let cpu = config(&out(&mut h), "homeassistant/sensor/fog_pi-1/cpu/config");
    let avail = cpu["availability"].as_array().expect("list");
    assert_eq!(avail.len(), 1, "{cpu}");
    assert_eq!(avail[0]["topic"], "fog/v1/coordinator/status");
}

#[test]
fn a_large_fleet_is_announced_at_a_bounded_pace() {
    let mut h = ha();
    for i in 0..200 {
        h.on_view(
            &view(
                &format!("pi-{i}"),
                NodeState::Online,
                Encoding::Json,
                Some(reading(NOW)),
            ),
            NOW,
        );
    }
    let first = h.drain().count();
    assert_eq!(first, PER_TICK);
    let rest = h.drain().count();
    assert!(rest > 0 && rest <= PER_TICK, "{rest}");
    let m = Message {
        topic: "t".into(),
        payload: Vec::new(),
        retain: true,
    };
    h.retry(m.clone());
    assert_eq!(
        h.drain().next(),
        Some(m),
        "a refused message goes first next time"
    );
}

#[test]
fn the_discovery_prefix_is_checked() {
    for bad in ["", "home/#", "a//b", "/ha"] {
        let text = format!("[home_assistant]\nenabled = true\ndiscovery_prefix = {bad:?}\n");
        let e = crate::config::CoordinatorConfig::from_toml(&text, "t").expect_err(bad);
        assert!(e.to_string().contains("discovery_prefix"), "{e}");
    }
    let cfg = crate::config::CoordinatorConfig::from_toml(
        "[home_assistant]\nenabled = true\ndiscovery_prefix = \"ha/site1\"\n",
        "t",
    )
    .expect("valid");
    assert_eq!(cfg.home_assistant.discovery_prefix, "ha/site1");
    assert!(
        !crate::config::CoordinatorConfig::from_toml("", "t")
            .expect("defaults")
            .home_assistant
            .enabled
    );
}

#[test]
fn an_entity_that_went_is_removed_and_a_restart_gets_connectivity_again() {
    let mut h = ha();
    h.on_view(
        &view(
            "pi-1",
            NodeState::Online,
            Encoding::Json,
            Some(reading(NOW)),
        ),
        NOW,
    );
    let _ = out(&mut h);
    // eth0 is gone from the next reading.
    let mut r = reading(NOW + 10_000);
    r.networks.clear();
    h.on_view(
        &view("pi-1", NodeState::Online, Encoding::Json, Some(r)),
        NOW + 10_000,
    );
    let msgs = out(&mut h);
    let removed: Vec<&str> = msgs
        .iter()
        .filter(|m| m.payload.is_empty())
        .map(|m| m.topic.as_str())
        .collect();
    assert_eq!(
        removed,
        [
            "homeassistant/sensor/fog_pi-1/net_eth0_rx/config",
            "homeassistant/sensor/fog_pi-1/net_eth0_tx/config"
        ]
    );
    assert!(msgs.iter().all(|m| m.retain || m.topic.ends_with("/state")));
    // Home Assistant online twice in a row: one set of configs queued, and the
    // connectivity goes out again with the next snapshot.
    h.on_status(b"online");
    h.on_status(b"online");
    let configs = h
        .queue
        .iter()
        .filter(|m| m.topic.ends_with("/config"))
        .count();
    let _ = out(&mut h);
    h.on_view(
        &view("pi-1", NodeState::Online, Encoding::Json, None),
        NOW + 10_000,
    );
    let again = out(&mut h);
    assert!(
        again
            .iter()
            .any(|m| m.topic == "fog/v1/ha/pi-1/online" && m.payload == b"ON"),
        "{again:?}"
    );
    assert!(configs > 0 && configs < 20, "{configs}: once, not twice");
    // A node the registry forgot is forgotten here too.
    let mut v = view("pi-1", NodeState::Online, Encoding::Json, None);
    v.status.nodes.clear();
    h.on_view(&v, NOW);
    assert!(h.said.is_empty());
}

#[test]
fn a_forgotten_node_leaves_home_assistant_with_every_entity() {
    let mut h = ha();
    h.on_view(
        &view(
            "pi-1",
            NodeState::Offline,
            Encoding::Json,
            Some(reading(NOW)),
        ),
        NOW,
    );
    let said: Vec<String> = out(&mut h)
        .into_iter()
        .filter(|m| m.retain)
        .map(|m| m.topic)
        .collect();
    assert!(said.len() > 5, "{said:?}");
    let mut v = view("pi-1", NodeState::Offline, Encoding::Json, None);
    v.status.nodes.clear();
    v.details.clear();
    h.on_view(&v, NOW + 1_000);
    let msgs = out(&mut h);
    assert!(
        msgs.iter().all(|m| m.retain && m.payload.is_empty()),
        "only empty retained messages: {msgs:?}"
    );
    let mut emptied: Vec<String> = msgs.into_iter().map(|m| m.topic).collect();
    let mut expected = said;
    emptied.sort();
    expected.sort();
    assert_eq!(
        emptied, expected,
        "every config and the connectivity, emptied"
    );
    assert!(emptied.contains(&"fog/v1/ha/pi-1/online".to_owned()));
    h.on_view(&v, NOW + 2_000);
    assert!(out(&mut h).is_empty(), "once");
}

#[test]
fn a_reading_from_the_future_does_not_hold_back_the_true_ones() {
    let mut h = ha();
    let state_of = |h: &mut HomeAssistant| {
        out(h)
            .into_iter()
            .filter(|m| m.topic.ends_with("/state"))
            .count()
    };
    h.on_view(
        &view(
            "pi-1",
            NodeState::Online,
            Encoding::Json,
            Some(reading(NOW + 10 * LIVE_WITHIN_MS)),
        ),
        NOW,
    );
    assert_eq!(state_of(&mut h), 0, "ten minutes ahead is not now");
    h.on_view(
        &view(
            "pi-1",
            NodeState::Online,
            Encoding::Json,
            Some(reading(NOW)),
        ),
        NOW,
    );
    assert_eq!(state_of(&mut h), 1);
}
