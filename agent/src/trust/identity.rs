//! This node's key: made on first start as `<data_dir>/node.key`, kept across
//! restarts, announced in the birth record for the coordinator to approve.

use std::path::Path;

use fog_proto::Sealed;
use fog_rt::keys::{seal, KeyError, KeyPair};

pub const NODE_KEY_FILE: &str = "node.key";

pub struct Identity {
    key: KeyPair,
    node: String,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Identity({} {})", self.node, self.key.public().id())
    }
}

impl Identity {
    /// The node key in `data_dir`, made if missing; `true` when it was just made.
    pub fn load_or_create(data_dir: &Path, node: &str) -> Result<(Identity, bool), KeyError> {
        let (key, made) = KeyPair::load_or_create(&data_dir.join(NODE_KEY_FILE))?;
        Ok((
            Identity {
                key,
                node: node.to_owned(),
            },
            made,
        ))
    }

    /// `fog-ed25519 <base64>`, as the birth record carries it.
    pub fn line(&self) -> String {
        self.key.public().line()
    }

    pub fn key_id(&self) -> &str {
        self.key.public().id()
    }

    /// Sign `msg` as this node. Only fails for a message that cannot be encoded at
    /// all, which the caller's own encode would report too; then it goes unsigned.
    pub fn seal<M: Sealed>(&self, msg: &mut M, at_ms: u64) {
        if let Err(error) = seal(msg, &self.key, &self.node, at_ms) {
            tracing::error!(%error, what = M::NAME, "cannot sign a message");
        }
    }
}
