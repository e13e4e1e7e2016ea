//! Eligibility per task kind (as Nomad's feasibility checks): which nodes may take a
//! kind now. A node is eligible when it announced the kind, is online (not suspect or
//! offline) and its breaker is closed; a half-open one may take one probe. If more
//! than half of the capable nodes have open breakers, breakers are ignored for that
//! kind (Envoy's panic threshold), so a fleet-wide problem does not turn into a
//! fleet-wide outage. A drained node takes nothing new (its tasks finish there). Cached per kind until the node view's generation moves.

use std::collections::HashMap;

use fog_proto::NodeState;
use tokio::time::Instant;

use super::nodes::NodeView;
use crate::breaker::{BreakerConfig, BreakerState};

/// Per kind: who may take it now.
#[derive(Default)]
pub(super) struct KindSet {
    generation: u64,
    /// Slots, ascending.
    pub(super) eligible: Vec<usize>,
    /// Half-open nodes that may get a probe.
    pub(super) half_open: Vec<usize>,
    /// Nodes that run the kind and are online or suspect.
    pub(super) capable: usize,
    pub(super) suspect: usize,
    /// Capable nodes with an open or half-open breaker.
    pub(super) open: usize,
    /// Capable nodes an operator drained: they take nothing new, tasks wait.
    pub(super) drained: usize,
}

#[derive(Default)]
pub(super) struct Eligibility {
    kinds: HashMap<String, KindSet>,
}

impl Eligibility {
    /// Who may take `kind` now, rebuilt when the node view's generation moved.
    /// `panic_mode` counts the rebuilds that had to ignore breakers.
    pub(super) fn kind_set(
        &mut self,
        nodes: &mut NodeView,
        bcfg: &BreakerConfig,
        kind: &str,
        now: Instant,
        panic_mode: &mut u64,
    ) -> &KindSet {
        let generation = nodes.generation;
        let stale = self
            .kinds
            .get(kind)
            .is_none_or(|k| k.generation != generation);
        if stale {
            let set = build(nodes, bcfg, kind, now, generation, panic_mode);
            self.kinds.insert(kind.to_owned(), set);
        }
        &self.kinds[kind]
    }
}

fn build(
    nodes: &mut NodeView,
    bcfg: &BreakerConfig,
    kind: &str,
    now: Instant,
    generation: u64,
    panic_mode: &mut u64,
) -> KindSet {
    let mut set = KindSet {
        generation,
        ..Default::default()
    };
    let mut blocked = Vec::new();
    for (i, s) in nodes.slots.iter_mut().enumerate() {
        if !s.kinds.iter().any(|k| k == kind) {
            continue;
        }
        if s.drained && s.state != NodeState::Offline {
            set.capable += 1;
            set.drained += 1;
            continue;
        }
        match s.state {
            NodeState::Offline => continue,
            NodeState::Suspect => {
                set.capable += 1;
                set.suspect += 1;
                continue;
            }
            NodeState::Online => set.capable += 1,
        }
        match s.breaker.state(bcfg, now) {
            BreakerState::Closed => set.eligible.push(i),
            BreakerState::HalfOpen => {
                set.open += 1;
                set.half_open.push(i);
                blocked.push(i);
            }
            BreakerState::Open => {
                set.open += 1;
                blocked.push(i);
            }
        }
    }
    let online = set.capable - set.suspect - set.drained;
    if set.open > 0 && set.open * 2 > online {
        // Panic threshold: too much of the fleet is ejected; balance across all.
        *panic_mode += 1;
        set.eligible.extend(blocked);
        set.eligible.sort_unstable();
        set.half_open.clear();
    }
    set
}
