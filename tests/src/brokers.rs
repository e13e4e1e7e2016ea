//! Real brokers for tests, each in its own process on a free loopback port, so a test
//! can kill one and start it again on the same port.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerKind {
    /// fog's embedded rumqttd, run as `fog-test-broker`.
    Embedded,
    /// A `mosquitto` process with a config written by the harness.
    Mosquitto,
}

impl BrokerKind {
    /// Mosquitto when `FOG_E2E_MOSQUITTO=1` or the `mosquitto` feature is on.
    pub fn from_env() -> BrokerKind {
        let env = std::env::var("FOG_E2E_MOSQUITTO").is_ok_and(|v| !v.is_empty() && v != "0");
        if env || cfg!(feature = "mosquitto") {
            BrokerKind::Mosquitto
        } else {
            BrokerKind::Embedded
        }
    }
}

/// TLS material and credentials for Mosquitto's TLS listeners.
#[derive(Debug, Clone)]
pub struct TlsListener {
    /// Server-authenticated TLS plus a password file (no client certificate asked).
    pub port: u16,
    /// Mutual TLS: `require_certificate true`, client certificates signed by `ca`,
    /// plus the same password file.
    pub mtls_port: u16,
    pub ca: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// A client certificate and key from another CA (`other_ca`), which the broker
    /// does not trust.
    pub other_ca: PathBuf,
    pub other_client_cert: PathBuf,
    pub other_client_key: PathBuf,
    pub username: String,
    pub password: String,
}

pub struct TestBroker {
    pub kind: BrokerKind,
    pub addr: SocketAddr,
    pub tls: Option<TlsListener>,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A binary of this crate (`fog-test-broker`, `fog-test-agent`), next to the tests.
pub fn harness_bin(name: &str) -> anyhow::Result<PathBuf> {
    // Test executables live in target/<profile>/deps, binaries one level up; a
    // binary of this crate (a benchmark) finds its siblings next to itself.
    let exe = std::env::current_exe()?;
    let here = exe.parent().context("locating target dir")?;
    let dir = if here.ends_with("deps") {
        here.parent().context("locating target dir")?
    } else {
        here
    };
    let bin = dir.join(name);
    if !bin.exists() {
        bail!(
            "{} not found; build it with `cargo build -p fog-e2e`",
            bin.display()
        );
    }
    Ok(bin)
}

fn test_broker_bin() -> anyhow::Result<PathBuf> {
    if let Ok(p) = std::env::var("FOG_TEST_BROKER_BIN") {
        return Ok(p.into());
    }
    harness_bin("fog-test-broker")
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// Two CAs, a server certificate (for 127.0.0.1 and localhost) and a client
/// certificate from the broker's CA, and a client certificate from the other CA, made
/// with the openssl command line.
fn make_certs(dir: &Path) -> anyhow::Result<()> {
    let o = |args: &[&str]| run(Command::new("openssl").args(args).current_dir(dir));
    for (ca, cn) in [("ca", "fog test CA"), ("other-ca", "someone else's CA")] {
        o(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN={cn}"),
            "-keyout",
            &format!("{ca}.key"),
            "-out",
            &format!("{ca}.pem"),
        ])?;
    }
    std::fs::write(
        dir.join("san.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )?;
    for (name, ca) in [
        ("server", "ca"),
        ("client", "ca"),
        ("other-client", "other-ca"),
    ] {
        o(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            &format!("/CN=fog test {name}"),
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
        ])?;
        o(&[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "san.ext",
            "-out",
            &format!("{name}.pem"),
        ])?;
    }
    Ok(())
}

impl TestBroker {
    /// Start the broker kind chosen by the environment.
    pub fn start() -> anyhow::Result<TestBroker> {
        Self::start_kind(BrokerKind::from_env())
    }

    pub fn start_kind(kind: BrokerKind) -> anyhow::Result<TestBroker> {
        let dir = tempfile::tempdir()?;
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let tls = if kind == BrokerKind::Mosquitto {
            make_certs(dir.path())?;
            let pw = dir.path().join("passwd");
            run(Command::new("mosquitto_passwd")
                .args(["-b", "-c"])
                .arg(&pw)
                .args(["fog", "s3cret pass"]))?;
            let port = free_port()?;
            let mtls_port = free_port()?;
            let conf = format!(
                "per_listener_settings true\nuser root\npersistence false\nlog_dest stderr\nlog_type error\nlog_type warning\n\
                 listener {} 127.0.0.1\nallow_anonymous true\n\
                 listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {pw}\ncafile {d}/ca.pem\ncertfile {d}/server.pem\nkeyfile {d}/server.key\nrequire_certificate false\n\
                 listener {mtls_port} 127.0.0.1\nallow_anonymous false\npassword_file {pw}\ncafile {d}/ca.pem\ncertfile {d}/server.pem\nkeyfile {d}/server.key\nrequire_certificate true\n",
                addr.port(),
                pw = pw.display(),
                d = dir.path().display()
            );
            std::fs::write(dir.path().join("mosquitto.conf"), conf)?;
            Some(TlsListener {
                port,
                mtls_port,
                ca: dir.path().join("ca.pem"),
                client_cert: dir.path().join("client.pem"),
                client_key: dir.path().join("client.key"),
                other_ca: dir.path().join("other-ca.pem"),
                other_client_cert: dir.path().join("other-client.pem"),
                other_client_key: dir.path().join("other-client.key"),
                username: "fog".into(),
                password: "s3cret pass".into(),
            })
        } else {
            None
        };
        let mut b = TestBroker {
            kind,
            addr,
            tls,
            dir,
            child: None,
        };
        b.spawn()?;
        Ok(b)
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let mut cmd = match self.kind {
            BrokerKind::Embedded => {
                let mut c = Command::new(test_broker_bin()?);
                c.arg(self.addr.to_string());
                c
            }
            BrokerKind::Mosquitto => {
                let mut c = Command::new("mosquitto");
                c.arg("-c").arg(self.dir.path().join("mosquitto.conf"));
                c
            }
        };
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {:?} broker ({cmd:?})", self.kind))?;
        self.child = Some(child);
        // Every listener, not only the first: Mosquitto binds them one after another,
        // and a test that goes straight to the TLS port must not find it closed.
        let mut addrs = vec![self.addr];
        if let Some(t) = &self.tls {
            addrs.push(SocketAddr::from(([127, 0, 0, 1], t.port)));
            addrs.push(SocketAddr::from(([127, 0, 0, 1], t.mtls_port)));
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for addr in addrs {
            while TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_err() {
                if Instant::now() > deadline {
                    bail!(
                        "{:?} broker did not listen on {addr} within 10 s",
                        self.kind
                    );
                }
                if let Some(c) = self.child.as_mut() {
                    if let Some(status) = c.try_wait()? {
                        bail!("{:?} broker exited at start: {status}", self.kind);
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(())
    }

    pub fn url(&self) -> String {
        format!("mqtt://{}", self.addr)
    }

    /// Kill the broker process (SIGKILL: no goodbye to anyone).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stop the broker the way an init system does (SIGTERM) and wait for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while matches!(c.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start it after [`stop`](Self::stop) or [`kill`](Self::kill), on the same port(s).
    pub fn start_again(&mut self) -> anyhow::Result<()> {
        self.spawn()
    }

    /// Start it again on the same port(s).
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.spawn()
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        self.kill();
    }
}
