//! The trusted-keys folder: one `<key id>.pub` file per coordinator key, holding its
//! public key line. `fog-agent trust add/list/remove` work on it; a package can drop
//! a file there; the agent reads it at start.

use std::path::{Path, PathBuf};

use fog_rt::keys::{KeyError, PublicKey};

use crate::config::Config;

#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("trusted key file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("trusted key file {path}: {source}")]
    Bad { path: PathBuf, source: KeyError },
    #[error("no trusted-keys folder: set trust.keys_dir in the config")]
    NoDir,
    #[error("no trusted key {0:?} (see `fog-agent trust list`)")]
    NotFound(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TrustError + '_ {
    move |source| TrustError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The keys in `dir` (none if it does not exist), sorted by file name.
pub fn read_dir(dir: &Path) -> Result<Vec<(PathBuf, PublicKey)>, TrustError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(dir)(e)),
    };
    let mut paths = Vec::new();
    for entry in entries {
        let path = entry.map_err(io(dir))?.path();
        if path.extension().is_some_and(|e| e == "pub") {
            paths.push(path);
        }
    }
    paths.sort();
    let mut out = Vec::with_capacity(paths.len());
    for path in paths {
        let text = std::fs::read_to_string(&path).map_err(io(&path))?;
        let key = PublicKey::from_line(&text).map_err(|source| TrustError::Bad {
            path: path.clone(),
            source,
        })?;
        out.push((path, key));
    }
    Ok(out)
}

/// Every key this node trusts: the config's, then the folder's, each once.
pub fn trusted_keys(config: &Config) -> Result<Vec<PublicKey>, TrustError> {
    let mut keys = config.trust.coordinator_keys.clone();
    if let Some(dir) = &config.trust.keys_dir {
        for (_, k) in read_dir(dir)? {
            if !keys.contains(&k) {
                keys.push(k);
            }
        }
    }
    Ok(keys)
}

/// Install `line` in `dir` as `<id>.pub`; the key, and whether it was new.
pub fn add(dir: &Path, line: &str) -> Result<(PublicKey, bool), TrustError> {
    let key = PublicKey::from_line(line)?;
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let path = dir.join(format!("{}.pub", key.id()));
    if path.exists() {
        return Ok((key, false));
    }
    let tmp = dir.join(format!(".{}.pub.tmp", key.id()));
    std::fs::write(&tmp, format!("{}\n", key.line())).map_err(io(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(io(&path))?;
    Ok((key, true))
}

/// Remove the key whose id is (or starts with) `id` from `dir`.
pub fn remove(dir: &Path, id: &str) -> Result<PublicKey, TrustError> {
    let found: Vec<_> = read_dir(dir)?
        .into_iter()
        .filter(|(_, k)| !id.is_empty() && k.id().starts_with(id))
        .collect();
    match found.as_slice() {
        [(path, key)] => {
            std::fs::remove_file(path).map_err(io(path))?;
            Ok(key.clone())
        }
        _ => Err(TrustError::NotFound(id.to_owned())),
    }
}

/// One line for `check-config` and the start log: whose assignments run here.
pub fn describe(config: &Config, keys: &[PublicKey]) -> String {
    if config.trust.allow_unsigned {
        "tasks: ANY assignment runs, signed or not (trust.allow_unsigned = true: lab only)".into()
    } else if keys.is_empty() {
        "tasks: none will run: no trusted coordinator key (add one with `fog-agent trust add LINE`)"
            .into()
    } else {
        let ids: Vec<&str> = keys.iter().map(PublicKey::id).collect();
        format!(
            "tasks: signed by {} trusted coordinator key{} ({})",
            keys.len(),
            if keys.len() == 1 { "" } else { "s" },
            ids.join(", ")
        )
    }
}
