//! The node keys folder: `approved/<node>.pub` and `pending/<node>.pub`, one public
//! key line each. The coordinator writes `pending/`; `fog-coordinator nodes approve`
//! moves a file to `approved/`; the coordinator reads `approved/`.

use std::path::{Path, PathBuf};

use fog_proto::NodeId;
use fog_rt::keys::{KeyError, PublicKey};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Key { path: PathBuf, source: KeyError },
    #[error("no node {0:?} waits for approval (see `fog-coordinator nodes list`)")]
    NotPending(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_owned(),
        source,
    }
}

fn read_key(path: &Path) -> Result<Option<PublicKey>, StoreError> {
    match std::fs::read_to_string(path) {
        Ok(text) => PublicKey::from_line(&text)
            .map(Some)
            .map_err(|source| StoreError::Key {
                path: path.to_owned(),
                source,
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(path)(e)),
    }
}

fn list(dir: &Path) -> Result<Vec<(NodeId, PublicKey)>, StoreError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(dir)(e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let path = entry.map_err(io(dir))?.path();
        let Some(node) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".pub"))
            .and_then(|n| NodeId::new(n).ok())
        else {
            continue;
        };
        if let Some(k) = read_key(&path)? {
            out.push((node, k));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

pub fn approved(dir: &Path) -> Result<Vec<(NodeId, PublicKey)>, StoreError> {
    list(&dir.join("approved"))
}

pub fn pending(dir: &Path) -> Result<Vec<(NodeId, PublicKey)>, StoreError> {
    list(&dir.join("pending"))
}

pub fn approved_key(dir: &Path, node: &NodeId) -> Result<Option<PublicKey>, StoreError> {
    read_key(&dir.join("approved").join(format!("{node}.pub")))
}

fn write(dir: &Path, node: &NodeId, key: &PublicKey) -> Result<(), StoreError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let path = dir.join(format!("{node}.pub"));
    let tmp = dir.join(format!(".{node}.pub.tmp"));
    std::fs::write(&tmp, format!("{}\n", key.line())).map_err(io(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(io(&path))
}

/// Record `key` as waiting for approval (replacing an older pending one).
pub fn put_pending(dir: &Path, node: &NodeId, key: &PublicKey) -> Result<(), StoreError> {
    if pending(dir)?.iter().any(|(n, k)| n == node && k == key) {
        return Ok(());
    }
    write(&dir.join("pending"), node, key)
}

/// Approve `node`'s pending key (or `key`, given outright); the key approved and the
/// one it replaced, if any.
pub fn approve(
    dir: &Path,
    node: &NodeId,
    key: Option<PublicKey>,
) -> Result<(PublicKey, Option<PublicKey>), StoreError> {
    let pending_path = dir.join("pending").join(format!("{node}.pub"));
    let key = match key {
        Some(k) => k,
        None => read_key(&pending_path)?.ok_or_else(|| StoreError::NotPending(node.to_string()))?,
    };
    let old = approved_key(dir, node)?;
    write(&dir.join("approved"), node, &key)?;
    let _ = std::fs::remove_file(&pending_path);
    Ok((key, old))
}

/// Forget `node`'s approved and pending keys; whether there was anything.
pub fn revoke(dir: &Path, node: &NodeId) -> Result<bool, StoreError> {
    let mut any = false;
    for sub in ["approved", "pending"] {
        let p = dir.join(sub).join(format!("{node}.pub"));
        match std::fs::remove_file(&p) {
            Ok(()) => any = true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(&p)(e)),
        }
    }
    Ok(any)
}
