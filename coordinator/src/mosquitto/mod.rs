//! A Mosquitto 2.0 configuration for a fog site, generated from the roles that use
//! the broker, so the broker itself enforces who may publish and read what.
//!
//! * [`acl`]: the ACL file (one `user` block per role, topics taken from
//!   [`fog_proto::Topics`] and [`NodeTopic::ALL`]).
//! * [`passwd`]: the `$7$` PBKDF2-SHA512 password file Mosquitto 2.0 reads, and the
//!   random passwords.
//! * [`site`]: the files written to a directory (listener snippet, per-user
//!   credentials and `[broker]` snippets, the roles manifest), kept passwords on a
//!   re-run, and the all-or-nothing write.
//!
//! ```
//! use fog_coordinator::mosquitto::Roles;
//! let roles = Roles::new("fog", "fog-coordinator", &["pi-1"], &["ops"]).expect("valid");
//! let acl = fog_coordinator::mosquitto::acl::render(&roles);
//! assert!(acl.contains("topic write fog/v1/nodes/pi-1/results"));
//! ```

pub mod acl;
pub mod passwd;
pub mod site;

use std::collections::BTreeSet;

use fog_proto::{NodeId, Prefix, TopicError, Topics};

/// Why a role or a name was refused.
#[derive(Debug, thiserror::Error)]
pub enum RoleError {
    #[error("{role} {name:?} is not usable as an MQTT username and topic segment: {source}")]
    BadName {
        role: &'static str,
        name: String,
        source: TopicError,
    },
    #[error("{role} {name:?} contains ':', which a Mosquitto password file cannot hold")]
    Colon { role: &'static str, name: String },
    #[error(
        "{name:?} is given twice (as {first} and as {second}); every broker user has one role"
    )]
    Duplicate {
        name: String,
        first: &'static str,
        second: &'static str,
    },
    #[error("bad topic prefix {prefix:?}: {source}")]
    Prefix { prefix: String, source: TopicError },
}

/// Who uses the broker: the coordinator's username, the nodes (username = node id)
/// and the clients (username = client name). Every name is a valid topic segment.
#[derive(Debug, Clone)]
pub struct Roles {
    pub topics: Topics,
    pub coordinator: NodeId,
    pub nodes: BTreeSet<NodeId>,
    pub clients: BTreeSet<NodeId>,
}

fn name(role: &'static str, s: &str) -> Result<NodeId, RoleError> {
    let id = NodeId::new(s).map_err(|source| RoleError::BadName {
        role,
        name: s.to_owned(),
        source,
    })?;
    if s.contains(':') {
        return Err(RoleError::Colon {
            role,
            name: s.to_owned(),
        });
    }
    Ok(id)
}

impl Roles {
    /// Validate every name; a name used twice (in one role or across roles) is refused.
    pub fn new(
        prefix: &str,
        coordinator: &str,
        nodes: &[impl AsRef<str>],
        clients: &[impl AsRef<str>],
    ) -> Result<Roles, RoleError> {
        let prefix = Prefix::new(prefix).map_err(|source| RoleError::Prefix {
            prefix: prefix.to_owned(),
            source,
        })?;
        let coordinator = name("coordinator username", coordinator)?;
        let mut seen: Vec<(String, &'static str)> =
            vec![(coordinator.to_string(), "coordinator username")];
        let mut take = |role: &'static str, list: &[&str]| -> Result<BTreeSet<NodeId>, RoleError> {
            let mut out = BTreeSet::new();
            for s in list {
                let id = name(role, s)?;
                if let Some((_, first)) = seen.iter().find(|(n, _)| n == s) {
                    return Err(RoleError::Duplicate {
                        name: s.to_string(),
                        first,
                        second: role,
                    });
                }
                seen.push((s.to_string(), role));
                out.insert(id);
            }
            Ok(out)
        };
        let nodes: Vec<&str> = nodes.iter().map(AsRef::as_ref).collect();
        let clients: Vec<&str> = clients.iter().map(AsRef::as_ref).collect();
        let nodes = take("node id", &nodes)?;
        let clients = take("client name", &clients)?;
        Ok(Roles {
            topics: Topics::new(prefix),
            coordinator,
            nodes,
            clients,
        })
    }

    /// Every username, the coordinator first.
    pub fn users(&self) -> impl Iterator<Item = &NodeId> {
        std::iter::once(&self.coordinator)
            .chain(self.nodes.iter())
            .chain(self.clients.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_with_wildcards_separators_colons_or_twice_are_refused() {
        let none: [&str; 0] = [];
        assert!(Roles::new("fog", "fog-coordinator", &["pi-1", "pi-2"], &["ops"]).is_ok());
        for bad in ["a/b", "a+b", "#", "", "a b", "a:b"] {
            let e = Roles::new("fog", "c", &[bad], &none).expect_err(bad);
            assert!(e.to_string().contains("node id"), "{e}");
            let e = Roles::new("fog", "c", &none, &[bad]).expect_err(bad);
            assert!(e.to_string().contains("client name"), "{e}");
        }
        let e = Roles::new("fog", "c", &["x"], &["x"]).expect_err("twice");
        assert!(matches!(e, RoleError::Duplicate { .. }), "{e}");
        let e = Roles::new("fog", "c", &["c"], &none).expect_err("coordinator twice");
        assert!(matches!(e, RoleError::Duplicate { .. }), "{e}");
        assert!(Roles::new("fog/#", "c", &none, &none).is_err());
    }
}
