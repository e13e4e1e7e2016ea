//! Nodes an operator forgot (`fog-coordinator nodes forget NODE`), and when. The
//! broker still holds what such a node left retained (its offline status, its birth):
//! only the node's own broker user may clear it, so the coordinator cannot. Whatever
//! comes from it stamped before the forgetting is old news and is dropped; a message
//! stamped after it means the node was started again, and it is welcome back.
//!
//! Kept in `<data_dir>/forgotten` (`NODE AT_MS` a line), so a restart, which receives
//! every retained status again, does not bring forgotten nodes back.

use std::collections::HashMap;
use std::path::Path;

use fog_proto::NodeId;

/// Most nodes remembered as forgotten; past it the one forgotten longest ago goes
/// (its retained status could bring it back, once, as an offline node).
pub const MAX_FORGOTTEN: usize = 10_000;

#[derive(Debug, Default, Clone)]
pub struct Forgotten {
    at_ms: HashMap<NodeId, u64>,
}

impl Forgotten {
    pub fn is_empty(&self) -> bool {
        self.at_ms.is_empty()
    }

    pub fn len(&self) -> usize {
        self.at_ms.len()
    }

    /// `node` forgotten at `at_ms` (wall clock).
    pub fn insert(&mut self, node: NodeId, at_ms: u64) {
        if self.at_ms.len() >= MAX_FORGOTTEN && !self.at_ms.contains_key(&node) {
            if let Some(oldest) = self
                .at_ms
                .iter()
                .min_by_key(|(_, at)| **at)
                .map(|(n, _)| n.clone())
            {
                self.at_ms.remove(&oldest);
            }
        }
        self.at_ms.insert(node, at_ms);
    }

    /// When `node` was forgotten, if it is.
    pub fn get(&self, node: &str) -> Option<u64> {
        self.at_ms.get(node).copied()
    }

    /// Whether a message from `node` stamped `at_ms` (by the node's clock) is from
    /// before it was forgotten. A newer one means it is back: no longer forgotten.
    pub fn is_old_news(&mut self, node: &str, at_ms: u64) -> bool {
        match self.at_ms.get(node) {
            None => false,
            Some(&forgotten) if at_ms <= forgotten => true,
            Some(_) => {
                self.at_ms.remove(node);
                tracing::info!(node.id = node, "a forgotten node speaks again: it is back");
                false
            }
        }
    }

    /// The file's text: one `NODE AT_MS` a line, sorted by node.
    pub fn to_text(&self) -> String {
        let mut v: Vec<_> = self.at_ms.iter().collect();
        v.sort();
        v.iter().map(|(n, at)| format!("{n} {at}\n")).collect()
    }

    /// What [`Forgotten::to_text`] wrote; a line that does not read is said and
    /// skipped (the node may then come back once, as offline: nothing is lost).
    pub fn from_text(text: &str) -> Forgotten {
        let mut f = Forgotten::default();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let parsed = line.split_once(' ').and_then(|(n, at)| {
                Some((NodeId::new(n.trim()).ok()?, at.trim().parse::<u64>().ok()?))
            });
            match parsed {
                Some((node, at)) => f.insert(node, at),
                None => tracing::warn!(line, "skipped a line of the forgotten nodes file"),
            }
        }
        f
    }

    /// Read `path`; none there is none forgotten.
    pub fn load(path: &Path) -> Forgotten {
        match std::fs::read_to_string(path) {
            Ok(text) => Forgotten::from_text(&text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Forgotten::default(),
            Err(error) => {
                tracing::error!(%error, path = %path.display(), "could not read the forgotten nodes; their retained status brings them back as offline");
                Forgotten::default()
            }
        }
    }

    /// Write `path` whole (through a temporary file and a rename).
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, self.to_text())?;
        std::fs::rename(&tmp, path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> NodeId {
        NodeId::new(s).expect("a node id")
    }

    #[test]
    fn old_news_is_dropped_and_a_newer_message_brings_the_node_back() {
        let mut f = Forgotten::default();
        f.insert(id("pi-1"), 1_000);
        assert!(f.is_old_news("pi-1", 999));
        assert!(f.is_old_news("pi-1", 1_000));
        assert!(!f.is_old_news("pi-2", 5), "never forgotten");
        assert!(!f.is_old_news("pi-1", 1_001), "started again");
        assert!(f.is_empty(), "back, so no longer forgotten");
        assert!(!f.is_old_news("pi-1", 10));
    }

    #[test]
    fn the_file_round_trips_and_bad_lines_are_skipped() {
        let mut f = Forgotten::default();
        f.insert(id("b"), 2);
        f.insert(id("a"), 1);
        assert_eq!(f.to_text(), "a 1\nb 2\n");
        let back = Forgotten::from_text("a 1\nnot a line\nbad/id 3\nc x\n\nb 2\n");
        assert_eq!(back.to_text(), "a 1\nb 2\n");

        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("forgotten");
        assert!(Forgotten::load(&path).is_empty(), "no file: none");
        f.save(&path).expect("saves");
        assert_eq!(Forgotten::load(&path).to_text(), "a 1\nb 2\n");
    }

    #[test]
    fn it_is_bounded_dropping_the_oldest() {
        let mut f = Forgotten::default();
        for i in 0..MAX_FORGOTTEN as u64 {
            f.insert(id(&format!("n-{i}")), i + 10);
        }
        f.insert(id("late"), 1_000_000);
        assert_eq!(f.len(), MAX_FORGOTTEN);
        assert_eq!(f.get("n-0"), None, "the oldest went");
        assert_eq!(f.get("late"), Some(1_000_000));
    }
}
