//! Mosquitto with the configuration `fog-coordinator broker-config` generates (the
//! same library code, on a free port, in the test's own temporary directory), or
//! with no fog configuration at all (anonymous, Mosquitto's defaults), and its log
//! watched for connections.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use fog_coordinator::mosquitto::site::{self, Changes, Listener, Wanted};
use fog_rt::broker::BrokerConfig;

use crate::brokers::free_port;

pub struct SiteBroker {
    pub addr: SocketAddr,
    /// `None`: Mosquitto's defaults, anonymous, no ACL.
    site: Option<PathBuf>,
    log: PathBuf,
    child: Child,
    _dir: tempfile::TempDir,
}

/// What a harness wraps around the generated snippet: its own logging, no
/// persistence, and `user root` (Mosquitto started as root would switch to the
/// `mosquitto` user, who cannot read a 0600 password file owned by root).
fn wrapper(log: &Path) -> String {
    format!(
        "user root\npersistence false\nlog_dest file {}\nlog_type error\nlog_type warning\nlog_type notice\nlog_type information\nconnection_messages true\n",
        log.display()
    )
}

impl SiteBroker {
    /// Mosquitto running the generated `fog.conf`, `acl` and `passwd` for these roles
    /// (coordinator username `fog-coordinator`).
    pub fn generated(nodes: &[&str], clients: &[&str]) -> anyhow::Result<SiteBroker> {
        let dir = tempfile::tempdir()?;
        let site_dir = dir.path().join("site");
        let port = free_port()?;
        let listener = Listener {
            port,
            bind: Some("127.0.0.1".into()),
            install_dir: site_dir.clone(),
            mtls: None,
        };
        let wanted = Wanted {
            nodes: nodes.iter().map(|s| s.to_string()).collect(),
            clients: clients.iter().map(|s| s.to_string()).collect(),
            ..Wanted::default()
        };
        let plan = site::plan(&site_dir, &wanted, &Changes::default(), &listener)?;
        site::write(&site_dir, &plan)?;
        let log = dir.path().join("mosquitto.log");
        let generated = std::fs::read_to_string(site_dir.join("fog.conf"))?;
        let conf = format!("{}{generated}", wrapper(&log));
        Self::spawn(dir, conf, port, Some(site_dir), log)
    }

    /// Mosquitto with no fog configuration: one anonymous listener, default limits.
    pub fn unconfigured() -> anyhow::Result<SiteBroker> {
        let dir = tempfile::tempdir()?;
        let port = free_port()?;
        let log = dir.path().join("mosquitto.log");
        let conf = format!(
            "{}listener {port} 127.0.0.1\nallow_anonymous true\n",
            wrapper(&log)
        );
        Self::spawn(dir, conf, port, None, log)
    }

    fn spawn(
        dir: tempfile::TempDir,
        conf: String,
        port: u16,
        site: Option<PathBuf>,
        log: PathBuf,
    ) -> anyhow::Result<SiteBroker> {
        let path = dir.path().join("mosquitto.conf");
        std::fs::write(&path, conf)?;
        let mut child = Command::new("mosquitto")
            .arg("-c")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting mosquitto (apt-get install mosquitto)")?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_err() {
            if let Some(status) = child.try_wait()? {
                bail!(
                    "mosquitto exited at start ({status}); log:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            if Instant::now() > deadline {
                bail!("mosquitto did not listen on {addr} within 10 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(SiteBroker {
            addr,
            site,
            log,
            child,
            _dir: dir,
        })
    }

    pub fn url(&self) -> String {
        format!("mqtt://{}", self.addr)
    }

    /// The password generated for `user` (from its credentials file).
    pub fn password(&self, user: &str) -> String {
        let site = self.site.as_ref().expect("a generated broker");
        let path = site.join("credentials").join(format!("{user}.password"));
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .trim_end()
            .to_owned()
    }

    /// A `[broker]` for `user` with its password (plain TCP on loopback, so the
    /// password is allowed over it), or anonymous on an unconfigured broker.
    pub fn broker_for(&self, user: &str) -> BrokerConfig {
        let mut b = BrokerConfig::plain(&self.url()).expect("a valid url");
        if self.site.is_some() {
            b.credentials = Some((user.to_owned(), self.password(user)));
            b.allow_plaintext_password = true;
        }
        b
    }

    /// The broker's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Connections accepted whose log line contains `who` (`u'pi-1'` for a username,
    /// `as client-id ` for a client id).
    pub fn connections(&self, who: &str) -> usize {
        self.log()
            .lines()
            .filter(|l| l.contains("New client connected") && l.contains(who))
            .count()
    }
}

impl Drop for SiteBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
