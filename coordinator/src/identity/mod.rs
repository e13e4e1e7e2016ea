//! Node identity: a node's messages are believed only when signed by the key an
//! operator approved for it (like SaltStack's key acceptance).
//!
//! A node makes its key on first start and announces it in its birth record. The
//! coordinator pins it once approved (`fog-coordinator nodes approve NODE`, which moves
//! `<nodes_dir>/pending/NODE.pub` to `approved/`, or `[security.node_keys]`). Until
//! then the node is `unapproved`: its status, heartbeats, readings and results are
//! dropped and counted, and its key waits in `pending/`. A message for an approved
//! node signed by any other key (or by none) is an `impostor`'s: dropped and counted,
//! and the other key is kept in `pending/` too, so a reinstalled node can be approved
//! again with one command.

pub mod store;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Duration;

use tokio::time::Instant;

use fog_proto::{NodeId, Sealed};
use fog_rt::keys::{open, PublicKey, SealError};

/// How often the approved folder is looked at again for a node that is not believed.
const RECHECK: Duration = Duration::from_secs(1);

/// Why a node's message was not believed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Distrust {
    /// Nobody approved a key for this node yet.
    Unapproved,
    /// Not signed by the approved key.
    Impostor(SealError),
}

impl Distrust {
    pub fn counter(&self) -> &'static str {
        match self {
            Distrust::Unapproved => "node_messages_unapproved_total",
            Distrust::Impostor(_) => "node_messages_impostor_total",
        }
    }
}

/// A node that spoke and is not believed.
#[derive(Debug, Clone)]
pub struct Claim {
    /// The key it announced (empty when it announced none).
    pub key: String,
    pub key_id: String,
    pub impostor: bool,
}

#[derive(Debug)]
pub struct NodeKeys {
    /// `security.allow_unapproved_nodes`: believe everything.
    open: bool,
    approved: HashMap<NodeId, PublicKey>,
    dir: Option<PathBuf>,
    claims: BTreeMap<NodeId, Claim>,
    checked: HashMap<NodeId, Instant>,
}

impl NodeKeys {
    /// Believe every node (lab mode and tests that are not about identity).
    pub fn open() -> NodeKeys {
        NodeKeys {
            open: true,
            approved: HashMap::new(),
            dir: None,
            claims: BTreeMap::new(),
            checked: HashMap::new(),
        }
    }

    /// Keys pinned in the config plus the approved folder `dir`; `open` believes
    /// everyone (`security.allow_unapproved_nodes`).
    pub fn new(
        pinned: &BTreeMap<NodeId, PublicKey>,
        dir: Option<&std::path::Path>,
        open: bool,
    ) -> Result<NodeKeys, store::StoreError> {
        let mut approved: HashMap<NodeId, PublicKey> =
            pinned.iter().map(|(n, k)| (n.clone(), k.clone())).collect();
        if let Some(dir) = dir {
            for (node, key) in store::approved(dir)? {
                approved.entry(node).or_insert(key);
            }
        }
        Ok(NodeKeys {
            open,
            approved,
            dir: dir.map(ToOwned::to_owned),
            claims: BTreeMap::new(),
            checked: HashMap::new(),
        })
    }

    pub fn is_open(&self) -> bool {
        self.open
    }

    /// Believe `msg` from `node`? `announced` is the key a birth record carries.
    pub fn check<M: Sealed>(
        &mut self,
        node: &NodeId,
        msg: &mut M,
        announced: Option<&str>,
        now: Instant,
    ) -> Result<(), Distrust> {
        if self.open {
            return Ok(());
        }
        if !self.approved.contains_key(node) || self.claims.contains_key(node) {
            // Not believed yet, or flagged: an approval may have been written since.
            self.recheck(node, now);
        }
        let Some(key) = self.approved.get(node) else {
            self.claim(node, msg, announced, false);
            return Err(Distrust::Unapproved);
        };
        match open(msg, std::slice::from_ref(key), node.as_str(), None) {
            Ok(_) => {
                // An impostor flag stays until the operator approves a key again: it is
                // an alarm, and the real node's next heartbeat must not silence it.
                let clears = self.claims.get(node).is_some_and(|c| !c.impostor)
                    && announced.is_none_or(|a| PublicKey::from_line(a).ok().as_ref() == Some(key));
                if clears {
                    self.claims.remove(node);
                }
                Ok(())
            }
            Err(e) => {
                self.claim(node, msg, announced, true);
                Err(Distrust::Impostor(e))
            }
        }
    }

    /// Note a node that is not believed; keep an announced key in `pending/`.
    fn claim<M: Sealed>(
        &mut self,
        node: &NodeId,
        msg: &M,
        announced: Option<&str>,
        impostor: bool,
    ) {
        let key_id = msg.seal().map(|s| s.key.clone()).unwrap_or_default();
        if let Some(line) = announced {
            if let Ok(k) = PublicKey::from_line(line) {
                if let Some(dir) = &self.dir {
                    if let Err(error) = store::put_pending(dir, node, &k) {
                        tracing::warn!(node.id = %node, %error, "cannot record the node's key as pending");
                    }
                }
                let fresh = !self.claims.contains_key(node);
                if fresh {
                    tracing::warn!(
                        node.id = %node, key.id = k.id(), impostor,
                        "{}: approve it with `fog-coordinator nodes approve {node}`",
                        if impostor { "a node announced a key other than the approved one" } else { "a new node waits for approval" }
                    );
                }
                self.claims.insert(
                    node.clone(),
                    Claim {
                        key: k.line(),
                        key_id: k.id().to_owned(),
                        impostor,
                    },
                );
                return;
            }
        }
        self.claims.entry(node.clone()).or_insert(Claim {
            key: String::new(),
            key_id,
            impostor,
        });
    }

    /// Look at `approved/<node>.pub` again (at most once per RECHECK per node).
    fn recheck(&mut self, node: &NodeId, now: Instant) {
        let Some(dir) = &self.dir else { return };
        if self
            .checked
            .get(node)
            .is_some_and(|t| now.duration_since(*t) < RECHECK)
        {
            return;
        }
        self.checked.insert(node.clone(), now);
        match store::approved_key(dir, node) {
            Ok(Some(k)) => {
                if self.approved.get(node) != Some(&k) {
                    tracing::info!(node.id = %node, key.id = k.id(), "node key approved");
                    self.approved.insert(node.clone(), k);
                    self.claims.remove(node);
                }
            }
            Ok(None) => {}
            Err(error) => {
                tracing::warn!(node.id = %node, %error, "cannot read the node's approved key")
            }
        }
    }

    /// `approved`, `unapproved` or `impostor`, for the status.
    pub fn standing(&self, node: &NodeId) -> &'static str {
        match (self.claims.get(node), self.approved.contains_key(node)) {
            _ if self.open => "unchecked",
            (Some(c), _) if c.impostor => "impostor",
            (_, true) => "approved",
            _ => "unapproved",
        }
    }

    /// Nodes that spoke and are not believed.
    pub fn claims(&self) -> &BTreeMap<NodeId, Claim> {
        &self.claims
    }
}

#[cfg(test)]
mod tests;
