//! The coordinator's signing key: `<security.key_dir>/coordinator.key`, made at the
//! first start if missing, or a throwaway key for a run without a key folder.

use std::path::{Path, PathBuf};

use fog_rt::keys::{KeyError, KeyPair};

use crate::config::SecurityConfig;

pub const KEY_FILE: &str = "coordinator.key";

/// `<dir>/coordinator.key`.
pub fn key_path(dir: &Path) -> PathBuf {
    dir.join(KEY_FILE)
}

/// The key that signs assignments, and whether it is a throwaway.
pub fn signing_key(security: &SecurityConfig) -> Result<(KeyPair, bool), KeyError> {
    let Some(dir) = &security.key_dir else {
        let (key, _) = KeyPair::generate()?;
        tracing::warn!(
            key.id = key.public().id(),
            key.line = %key.public().line(),
            "no security.key_dir (and no data_dir): signing with a throwaway key for this run; agents must trust this exact line, and a restart changes it"
        );
        return Ok((key, true));
    };
    let path = key_path(dir);
    let (key, made) = KeyPair::load_or_create(&path)?;
    if made {
        tracing::info!(
            path = %path.display(),
            key.id = key.public().id(),
            "made the coordinator's signing key; trust it on each agent with: fog-agent trust add '{}'",
            key.public().line()
        );
    } else {
        tracing::info!(
            key.id = key.public().id(),
            "signing assignments with {}",
            path.display()
        );
    }
    Ok((key, false))
}

/// What `fog-coordinator status` says about this coordinator's security.
#[derive(Debug, Clone, Default)]
pub struct Posture {
    pub signing_key: String,
    pub warnings: Vec<String>,
}

impl Posture {
    pub fn new(security: &SecurityConfig, key: &KeyPair, throwaway: bool) -> Posture {
        let mut warnings = Vec::new();
        if throwaway {
            warnings.push("signing with a throwaway key (no security.key_dir)".to_owned());
        }
        if security.allow_unsigned_submissions {
            warnings.push(
                "security.allow_unsigned_submissions: anyone on the broker can submit tasks"
                    .to_owned(),
            );
        }
        if security.allow_unapproved_nodes {
            warnings.push(
                "security.allow_unapproved_nodes: node messages are believed without an approved key"
                    .to_owned(),
            );
        }
        for w in &warnings {
            tracing::warn!("{w} (lab only)");
        }
        Posture {
            signing_key: key.public().id().to_owned(),
            warnings,
        }
    }
}
