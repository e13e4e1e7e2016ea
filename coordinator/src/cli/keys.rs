//! `fog-coordinator keys`: make keys. `keys client NAME` writes a client's key pair and
//! prints the `[clients.NAME]` table the coordinator's config needs. Also the signing
//! flags `submit` and `bench` share (`--key`, `--client-name`).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use fog_coordinator::client::Signer;
use fog_coordinator::clients::valid_client_name;
use fog_coordinator::config::CoordinatorConfig;
use fog_rt::keys::{public_path, KeyPair, PublicKey};

use super::{failure, usage};

/// The environment variable that names a client key when `--key` does not.
pub const CLIENT_KEY_ENV: &str = "FOG_CLIENT_KEY";

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: KeysCommand,
}

#[derive(clap::Subcommand)]
enum KeysCommand {
    /// Make the coordinator's signing key (coordinator.key, mode 0600) in DIR, or in the
    /// config's security.key_dir; refuses to replace one.
    Init {
        /// Where to write it (default: the config's security.key_dir).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Config file whose security.key_dir to use.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Print the coordinator's public key as one line, for `fog-agent trust add`.
    Show {
        #[arg(long)]
        dir: Option<PathBuf>,
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Make a key for a client that submits tasks (NAME.key, mode 0600, and NAME.key.pub)
    /// and print the [clients.NAME] table to paste into the coordinator's config.
    Client {
        /// The client's name: letters, digits, `-` and `_` (it becomes part of MQTT
        /// topics and a broker user name).
        name: String,
        /// Where to write the key files.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// A task kind the client may submit (repeat for more; `*` for any). Without
        /// one, the table says `kinds = []`: edit it before use.
        #[arg(long = "kind", value_name = "KIND")]
        kinds: Vec<String>,
    },
}

pub fn run(a: Args) -> Result<ExitCode, ExitCode> {
    match a.command {
        KeysCommand::Client { name, dir, kinds } => client(&name, &dir, &kinds),
        KeysCommand::Init { dir, config } => init(&key_dir(dir, config.as_deref())?),
        KeysCommand::Show { dir, config } => show(&key_dir(dir, config.as_deref())?),
    }
}

/// `--dir`, else the config's (or the defaults') security.key_dir.
fn key_dir(dir: Option<PathBuf>, config: Option<&Path>) -> Result<PathBuf, ExitCode> {
    if let Some(d) = dir {
        return Ok(d);
    }
    let cfg = match config {
        Some(p) => CoordinatorConfig::load(p),
        None => CoordinatorConfig::from_toml("", "<defaults>"),
    }
    .map_err(super::config_err)?;
    cfg.security.key_dir.ok_or_else(|| {
        usage("no key folder: give --dir, or set security.key_dir (or data_dir) in the config")
    })
}

fn init(dir: &Path) -> Result<ExitCode, ExitCode> {
    let path = fog_coordinator::signing::key_path(dir);
    let key = KeyPair::create(&path).map_err(|e| failure(&e))?;
    eprintln!("wrote {} (private, mode 0600)", path.display());
    eprintln!("on each agent, trust it with:");
    println!("fog-agent trust add '{}'", key.public().line());
    Ok(ExitCode::SUCCESS)
}

fn show(dir: &Path) -> Result<ExitCode, ExitCode> {
    let path = fog_coordinator::signing::key_path(dir);
    let key = KeyPair::load(&path).map_err(|e| failure(&e))?;
    println!("{}", key.public().line());
    eprintln!(
        "key id {}; on each agent: fog-agent trust add '<the line above>'",
        key.public().id()
    );
    Ok(ExitCode::SUCCESS)
}

fn client(name: &str, dir: &Path, kinds: &[String]) -> Result<ExitCode, ExitCode> {
    valid_client_name(name).map_err(|e| usage(&e))?;
    if let Some(k) = kinds.iter().find(|k| k.is_empty() || k.contains('"')) {
        return Err(usage(&format!("--kind {k:?} is not a task kind")));
    }
    let path = dir.join(format!("{name}.key"));
    let key = KeyPair::create(&path).map_err(|e| failure(&e))?;
    eprintln!(
        "wrote {} (private, keep it on the client) and {}",
        path.display(),
        public_path(&path).display()
    );
    eprintln!(
        "sign with: fog-coordinator submit --key {} ... (or {CLIENT_KEY_ENV}={})",
        path.display(),
        path.display()
    );
    eprintln!("paste this into the coordinator's config and restart it:");
    print!("{}", client_table(name, key.public(), kinds));
    Ok(ExitCode::SUCCESS)
}

/// The `[clients.NAME]` table for `key`, every line commented.
pub(super) fn client_table(name: &str, key: &PublicKey, kinds: &[String]) -> String {
    let kinds = kinds
        .iter()
        .map(|k| format!("\"{k}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let mut t = String::new();
    let _ = writeln!(t, "[clients.{name}]");
    let _ = writeln!(t, "# Its public key (id {}).", key.id());
    let _ = writeln!(t, "key = \"{}\"", key.line());
    let _ = writeln!(
        t,
        "# Task kinds it may submit, e.g. [\"sha256\", \"echo\"]; [\"*\"] for any."
    );
    let _ = writeln!(t, "kinds = [{kinds}]");
    let _ = writeln!(t, "# Node ids its tasks may run on; empty for any.");
    let _ = writeln!(t, "nodes = []");
    let _ = writeln!(
        t,
        "# Its tasks go only to nodes carrying all these labels, e.g. {{ site = \"barn\" }}."
    );
    let _ = writeln!(t, "labels = {{}}");
    t
}

/// How `submit` and `bench` sign.
#[derive(clap::Args)]
pub struct SignArgs {
    /// Sign the submissions with this client key (made by `keys client`); default:
    /// $FOG_CLIENT_KEY, then the config's `security.client_key`; without any, unsigned.
    #[arg(long, value_name = "FILE")]
    key: Option<PathBuf>,
    /// The client name to sign as (default: the key file's stem, `ops.key` -> `ops`).
    #[arg(long, value_name = "NAME", requires = "key")]
    client_name: Option<String>,
}

impl SignArgs {
    /// The signer from `--key`, `FOG_CLIENT_KEY` or the config, if any names a key.
    pub fn signer(&self, cfg: &CoordinatorConfig) -> Result<Option<Signer>, ExitCode> {
        let env = std::env::var_os(CLIENT_KEY_ENV)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from);
        let Some(path) = self
            .key
            .clone()
            .or(env)
            .or_else(|| cfg.security.client_key.clone())
        else {
            return Ok(None);
        };
        Signer::load(&path, self.client_name.as_deref())
            .map(Some)
            .map_err(|e| match e {
                fog_coordinator::client::ClientError::BadName(why) => usage(&why),
                e => failure(&e),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_printed_table_is_a_valid_clients_entry() {
        let dir = tempfile::tempdir().expect("temp dir");
        let key = KeyPair::create(&dir.path().join("ops.key")).expect("key");
        let table = client_table("ops", key.public(), &["echo".into(), "sha256".into()]);
        let cfg = CoordinatorConfig::from_toml(&table, "pasted").expect("valid config");
        let c = &cfg.security.clients["ops"];
        assert_eq!(&c.key, key.public());
        assert_eq!(
            c.kinds,
            fog_coordinator::clients::Kinds::Only(vec!["echo".into(), "sha256".into()])
        );
        assert!(c.nodes.is_empty() && c.labels.is_empty());
        assert!(table.lines().filter(|l| l.starts_with('#')).count() >= 4);
    }
}
