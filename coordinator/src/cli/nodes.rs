//! `fog-coordinator nodes`: which node keys are approved, which wait, approving and
//! revoking them (files under the config's security.nodes_dir; the running
//! coordinator picks a change up within a second of the node's next message).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use fog_coordinator::config::CoordinatorConfig;
use fog_coordinator::identity::store;
use fog_proto::NodeId;
use fog_rt::keys::PublicKey;

use super::{failure, usage};

#[derive(clap::Args)]
pub struct Args {
    /// Config file whose security.nodes_dir to use.
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    /// The node keys folder, instead of the config's.
    #[arg(long, global = true)]
    dir: Option<PathBuf>,
    #[command(subcommand)]
    command: NodesCommand,
}

#[derive(clap::Subcommand)]
enum NodesCommand {
    /// Approved node keys and the ones waiting, with their key ids.
    List,
    /// Believe NODE from now on, signed by the key it announced (or by --key).
    Approve {
        node: String,
        /// Approve this key line instead of the pending one.
        #[arg(long)]
        key: Option<String>,
    },
    /// Stop believing NODE (its approved and pending keys are removed).
    Revoke { node: String },
    /// Take an offline NODE out of the fleet (status, console, /metrics, Home
    /// Assistant), through a running coordinator's HTTP API, signed with a client key.
    /// Its retained status no longer brings it back; starting its agent again does.
    Forget {
        node: String,
        /// The coordinator's HTTP API.
        #[arg(long, default_value = "http://127.0.0.1:9464")]
        url: String,
        #[command(flatten)]
        sign: super::keys::SignArgs,
    },
}

pub fn run(a: &Args) -> Result<ExitCode, ExitCode> {
    match &a.command {
        NodesCommand::List => list(&nodes_dir(a)?),
        NodesCommand::Approve { node, key } => approve(&nodes_dir(a)?, node, key.as_deref()),
        NodesCommand::Revoke { node } => {
            let dir = nodes_dir(a)?;
            let id = node_id(node)?;
            if store::revoke(&dir, &id).map_err(|e| failure(&e))? {
                println!("revoked {id}");
                Ok(ExitCode::SUCCESS)
            } else {
                Err(usage(&format!(
                    "no key for node {id:?} in {}",
                    dir.display()
                )))
            }
        }
        NodesCommand::Forget { node, url, sign } => {
            let v = super::drain::node_command(url, a.config.as_deref(), sign, node, "forget")?;
            println!(
                "{}: forgotten (it was {}); it comes back only if its agent starts again",
                v["node"].as_str().unwrap_or(node),
                v["was"].as_str().unwrap_or("offline")
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn nodes_dir(a: &Args) -> Result<PathBuf, ExitCode> {
    if let Some(d) = &a.dir {
        return Ok(d.clone());
    }
    let cfg = match &a.config {
        Some(p) => CoordinatorConfig::load(p),
        None => CoordinatorConfig::from_toml("", "<defaults>"),
    }
    .map_err(super::config_err)?;
    cfg.security.nodes_dir.ok_or_else(|| {
        usage("no node keys folder: give --dir, or set security.nodes_dir (or data_dir)")
    })
}

fn node_id(node: &str) -> Result<NodeId, ExitCode> {
    NodeId::new(node).map_err(|e| usage(&format!("{node:?}: {e}")))
}

fn list(dir: &Path) -> Result<ExitCode, ExitCode> {
    let approved = store::approved(dir).map_err(|e| failure(&e))?;
    let pending = store::pending(dir).map_err(|e| failure(&e))?;
    println!("{:<24} {:<10} {:<18} KEY", "NODE", "STATE", "KEY ID");
    for (n, k) in &approved {
        println!("{:<24} {:<10} {:<18} {}", n, "approved", k.id(), k.line());
    }
    for (n, k) in &pending {
        let state = if approved.iter().any(|(a, _)| a == n) {
            "new key"
        } else {
            "pending"
        };
        println!("{:<24} {:<10} {:<18} {}", n, state, k.id(), k.line());
    }
    if !pending.is_empty() {
        eprintln!("approve with: fog-coordinator nodes approve NODE (compare the key id with `journalctl -u fog-agent` on the node)");
    }
    Ok(ExitCode::SUCCESS)
}

fn approve(dir: &Path, node: &str, key: Option<&str>) -> Result<ExitCode, ExitCode> {
    let id = node_id(node)?;
    let key = key
        .map(PublicKey::from_line)
        .transpose()
        .map_err(|e| usage(&e.to_string()))?;
    let (new, old) = store::approve(dir, &id, key).map_err(|e| match e {
        store::StoreError::NotPending(_) => usage(&e.to_string()),
        e => failure(&e),
    })?;
    match old {
        Some(old) if old != new => {
            println!("approved {id}: key {} (replaces {})", new.id(), old.id())
        }
        _ => println!("approved {id}: key {}", new.id()),
    }
    Ok(ExitCode::SUCCESS)
}
