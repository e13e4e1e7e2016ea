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

/// What differs between the running config and the file, by config key.
#[derive(Debug, Default, PartialEq)]
pub struct Changes {
    /// Applied at once.
    pub live: Vec<&'static str>,
    /// Read, but applied only by a restart (`systemctl restart fog-agent`).
    pub restart: Vec<&'static str>,
}

/// Compare the running config with a new one.
pub fn changes(old: &Config, new: &Config) -> Changes {
    let mut c = Changes::default();
    let mut check = |changed: bool, key: &'static str, live: bool| {
        if changed {
            let list = if live { &mut c.live } else { &mut c.restart };
            list.push(key);
        }
    };
    check(
        old.heartbeat_interval != new.heartbeat_interval,
        "heartbeat_interval_secs",
        true,
    );
    check(
        old.metrics_interval != new.metrics_interval,
        "metrics_interval_secs",
        true,
    );
    check(
        old.shutdown_grace != new.shutdown_grace,
        "shutdown_grace_secs",
        true,
    );
    check(old.labels != new.labels, "labels", true);
    check(old.alerts != new.alerts, "alerts", true);
    check(old.commands != new.commands, "tasks", true);
    check(
        old.pool.builtins != new.pool.builtins,
        "pool.builtins",
        true,
    );
    check(old.trust != new.trust, "trust", true);
    check(old.node_id != new.node_id, "node_id", false);
    check(old.prefix != new.prefix, "prefix", false);
    check(old.encoding != new.encoding, "encoding", false);
    check(old.data_dir != new.data_dir, "data_dir", false);
    check(old.broker != new.broker, "broker", false);
    check(old.metrics != new.metrics, "metrics", false);
    let pool = |p: &crate::config::PoolConfig| {
        (p.workers, p.queue_capacity, p.arena_bytes, p.max_task_bytes)
    };
    check(
        pool(&old.pool) != pool(&new.pool),
        "pool (workers, queue, arena, task size)",
        false,
    );
    check(old.store != new.store, "store", false);
    c
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
        if new.heartbeat_interval != self.config.heartbeat_interval {
            t.heartbeat = skipping(new.heartbeat_interval);
        }
        if new.metrics_interval != self.config.metrics_interval {
            t.readings = skipping(new.metrics_interval);
        }
        if new.alerts != self.config.alerts {
            let alerts = new.alerts.clone();
            self.sup
                .alerts
                .set_factory(move || crate::alerts::AlertEngine::new(alerts.clone()));
            let alerts = new.alerts.clone();
            self.sup
                .alerts
                .with(tokio::time::Instant::now(), move |a| a.set_config(alerts));
        }
        if new.commands != self.config.commands || new.pool.builtins != self.config.pool.builtins {
            self.host.set_kinds(crate::tasks::host::kinds(&new));
        }
        if new.trust != self.config.trust || keys != self.trusted {
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
        let birth_changed = c.live.iter().any(|k| {
            matches!(
                *k,
                "heartbeat_interval_secs"
                    | "metrics_interval_secs"
                    | "labels"
                    | "tasks"
                    | "pool.builtins"
                    | "trust"
            )
        });
        self.config = new;
        if birth_changed {
            self.announce_again()?;
        }
        self.sup.config_note =
            (!c.restart.is_empty()).then(|| format!("restart to apply: {}", c.restart.join(", ")));
        tracing::info!(
            config = %path.display(),
            applied = ?c.live,
            needs_restart = ?c.restart,
            "config reloaded"
        );
        if !c.restart.is_empty() {
            tracing::warn!(keys = ?c.restart, "these changes take effect at the next restart (systemctl restart fog-agent)");
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
        assert_eq!(c.live, vec!["heartbeat_interval_secs", "labels"]);
        assert_eq!(
            c.restart,
            vec!["broker", "pool (workers, queue, arena, task size)"]
        );
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
