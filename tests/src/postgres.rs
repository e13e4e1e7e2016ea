//! A real PostgreSQL for tests: its own data directory (initdb) and a free loopback
//! port, started by the harness as a child process, stopped (and its files removed)
//! when dropped; restartable on the same port.
//!
//! PostgreSQL refuses to run as root: as root (CI), the server runs as the `postgres`
//! user the Debian package creates (set on the child process, so the child is the
//! postmaster itself and signals reach it), over a directory handed to it.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::brokers::free_port;

pub struct TestPostgres {
    pub port: u16,
    dir: tempfile::TempDir,
    bin: PathBuf,
    /// As root: the postgres user's uid and gid.
    as_postgres: Option<(u32, u32)>,
    child: Option<Child>,
}

/// Where Debian puts the server's programs (not on PATH): the newest version there,
/// else PATH.
fn bin_dir() -> anyhow::Result<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Ok(bin);
    }
    let out = Command::new("sh")
        .args(["-c", "command -v postgres"])
        .output()
        .context("looking for postgres")?;
    let path = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    match Path::new(&path).parent() {
        Some(dir) if out.status.success() => Ok(dir.to_owned()),
        _ => bail!("PostgreSQL's server is not installed (apt-get install postgresql)"),
    }
}

/// `id ARGS`, as a number.
fn id(args: &[&str]) -> anyhow::Result<u32> {
    let out = Command::new("id")
        .args(args)
        .output()
        .context("running id")?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim()
        .parse()
        .with_context(|| format!("id {args:?} printed {text:?}"))
}

/// As root, the postgres user to run the server as.
fn server_user() -> anyhow::Result<Option<(u32, u32)>> {
    if id(&["-u"])? != 0 {
        return Ok(None);
    }
    let uid = id(&["-u", "postgres"]).context(
        "running PostgreSQL as root needs the postgres user (apt-get install postgresql)",
    )?;
    Ok(Some((uid, id(&["-g", "postgres"])?)))
}

impl TestPostgres {
    /// initdb (trust authentication for user `fog`, no fsync: a test database) and
    /// start, waiting until it takes connections.
    pub fn start() -> anyhow::Result<TestPostgres> {
        let bin = bin_dir()?;
        let dir = tempfile::tempdir()?;
        let as_postgres = server_user()?;
        if as_postgres.is_some() {
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()?
                .success();
            if !ok {
                bail!("chown of the test database's directory to postgres failed");
            }
        }
        let mut pg = TestPostgres {
            port: free_port()?,
            dir,
            bin,
            as_postgres,
            child: None,
        };
        let data = pg.data_dir();
        let out = pg
            .command("initdb")
            .args(["-A", "trust", "-U", "fog", "-E", "UTF8", "--no-sync", "-D"])
            .arg(&data)
            .stdout(Stdio::null())
            .output()
            .context("running initdb")?;
        if !out.status.success() {
            bail!("initdb failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        pg.start_again()?;
        Ok(pg)
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn command(&self, program: &str) -> Command {
        let mut c = Command::new(self.bin.join(program));
        if let Some((uid, gid)) = self.as_postgres {
            c.uid(uid).gid(gid);
        }
        c
    }

    /// A libpq connection string for the `postgres` database.
    pub fn url(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user=fog dbname=postgres connect_timeout=5",
            self.port
        )
    }

    /// Start the server (again, after [`stop`](Self::stop)) on the same port.
    pub fn start_again(&mut self) -> anyhow::Result<()> {
        let log = std::fs::File::create(self.dir.path().join("postgres.log"))?;
        let child = self
            .command("postgres")
            .arg("-D")
            .arg(self.data_dir())
            .args(["-p", &self.port.to_string(), "-k"])
            .arg(self.dir.path())
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
                "-c",
                "max_connections=50",
            ])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting postgres")?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match self.with_client(|_| ()) {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() > deadline => {
                    let log = std::fs::read_to_string(self.dir.path().join("postgres.log"))
                        .unwrap_or_default();
                    bail!("postgres did not take connections in 30 s: {e}\n{log}");
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// Stop the server at once (an immediate shutdown: to its clients, a crash).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            crate::process::signal(&child, "QUIT");
            let _ = crate::process::exit_within(&mut child, Duration::from_secs(10));
        }
    }

    /// `f` with a client of the database, for a test's own checks. On a thread of its
    /// own: the blocking client runs a runtime, which cannot start inside a test's.
    pub fn with_client<T: Send>(
        &self,
        f: impl FnOnce(&mut postgres::Client) -> T + Send,
    ) -> anyhow::Result<T> {
        let url = self.url();
        std::thread::scope(|s| {
            s.spawn(move || {
                let mut c = postgres::Client::connect(&url, postgres::NoTls)?;
                Ok(f(&mut c))
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// One statement, as a test's own step (an SQL error fails it).
    pub fn execute(&self, sql: &str) -> anyhow::Result<u64> {
        self.with_client(|c| c.execute(sql, &[]))?
            .with_context(|| format!("running {sql}"))
    }
}

impl Drop for TestPostgres {
    fn drop(&mut self) {
        self.stop();
    }
}
