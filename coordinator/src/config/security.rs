//! `[security]`, `[security.node_keys]` and `[clients]`: who the coordinator signs as,
//! which nodes and clients it believes, and the lab-only switches that loosen that.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use fog_proto::NodeId;
use fog_rt::config::{interval, invalid, ConfigError};
use fog_rt::keys::PublicKey;
use serde::Deserialize;

use crate::clients::{parse_clients, Clients};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSecurity {
    key_dir: Option<String>,
    max_clock_skew_secs: Option<f64>,
    allow_unsigned_submissions: Option<bool>,
    allow_unapproved_nodes: Option<bool>,
    nodes_dir: Option<String>,
    node_keys: Option<BTreeMap<String, String>>,
    client_key: Option<String>,
}

#[derive(Debug, Clone)]
pub struct SecurityConfig {
    /// Folder of `coordinator.key`, the key that signs assignments (made at the first
    /// start if missing). `None`: a throwaway key per run, said at start.
    pub key_dir: Option<PathBuf>,
    /// How far a seal's time may be from this clock, either way.
    pub max_clock_skew: Duration,
    /// Lab only: accept submissions from anyone.
    pub allow_unsigned_submissions: bool,
    /// Lab only: believe nodes whose key nobody approved.
    pub allow_unapproved_nodes: bool,
    /// Where node keys wait for approval (`pending/`) and stay once approved
    /// (`approved/`). `None`: approvals only from `node_keys`.
    pub nodes_dir: Option<PathBuf>,
    /// Node keys pinned in the config.
    pub node_keys: BTreeMap<NodeId, PublicKey>,
    /// Who may submit what (`[clients]`, see [`crate::clients`]).
    pub clients: Clients,
    /// The key `submit` and `bench` sign with when neither `--key` nor
    /// `FOG_CLIENT_KEY` names one. `None`: unsigned.
    pub client_key: Option<PathBuf>,
}

impl SecurityConfig {
    /// Everything open, for in-process tests that are not about security.
    pub fn lab() -> SecurityConfig {
        SecurityConfig {
            key_dir: None,
            max_clock_skew: Duration::from_secs(300),
            allow_unsigned_submissions: true,
            allow_unapproved_nodes: true,
            nodes_dir: None,
            node_keys: BTreeMap::new(),
            clients: Clients::new(),
            client_key: None,
        }
    }
}

fn dir(
    v: Option<String>,
    d: Option<String>,
    data_dir: Option<&PathBuf>,
    sub: &str,
) -> Option<PathBuf> {
    match v.or(d).unwrap_or_default() {
        s if s.is_empty() => data_dir.map(|d| d.join(sub)),
        s => Some(PathBuf::from(s)),
    }
}

pub(super) fn security(
    origin: &str,
    r: RawSecurity,
    d: RawSecurity,
    clients: Option<toml::Table>,
    data_dir: Option<&PathBuf>,
) -> Result<SecurityConfig, ConfigError> {
    let skew = r
        .max_clock_skew_secs
        .or(d.max_clock_skew_secs)
        .unwrap_or(300.0);
    let mut node_keys = BTreeMap::new();
    for (node, line) in r.node_keys.unwrap_or_default() {
        let id = NodeId::new(node.clone())
            .map_err(|e| invalid(origin, "security.node_keys", format!("{node:?}: {e}")))?;
        let key = PublicKey::from_line(&line)
            .map_err(|e| invalid(origin, "security.node_keys", format!("{node}: {e}")))?;
        node_keys.insert(id, key);
    }
    Ok(SecurityConfig {
        key_dir: dir(r.key_dir, d.key_dir, data_dir, "keys"),
        max_clock_skew: interval(origin, "security.max_clock_skew_secs", skew, 1.0, 86_400.0)?,
        allow_unsigned_submissions: r
            .allow_unsigned_submissions
            .or(d.allow_unsigned_submissions)
            .unwrap_or(false),
        allow_unapproved_nodes: r
            .allow_unapproved_nodes
            .or(d.allow_unapproved_nodes)
            .unwrap_or(false),
        nodes_dir: dir(r.nodes_dir, d.nodes_dir, data_dir, "nodes"),
        node_keys,
        clients: parse_clients(origin, clients.unwrap_or_default())?,
        client_key: fog_rt::config::nonempty(r.client_key.or(d.client_key).map(PathBuf::from)),
    })
}
