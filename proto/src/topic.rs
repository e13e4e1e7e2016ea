//! Topic names: builders and a parser, both behind validated names.
//!
//! Layout (the prefix defaults to `fog`):
//!
//! ```text
//! {prefix}/v1/nodes/{node}/{status|heartbeat|metrics|alerts|tasks|results}
//! {prefix}/v1/tasks/submit
//! {prefix}/v1/coordinator/status
//! {prefix}/v1/cluster/scaling
//! ```

use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest node id accepted (bytes). Topic names stay well under broker limits.
pub const MAX_NODE_ID_LEN: usize = 64;
/// Longest prefix accepted (bytes).
pub const MAX_PREFIX_LEN: usize = 128;

/// Why a name or a topic was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    #[error("{what} is empty")]
    Empty { what: &'static str },
    #[error("{what} is {len} bytes long; the limit is {max}")]
    TooLong {
        what: &'static str,
        len: usize,
        max: usize,
    },
    #[error("{what} {value:?} contains {ch:?}, which is not allowed in a topic segment")]
    BadChar {
        what: &'static str,
        value: String,
        ch: char,
    },
    #[error("prefix {value:?} has an empty segment (leading, trailing or doubled '/')")]
    EmptySegment { value: String },
    #[error("topic {topic:?} is not a fog topic under prefix {prefix:?}")]
    Foreign { topic: String, prefix: String },
}

fn check_segment(
    what: &'static str,
    value: &str,
    max: usize,
    allow_slash: bool,
) -> Result<(), TopicError> {
    if value.is_empty() {
        return Err(TopicError::Empty { what });
    }
    if value.len() > max {
        return Err(TopicError::TooLong {
            what,
            len: value.len(),
            max,
        });
    }
    if let Some(ch) = value.chars().find(|&c| {
        c == '+' || c == '#' || (c == '/' && !allow_slash) || c.is_control() || c.is_whitespace()
    }) {
        return Err(TopicError::BadChar {
            what,
            value: value.to_owned(),
            ch,
        });
    }
    Ok(())
}

/// A node's id: one topic segment, 1 to 64 bytes, no `+`, `#`, `/`, whitespace or
/// control characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct NodeId(String);

impl NodeId {
    pub fn new(s: impl Into<String>) -> Result<Self, TopicError> {
        let s = s.into();
        check_segment("node id", &s, MAX_NODE_ID_LEN, false)?;
        Ok(NodeId(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for NodeId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for NodeId {
    type Error = TopicError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        NodeId::new(s)
    }
}

impl From<NodeId> for String {
    fn from(n: NodeId) -> String {
        n.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for NodeId {
    type Err = TopicError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        NodeId::new(s)
    }
}

/// The topic prefix: one or more non-empty segments separated by `/`, no wildcards.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Prefix(String);

impl Prefix {
    pub fn new(s: impl Into<String>) -> Result<Self, TopicError> {
        let s = s.into();
        check_segment("prefix", &s, MAX_PREFIX_LEN, true)?;
        if s.split('/').any(str::is_empty) {
            return Err(TopicError::EmptySegment { value: s });
        }
        Ok(Prefix(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for Prefix {
    fn default() -> Self {
        Prefix("fog".to_owned())
    }
}

impl TryFrom<String> for Prefix {
    type Error = TopicError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Prefix::new(s)
    }
}

impl From<Prefix> for String {
    fn from(p: Prefix) -> String {
        p.0
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The per-node topics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NodeTopic {
    Status,
    Heartbeat,
    Metrics,
    Alerts,
    Tasks,
    Results,
}

impl NodeTopic {
    pub const ALL: [NodeTopic; 6] = [
        NodeTopic::Status,
        NodeTopic::Heartbeat,
        NodeTopic::Metrics,
        NodeTopic::Alerts,
        NodeTopic::Tasks,
        NodeTopic::Results,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            NodeTopic::Status => "status",
            NodeTopic::Heartbeat => "heartbeat",
            NodeTopic::Metrics => "metrics",
            NodeTopic::Alerts => "alerts",
            NodeTopic::Tasks => "tasks",
            NodeTopic::Results => "results",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        NodeTopic::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

/// What an incoming topic is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParsedTopic {
    Node(NodeId, NodeTopic),
    Submit,
    CoordinatorStatus,
    Scaling,
}

/// Topic builder and parser for one prefix.
#[derive(Debug, Clone)]
pub struct Topics {
    /// `{prefix}/v1`, computed once.
    base: String,
    prefix: Prefix,
}

impl Default for Topics {
    fn default() -> Self {
        Topics::new(Prefix::default())
    }
}

impl Topics {
    pub fn new(prefix: Prefix) -> Self {
        Topics {
            base: format!("{prefix}/v1"),
            prefix,
        }
    }

    pub fn prefix(&self) -> &Prefix {
        &self.prefix
    }

    /// `{prefix}/v1/nodes/{node}/{kind}`
    pub fn node(&self, node: &NodeId, kind: NodeTopic) -> String {
        format!("{}/nodes/{}/{}", self.base, node, kind.as_str())
    }

    /// `{prefix}/v1/nodes/+/{kind}`: every node's topic of one kind.
    pub fn all_nodes(&self, kind: NodeTopic) -> String {
        format!("{}/nodes/+/{}", self.base, kind.as_str())
    }

    /// `{prefix}/v1/clients/{client}/results`: where a client asks for its results.
    pub fn client_results(&self, client: &NodeId) -> String {
        format!("{}/clients/{}/results", self.base, client)
    }

    /// `{prefix}/v1/clients/{name}/{client}/results`: the reply topic of a signing
    /// client `name` (connection `client`), under [`Topics::client_namespace`].
    pub fn named_client_results(&self, name: &str, client: &NodeId) -> String {
        format!("{}/clients/{name}/{client}/results", self.base)
    }

    /// `{prefix}/v1/clients/{name}/`: every topic client `name` may be answered on
    /// (and all a broker ACL lets it read, as `clients/{name}/#`).
    pub fn client_namespace(&self, name: &str) -> String {
        format!("{}/clients/{name}/", self.base)
    }

    pub fn submit(&self) -> String {
        format!("{}/tasks/submit", self.base)
    }

    pub fn coordinator_status(&self) -> String {
        format!("{}/coordinator/status", self.base)
    }

    pub fn scaling(&self) -> String {
        format!("{}/cluster/scaling", self.base)
    }

    /// `{prefix}/v1/ha/{node}/{leaf}`: what the coordinator republishes for Home
    /// Assistant (a node's live state, its connectivity).
    pub fn home_assistant(&self, node: &NodeId, leaf: &str) -> String {
        format!("{}/ha/{node}/{leaf}", self.base)
    }

    /// `{prefix}/v1/ha/#`
    pub fn all_home_assistant(&self) -> String {
        format!("{}/ha/#", self.base)
    }

    /// Parse a per-node topic without allocating: the node segment (validated) and kind.
    pub fn parse_node<'t>(&self, topic: &'t str) -> Result<(&'t str, NodeTopic), TopicError> {
        let foreign = || TopicError::Foreign {
            topic: topic.chars().take(256).collect(),
            prefix: self.prefix.to_string(),
        };
        let rest = topic
            .strip_prefix(self.base.as_str())
            .and_then(|r| r.strip_prefix("/nodes/"))
            .ok_or_else(foreign)?;
        let (node, kind) = rest.split_once('/').ok_or_else(foreign)?;
        let kind = NodeTopic::parse(kind).ok_or_else(foreign)?;
        check_segment("node id", node, MAX_NODE_ID_LEN, false)?;
        Ok((node, kind))
    }

    /// Map a topic back to what it is. Anything not built by this `Topics` is
    /// [`TopicError::Foreign`]; a node segment that is not a valid [`NodeId`] is refused.
    pub fn parse(&self, topic: &str) -> Result<ParsedTopic, TopicError> {
        let foreign = || TopicError::Foreign {
            topic: topic.chars().take(256).collect(),
            prefix: self.prefix.to_string(),
        };
        let rest = topic
            .strip_prefix(self.base.as_str())
            .and_then(|r| r.strip_prefix('/'))
            .ok_or_else(foreign)?;
        let mut parts = rest.split('/');
        let parsed = match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some("nodes"), Some(node), Some(kind), None) => {
                let kind = NodeTopic::parse(kind).ok_or_else(foreign)?;
                ParsedTopic::Node(NodeId::new(node)?, kind)
            }
            (Some("tasks"), Some("submit"), None, None) => ParsedTopic::Submit,
            (Some("coordinator"), Some("status"), None, None) => ParsedTopic::CoordinatorStatus,
            (Some("cluster"), Some("scaling"), None, None) => ParsedTopic::Scaling,
            _ => return Err(foreign()),
        };
        Ok(parsed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_refuse_wildcards_separators_and_empties() {
        assert!(NodeId::new("pi-07.barn_2").is_ok());
        for bad in ["", "a/b", "a+b", "#", "a b", "tab\t", &"x".repeat(65)] {
            assert!(NodeId::new(bad).is_err(), "{bad:?} should be refused");
        }
        assert!(NodeId::new("x".repeat(64)).is_ok());
    }

    #[test]
    fn prefixes_refuse_empty_segments_and_wildcards() {
        assert!(Prefix::new("site/a").is_ok());
        for bad in ["", "/fog", "fog/", "a//b", "fog/+", "fog/#"] {
            assert!(Prefix::new(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn build_then_parse_round_trips() {
        let t = Topics::new(Prefix::new("farm/north").expect("valid"));
        let n = NodeId::new("pi-1").expect("valid");
        for kind in NodeTopic::ALL {
            let topic = t.node(&n, kind);
            assert_eq!(t.parse(&topic), Ok(ParsedTopic::Node(n.clone(), kind)));
        }
        assert_eq!(
            t.parse_node("farm/north/v1/nodes/pi-1/heartbeat"),
            Ok(("pi-1", NodeTopic::Heartbeat))
        );
        assert!(t
            .parse_node("farm/north/v1/nodes/pi-1/heartbeat/x")
            .is_err());
        assert!(t.parse_node("farm/north/v1/nodes/p+/heartbeat").is_err());
        assert_eq!(t.parse(&t.submit()), Ok(ParsedTopic::Submit));
        assert_eq!(
            t.parse(&t.coordinator_status()),
            Ok(ParsedTopic::CoordinatorStatus)
        );
        assert_eq!(t.parse(&t.scaling()), Ok(ParsedTopic::Scaling));
        assert_eq!(
            t.all_nodes(NodeTopic::Status),
            "farm/north/v1/nodes/+/status"
        );
    }

    #[test]
    fn foreign_and_malformed_topics_are_refused() {
        let t = Topics::default();
        for bad in [
            "other/v1/nodes/a/status",
            "fog/v2/nodes/a/status",
            "fog/v1/nodes/a/bogus",
            "fog/v1/nodes/a/status/extra",
            "fog/v1/nodes//status",
            "fog/v1nodes/a/status",
            "fog",
            "",
        ] {
            assert!(t.parse(bad).is_err(), "{bad:?} should be refused");
        }
    }
}
