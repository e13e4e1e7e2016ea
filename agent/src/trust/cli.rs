//! `fog-agent trust add|list|remove`: the trusted-keys folder from the command line.

use std::path::Path;
use std::process::ExitCode;

use crate::cli::TrustAction;
use crate::config::Config;

use super::store::{self, TrustError};

/// Run a `trust` action against the folder that the config at `path` names (the
/// defaults' folder when the file does not exist yet: a fresh install).
pub fn run(action: &TrustAction, path: &Path) -> ExitCode {
    let config = if path.exists() {
        Config::load(path)
    } else {
        Config::from_toml("")
    };
    let config = match config {
        Ok(c) => c,
        Err(e) => {
            eprintln!("fog-agent: {e}");
            return ExitCode::from(78);
        }
    };
    match act(action, &config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e @ (TrustError::Key(_) | TrustError::NotFound(_))) => {
            eprintln!("fog-agent: {e}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("fog-agent: {e}");
            ExitCode::FAILURE
        }
    }
}

fn act(action: &TrustAction, config: &Config) -> Result<(), TrustError> {
    let dir = config.trust.keys_dir.as_deref();
    match action {
        TrustAction::Add(line) => {
            let dir = dir.ok_or(TrustError::NoDir)?;
            let (key, new) = store::add(dir, line)?;
            if new {
                println!(
                    "trusted {} in {} (restart fog-agent to use it)",
                    key.id(),
                    dir.display()
                );
            } else {
                println!("{} is already trusted in {}", key.id(), dir.display());
            }
        }
        TrustAction::List => {
            for k in &config.trust.coordinator_keys {
                println!("{}  {}  (config)", k.id(), k.line());
            }
            if let Some(dir) = dir {
                for (path, k) in store::read_dir(dir)? {
                    println!("{}  {}  ({})", k.id(), k.line(), path.display());
                }
            }
            let keys = store::trusted_keys(config)?;
            println!("{}", store::describe(config, &keys));
        }
        TrustAction::Remove(id) => {
            let dir = dir.ok_or(TrustError::NoDir)?;
            let key = store::remove(dir, id)?;
            println!(
                "no longer trusting {} (restart fog-agent to apply)",
                key.id()
            );
            if config.trust.coordinator_keys.contains(&key) {
                println!("note: the config's trust.coordinator_keys still lists it");
            }
        }
    }
    Ok(())
}
