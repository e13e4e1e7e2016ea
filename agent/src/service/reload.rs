//! `systemctl reload fog-agent` (SIGHUP): reread the config file, apply what can change
//! while running, and say which changes wait for a restart.
//!
//! A file that does not load (bad TOML, a bad value, a command that is not executable,
//! an unreadable trusted-keys folder) is refused whole: the running config stays, the
//! refusal is logged once and shown on the STATUS= line until a later reload succeeds.

use fog_proto::Status;

use super::start::{skipping, Agent, Timers};
use super::{encode, AgentError};
use crate::config::Config;
use crate::transport::Qos;
use crate::trust::{trusted_keys, Gate};

/// A config key as `reload` treats it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    HeartbeatInterval,
    MetricsInterval,
    ShutdownGrace,
    Labels,
    Alerts,
    Tasks,
    PoolBuiltins,
    Trust,
    NodeId,
    Prefix,
    Encoding,
    DataDir,
    Broker,
    Metrics,
    Pool,
    Store,
}

impl Key {
    /// As written in the file (what the log and STATUS= name).
    pub fn name(self) -> &'static str {
        match self {
            Key::HeartbeatInterval => "heartbeat_interval_secs",
            Key::MetricsInterval => "metrics_interval_secs",
            Key::ShutdownGrace => "shutdown_grace_secs",
            Key::Labels => "labels",
            Key::Alerts => "alerts",
            Key::Tasks => "tasks",
            Key::PoolBuiltins => "pool.builtins",
            Key::Trust => "trust",
            Key::NodeId => "node_id",
            Key::Prefix => "prefix",
            Key::Encoding => "encoding",
            Key::DataDir => "data_dir",
            Key::Broker => "broker",
            Key::Metrics => "metrics",
            Key::Pool => "pool (workers, queue, arena, task size)",
            Key::Store => "store",
        }
    }

    /// Applied at once; the others only by a restart (`systemctl restart fog-agent`).
    pub fn live(self) -> bool {
        matches!(
            self,
            Key::HeartbeatInterval
                | Key::MetricsInterval
                | Key::ShutdownGrace
                | Key::Labels
                | Key::Alerts
                | Key::Tasks
                | Key::PoolBuiltins
                | Key::Trust
        )
    }

    /// Carried in the birth record, so a change is announced again.
    fn in_birth(self) -> bool {
        matches!(
            self,
            Key::HeartbeatInterval
                | Key::MetricsInterval
                | Key::Labels
                | Key::Tasks
                | Key::PoolBuiltins
                | Key::Trust
        )
    }
}

/// What differs between the running config and the file.
#[derive(Debug, Default, PartialEq)]
pub struct Changes {
    pub keys: Vec<Key>,
}

impl Changes {
    pub fn has(&self, key: Key) -> bool {
        self.keys.contains(&key)
    }

    /// The names of the keys applied at once.
    pub fn live(&self) -> Vec<&'static str> {
        self.names(true)
    }

    /// The names of the keys that wait for a restart.
    pub fn restart(&self) -> Vec<&'static str> {
        self.names(false)
    }

    fn names(&self, live: bool) -> Vec<&'static str> {
        self.keys
            .iter()
            .filter(|k| k.live() == live)
            .map(|k| k.name())
            .collect()
    }
}

/// Compare the running config with a new one.
pub fn changes(old: &Config, new: &Config) -> Changes {
    let pool = |p: &crate::config::PoolConfig| {
        (p.workers, p.queue_capacity, p.arena_bytes, p.max_task_bytes)
    };
    let differs = [
        (
            Key::HeartbeatInterval,
            old.heartbeat_interval != new.heartbeat_interval,
        ),
        (
            Key::MetricsInterval,
            old.metrics_interval != new.metrics_interval,
        ),
        (Key::ShutdownGrace, old.shutdown_grace != new.shutdown_grace),
        (Key::Labels, old.labels != new.labels),
        (Key::Alerts, old.alerts != new.alerts),
        (Key::Tasks, old.commands != new.commands),
        (Key::PoolBuiltins, old.pool.builtins != new.pool.builtins),
        (Key::Trust, old.trust != new.trust),
        (Key::NodeId, old.node_id != new.node_id),
        (Key::Prefix, old.prefix != new.prefix),
        (Key::Encoding, old.encoding != new.encoding),
        (Key::DataDir, old.data_dir != new.data_dir),
        (Key::Broker, old.broker != new.broker),
        (Key::Metrics, old.metrics != new.metrics),
        (Key::Pool, pool(&old.pool) != pool(&new.pool)),
        (Key::Store, old.store != new.store),
    ];
    Changes {
        keys: differs
            .into_iter()
            .filter_map(|(k, d)| d.then_some(k))
            .collect(),
    }
}

/// The config to run with: `new`'s live keys over `old`'s restart-only ones.
fn effective(old: &Config, new: Config) -> Config {
    Config {
        node_id: old.node_id.clone(),
        prefix: old.prefix.clone(),
        encoding: old.encoding,
        data_dir: old.data_dir.clone(),
        broker: old.broker.clone(),
        metrics: old.metrics.clone(),
        pool: crate::config::PoolConfig {
            builtins: new.pool.builtins.clone(),
            ..old.pool.clone()
        },
        store: old.store.clone(),
        ..new
    }
}

/// `text` on one line (a TOML error spans several: STATUS= must not), cut to about
/// `max` characters.
fn one_line(text: &str, max: usize) -> String {
    let mut line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.len() > max {
        let mut cut = max;
        while !line.is_char_boundary(cut) {
            cut -= 1;
        }
        line.truncate(cut);
        line.push_str("...");
    }
    line
}

/// Load and check the file as `fog-agent run` would at start.
fn load(path: &std::path::Path) -> Result<(Config, Vec<fog_rt::keys::PublicKey>), String> {
    let config = Config::load(path).map_err(|e| e.to_string())?;
    crate::config::check_files(&config).map_err(|e| e.to_string())?;
    let keys = trusted_keys(&config).map_err(|e| e.to_string())?;
    Ok((config, keys))
}

impl Agent {
    /// Reread `path` and apply it (see the module's comment).
    pub(super) fn reload(
        &mut self,
        path: &std::path::Path,
        t: &mut Timers,
    ) -> Result<(), AgentError> {
        let (new, keys) = match load(path) {
            Ok(loaded) => loaded,
            Err(why) => {
                tracing::error!(config = %path.display(), error = %why, "config reload refused; still running the previous config");
                self.sup.config_note = Some(format!(
                    "config reload refused ({}); running the previous config",
                    one_line(&why, 160)
                ));
                return Ok(());
            }
        };
        let c = changes(&self.config, &new);
        let new = effective(&self.config, new);
        if c.has(Key::HeartbeatInterval) {
            t.heartbeat = skipping(new.heartbeat_interval);
        }
        if c.has(Key::MetricsInterval) {
            t.readings = skipping(new.metrics_interval);
        }
        if c.has(Key::Alerts) {
            let alerts = new.alerts.clone();
            self.sup
                .alerts
                .set_factory(move || crate::alerts::AlertEngine::new(alerts.clone()));
            let alerts = new.alerts.clone();
            self.sup
                .alerts
                .with(tokio::time::Instant::now(), move |a| a.set_config(alerts));
        }
        if c.has(Key::Tasks) || c.has(Key::PoolBuiltins) {
            self.host.set_kinds(crate::tasks::host::kinds(&new));
        }
        // The trusted-keys folder can change without the file (`fog-agent trust add`,
        // then `systemctl reload`): that changes the birth record's task trust too.
        let keys_changed = keys != self.trusted;
        if c.has(Key::Trust) || keys_changed {
            let gate = Gate::new(
                keys.clone(),
                self.node.as_str(),
                new.trust.max_clock_skew,
                new.trust.allow_unsigned,
            );
            super::start::say_trust(&gate, &keys);
            self.host.set_gate(gate);
            self.trusted = keys;
        }
        let birth_changed = keys_changed || c.keys.iter().any(|k| k.in_birth());
        self.config = new;
        if birth_changed {
            self.announce_again()?;
        }
        let restart = c.restart();
        self.sup.config_note =
            (!restart.is_empty()).then(|| format!("restart to apply: {}", restart.join(", ")));
        tracing::info!(
            config = %path.display(),
            applied = ?c.live(),
            needs_restart = ?restart,
            "config reloaded"
        );
        if !restart.is_empty() {
            tracing::warn!(keys = ?restart, "these changes take effect at the next restart (systemctl restart fog-agent)");
        }
        Ok(())
    }

    /// A new birth record (labels, intervals, task kinds or trust changed), retained on
    /// the status topic now and on every reconnect.
    fn announce_again(&mut self) -> Result<(), AgentError> {
        let memory_bytes = self
            .sup
            .collector
            .with(tokio::time::Instant::now(), |c| c.memory_total_bytes())
            .unwrap_or(0);
        let at_ms = fog_rt::clock::now_ms();
        let mut b = super::birth(&self.config, memory_bytes, self.link.started_at_ms);
        b.node_key = self.identity.line();
        b.task_trust = self.host.task_trust();
        let mut online = Status {
            seal: None,
            online: true,
            at_ms,
            reason: String::new(),
            birth: Some(b),
        };
        self.identity.seal(&mut online, at_ms);
        self.link.online = encode(&online, self.enc)?;
        let link = self.fwd.link();
        link.set_on_connect(self.link.options().on_connect);
        if link
            .publish(
                &self.link.status_topic,
                self.link.online.clone(),
                Qos::AtLeastOnce,
                true,
            )
            .is_err()
        {
            // Not connected: the next connection announces the new record anyway.
            link.count_dropped();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(extra: &str) -> Config {
        Config::from_toml(&format!("node_id = \"n\"\n{extra}")).expect("valid config")
    }

    #[test]
    fn live_and_restart_keys_are_told_apart() {
        let old = parse("heartbeat_interval_secs = 5.0\n[labels]\nroom = \"a\"\n");
        let new = parse(
            "heartbeat_interval_secs = 2.0\n[labels]\nroom = \"b\"\n[pool]\nworkers = 7\n[broker]\nurl = \"mqtt://elsewhere:1883\"\n",
        );
        let c = changes(&old, &new);
        assert_eq!(c.live(), vec!["heartbeat_interval_secs", "labels"]);
        assert_eq!(
            c.restart(),
            vec!["broker", "pool (workers, queue, arena, task size)"]
        );
        assert!(c.has(Key::Pool) && !c.has(Key::Trust));
        assert_eq!(changes(&old, &old), Changes::default());
    }

    #[test]
    fn the_effective_config_keeps_what_needs_a_restart() {
        let old = parse("[pool]\nworkers = 2\nbuiltins = [\"echo\"]\n");
        let new = Config::from_toml(
            "node_id = \"other\"\n[pool]\nworkers = 9\nbuiltins = [\"sha256\"]\n[labels]\nroom = \"b\"\n",
        )
        .expect("valid config");
        let e = effective(&old, new);
        assert_eq!(e.node_id, old.node_id);
        assert_eq!(e.pool.workers, 2);
        assert_eq!(e.pool.builtins, vec!["sha256".to_owned()]);
        assert_eq!(e.labels.get("room").map(String::as_str), Some("b"));
        assert_eq!(changes(&e, &e), Changes::default());
    }
}
