//! Home Assistant MQTT discovery (docs/home-assistant.md), off by default: every node
//! becomes a device with sensors (CPU, load, memory, root disk, temperatures, network
//! rates, uptime, backlog drops) and binary sensors (online, under-voltage,
//! throttled, an alert).
//!
//! * Configs are retained under `<discovery_prefix>/<component>/fog_<node>/<object>/config`
//!   and published again whenever a node's entity set changes and when Home
//!   Assistant announces `online` on `<discovery_prefix>/status` (after its restart,
//!   or entities stay unavailable: the most common complaint about similar tools).
//! * State goes to one flat JSON topic per node, `<prefix>/v1/ha/<node>/state`, that
//!   the coordinator publishes only for a **live** reading: newer than the last one
//!   published and made within [`LIVE_WITHIN`] of now, so a backlog replayed after an
//!   outage never overwrites "now" in Home Assistant.
//! * Availability is the node's own retained status (`online` in its JSON) and the
//!   coordinator's, both required; `expire_after` (about three reading intervals)
//!   covers a node that dies without its Last Will reaching the broker.
//! * Connectivity comes from the registry (`<prefix>/v1/ha/<node>/online`, retained
//!   `ON`/`OFF`), so a node the silence rules call offline shows as disconnected.
//!
//! Publishing is paced: at most [`PER_TICK`] messages a second go to the link, so
//! announcing a 1,000-node fleet never fills the link's queue.

use std::collections::{BTreeMap, HashMap, VecDeque};

use fog_proto::{Encoding, NodeId, NodeState, NodeTopic, Reading, Topics};
use serde_json::{json, Map, Value};

use crate::view::View;

/// A reading older than this (by the node's clock against ours) is history, not now.
pub const LIVE_WITHIN_MS: u64 = 60_000;
/// Messages handed to the link per second, at most.
pub const PER_TICK: usize = 1000;
/// Messages waiting for the link, at most.
pub const MAX_QUEUED: usize = 100_000;
/// Temperature sensors and interfaces a node's device gets entities for, at most
/// (their names come from the node's readings, which are not signed).
pub const MAX_SENSORS: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HomeAssistantConfig {
    pub enabled: bool,
    pub discovery_prefix: String,
}

impl Default for HomeAssistantConfig {
    fn default() -> Self {
        HomeAssistantConfig {
            enabled: false,
            discovery_prefix: "homeassistant".into(),
        }
    }
}

/// One message for the link.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
}

/// What has been said about one node.
#[derive(Default)]
struct Said {
    /// The discovery topics published, with their payloads (to republish the same).
    configs: BTreeMap<String, Vec<u8>>,
    /// `at_ms` of the last reading published as state.
    state_at_ms: u64,
    online: Option<bool>,
}

pub struct HomeAssistant {
    cfg: HomeAssistantConfig,
    topics: Topics,
    /// Whether the coordinator's status is JSON (Home Assistant can read it).
    coordinator_json: bool,
    said: HashMap<NodeId, Said>,
    queue: VecDeque<Message>,
}

impl HomeAssistant {
    pub fn new(cfg: HomeAssistantConfig, topics: Topics, coordinator_encoding: Encoding) -> Self {
        HomeAssistant {
            cfg,
            topics,
            coordinator_json: coordinator_encoding == Encoding::Json,
            said: HashMap::new(),
            queue: VecDeque::new(),
        }
    }

    /// `<discovery_prefix>/status`: where Home Assistant says `online` after a start.
    pub fn status_topic(&self) -> String {
        format!("{}/status", self.cfg.discovery_prefix)
    }

    /// Home Assistant said something on its status topic: after `online`, every
    /// config goes out again, then each node's connectivity and state. An `online`
    /// while a re-announcement is still queued replaces it (no pile-up, whoever
    /// sends them).
    pub fn on_status(&mut self, payload: &[u8]) {
        if payload.trim_ascii() != b"online" {
            return;
        }
        tracing::info!(
            nodes = self.said.len(),
            "Home Assistant is online: announcing every node again"
        );
        self.queue.retain(|m| !m.topic.ends_with("/config"));
        let mut again = Vec::new();
        for said in self.said.values_mut() {
            for (topic, payload) in &said.configs {
                again.push(Message {
                    topic: topic.clone(),
                    payload: payload.clone(),
                    retain: true,
                });
            }
            // Sent again with the next snapshot.
            said.online = None;
            said.state_at_ms = 0;
        }
        self.queue.extend(again);
        self.bound_queue();
    }

    /// The queue at most [`MAX_QUEUED`]: the oldest go (the next snapshot says what
    /// changed again).
    fn bound_queue(&mut self) {
        while self.queue.len() > MAX_QUEUED {
            self.queue.pop_front();
        }
    }

    /// A new snapshot: configs for nodes whose entities changed (an empty retained
    /// config for one that went), connectivity that changed, state for every live
    /// reading not published yet.
    pub fn on_view(&mut self, view: &View, now_ms: u64) {
        // A node the registry no longer has (forgotten): its retained configs are
        // emptied, which removes its entities and device from Home Assistant, and so
        // is its retained connectivity.
        let known: std::collections::HashSet<&NodeId> =
            view.nodes.iter().map(|n| &n.node).collect();
        let gone: Vec<NodeId> = self
            .said
            .keys()
            .filter(|id| !known.contains(id))
            .cloned()
            .collect();
        for id in gone {
            let Some(said) = self.said.remove(&id) else {
                continue;
            };
            let online = said
                .online
                .map(|_| self.topics.home_assistant(&id, "online"));
            for topic in said.configs.into_keys().chain(online) {
                self.queue.push_back(Message {
                    topic,
                    payload: Vec::new(),
                    retain: true,
                });
            }
        }
        for n in &view.nodes {
            let detail = view.details.get(&n.node);
            let Some(birth) = detail.and_then(|d| d.birth.as_deref()) else {
                continue;
            };
            let reading = detail.and_then(|d| d.reading.as_deref());
            let node = Node {
                id: &n.node,
                arch: &birth.arch,
                version: &birth.version,
                json_status: birth.encoding == Encoding::Json,
                metrics_interval_ms: birth.metrics_interval_ms,
            };
            let said = self.said.entry(n.node.clone()).or_default();
            let entities = entities(reading);
            let wanted: BTreeMap<String, Vec<u8>> = configs(
                &self.cfg,
                &self.topics,
                self.coordinator_json,
                &node,
                &entities,
            )
            .into_iter()
            .collect();
            for gone in said.configs.keys().filter(|t| !wanted.contains_key(*t)) {
                self.queue.push_back(Message {
                    topic: gone.clone(),
                    payload: Vec::new(),
                    retain: true,
                });
            }
            said.configs.retain(|t, _| wanted.contains_key(t));
            for (topic, payload) in wanted {
                if said.configs.get(&topic) != Some(&payload) {
                    said.configs.insert(topic.clone(), payload.clone());
                    self.queue.push_back(Message {
                        topic,
                        payload,
                        retain: true,
                    });
                }
            }
            let online = n.state == NodeState::Online;
            if said.online != Some(online) {
                said.online = Some(online);
                self.queue.push_back(Message {
                    topic: self.topics.home_assistant(&n.node, "online"),
                    payload: if online {
                        b"ON".to_vec()
                    } else {
                        b"OFF".to_vec()
                    },
                    retain: true,
                });
            }
            if let Some(r) = reading {
                // Within a minute of now either way: a reading stamped far ahead
                // (readings are not signed) would otherwise hold back every true one.
                let near = r.at_ms.saturating_add(LIVE_WITHIN_MS) >= now_ms
                    && r.at_ms <= now_ms.saturating_add(LIVE_WITHIN_MS);
                let live = near || r.clock_synced == Some(false);
                if live && r.at_ms > said.state_at_ms && n.state != NodeState::Offline {
                    said.state_at_ms = r.at_ms;
                    self.queue.push_back(Message {
                        topic: self.topics.home_assistant(&n.node, "state"),
                        payload: state(r, &n.notices).to_string().into_bytes(),
                        retain: false,
                    });
                }
            }
        }
        self.bound_queue();
    }

    /// Up to [`PER_TICK`] messages for the link, oldest first.
    pub fn drain(&mut self) -> impl Iterator<Item = Message> + '_ {
        let n = self.queue.len().min(PER_TICK);
        self.queue.drain(..n)
    }

    /// A message the link refused (its queue full): first in line next time.
    pub fn retry(&mut self, m: Message) {
        self.queue.push_front(m);
    }
}

struct Node<'a> {
    id: &'a NodeId,
    arch: &'a str,
    version: &'a str,
    json_status: bool,
    metrics_interval_ms: u32,
}

/// One entity: its component, object id (unique within the node), name and the rest
/// of its config.
struct Entity {
    component: &'static str,
    object: String,
    name: String,
    extra: Value,
}

fn sensor(object: &str, name: &str, extra: Value) -> Entity {
    Entity {
        component: "sensor",
        object: object.to_owned(),
        name: name.to_owned(),
        extra,
    }
}

/// `[a-zA-Z0-9_-]`, as discovery topics and unique ids want.
pub fn sanitise(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Lower-case `[a-z0-9_]`, as entity ids want.
fn entity_id(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// The root filesystem, if the reading has one.
fn root(r: &Reading) -> Option<&fog_proto::Disk> {
    r.disks.iter().find(|d| d.mount == "/")
}

/// Every entity a node with `reading` has (before its first reading: the binary
/// sensors only).
fn entities(reading: Option<&Reading>) -> Vec<Entity> {
    let measure = |unit: &str| json!({"unit_of_measurement": unit, "state_class": "measurement"});
    let mut v = vec![
        Entity {
            component: "binary_sensor",
            object: "online".into(),
            name: "Online".into(),
            extra: json!({"device_class": "connectivity"}),
        },
        Entity {
            component: "binary_sensor",
            object: "alert".into(),
            name: "Alert".into(),
            extra: json!({"device_class": "problem"}),
        },
    ];
    let Some(r) = reading else {
        return v;
    };
    v.push(sensor("cpu", "CPU", measure("%")));
    v.push(sensor(
        "load1",
        "Load (1 min)",
        json!({"state_class": "measurement"}),
    ));
    v.push(sensor("memory_used", "Memory used", measure("%")));
    v.push(sensor("memory_available", "Memory available", json!({"unit_of_measurement": "B", "device_class": "data_size", "state_class": "measurement"})));
    if root(r).is_some() {
        v.push(sensor("disk_root_used", "Root disk used", measure("%")));
        v.push(sensor("disk_root_available", "Root disk available", json!({"unit_of_measurement": "B", "device_class": "data_size", "state_class": "measurement"})));
    }
    v.push(sensor("uptime", "Uptime", json!({"unit_of_measurement": "s", "device_class": "duration", "state_class": "measurement", "entity_category": "diagnostic"})));
    v.push(sensor(
        "backlog_dropped",
        "Backlog drops",
        json!({"state_class": "total_increasing", "entity_category": "diagnostic"}),
    ));
    for t in r.temperatures.iter().take(MAX_SENSORS) {
        let key = format!("temp_{}", entity_id(&t.sensor));
        v.push(sensor(&key, &format!("Temperature {}", t.sensor), json!({"unit_of_measurement": "°C", "device_class": "temperature", "state_class": "measurement"})));
    }
    for n in r.networks.iter().take(MAX_SENSORS) {
        let rate = json!({"unit_of_measurement": "B/s", "device_class": "data_rate", "state_class": "measurement"});
        let i = entity_id(&n.interface);
        v.push(sensor(
            &format!("net_{i}_rx"),
            &format!("{} received", n.interface),
            rate.clone(),
        ));
        v.push(sensor(
            &format!("net_{i}_tx"),
            &format!("{} sent", n.interface),
            rate,
        ));
    }
    if let Some(p) = &r.power {
        if p.under_voltage_now.is_some() {
            v.push(Entity {
                component: "binary_sensor",
                object: "under_voltage".into(),
                name: "Under-voltage".into(),
                extra: json!({"device_class": "problem"}),
            });
        }
        if p.throttled_now.is_some() {
            v.push(Entity {
                component: "binary_sensor",
                object: "throttled".into(),
                name: "Throttled".into(),
                extra: json!({"device_class": "problem"}),
            });
        }
    }
    v
}

/// Each entity's discovery topic and config.
fn configs(
    cfg: &HomeAssistantConfig,
    topics: &Topics,
    coordinator_json: bool,
    node: &Node,
    entities: &[Entity],
) -> Vec<(String, Vec<u8>)> {
    let id = sanitise(node.id.as_str());
    let online_template = "{{ 'online' if value_json.online else 'offline' }}";
    let mut availability = Vec::new();
    if node.json_status {
        availability.push(json!({"topic": topics.node(node.id, NodeTopic::Status), "value_template": online_template}));
    }
    let mut coordinator_only = Vec::new();
    if coordinator_json {
        let c = json!({"topic": topics.coordinator_status(), "value_template": online_template});
        availability.push(c.clone());
        coordinator_only.push(c);
    }
    // Three reading intervals, and never under 30 s.
    let expire = (u64::from(node.metrics_interval_ms) * 3)
        .div_ceil(1000)
        .max(30);
    let device = json!({
        "identifiers": [format!("fog_{id}")],
        "name": node.id.as_str(),
        "manufacturer": "fog",
        "model": node.arch,
        "sw_version": node.version,
    });
    let origin = json!({"name": "fog", "sw_version": env!("CARGO_PKG_VERSION")});
    entities
        .iter()
        .map(|e| {
            let mut c = Map::new();
            c.insert("name".into(), json!(e.name));
            c.insert("unique_id".into(), json!(format!("fog_{id}_{}", e.object)));
            c.insert(
                "default_entity_id".into(),
                json!(format!(
                    "{}.fog_{}_{}",
                    e.component,
                    entity_id(node.id.as_str()),
                    e.object
                )),
            );
            if e.object == "online" {
                c.insert(
                    "state_topic".into(),
                    json!(topics.home_assistant(node.id, "online")),
                );
                if !coordinator_only.is_empty() {
                    c.insert("availability".into(), json!(coordinator_only));
                }
            } else {
                c.insert(
                    "state_topic".into(),
                    json!(topics.home_assistant(node.id, "state")),
                );
                c.insert(
                    "value_template".into(),
                    json!(format!("{{{{ value_json.{} }}}}", e.object)),
                );
                c.insert("expire_after".into(), json!(expire));
                if !availability.is_empty() {
                    c.insert("availability".into(), json!(availability));
                    c.insert("availability_mode".into(), json!("all"));
                }
            }
            if let Value::Object(extra) = &e.extra {
                c.extend(extra.clone());
            }
            c.insert("device".into(), device.clone());
            c.insert("origin".into(), origin.clone());
            let topic = format!(
                "{}/{}/fog_{id}/{}/config",
                cfg.discovery_prefix, e.component, e.object
            );
            (topic, Value::Object(c).to_string().into_bytes())
        })
        .collect()
}

/// The flat state of one reading, keyed by object id.
fn state(r: &Reading, notices: &[String]) -> Value {
    let onoff = |b: bool| if b { "ON" } else { "OFF" };
    let mut s = Map::new();
    s.insert("cpu".into(), json!(r.cpu.total_pct));
    s.insert("load1".into(), json!(r.load.one));
    s.insert("memory_used".into(), json!(r.memory.used_pct));
    s.insert("memory_available".into(), json!(r.memory.available_bytes));
    if let Some(d) = root(r) {
        s.insert("disk_root_used".into(), json!(d.used_pct));
        s.insert("disk_root_available".into(), json!(d.available_bytes));
    }
    s.insert("uptime".into(), json!(r.uptime_secs));
    s.insert(
        "backlog_dropped".into(),
        json!(r.agent.backlog_dropped_total),
    );
    for t in r.temperatures.iter().take(MAX_SENSORS) {
        s.insert(format!("temp_{}", entity_id(&t.sensor)), json!(t.celsius));
    }
    for n in r.networks.iter().take(MAX_SENSORS) {
        let i = entity_id(&n.interface);
        s.insert(
            format!("net_{i}_rx"),
            json!(n.rx_bytes_per_sec.map(|v| v.round())),
        );
        s.insert(
            format!("net_{i}_tx"),
            json!(n.tx_bytes_per_sec.map(|v| v.round())),
        );
    }
    if let Some(p) = &r.power {
        if let Some(b) = p.under_voltage_now {
            s.insert("under_voltage".into(), json!(onoff(b)));
        }
        if let Some(b) = p.throttled_now {
            s.insert("throttled".into(), json!(onoff(b)));
        }
    }
    s.insert("alert".into(), json!(onoff(!notices.is_empty())));
    Value::Object(s)
}

#[cfg(test)]
mod tests;
