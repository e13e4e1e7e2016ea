//! The last hour, for the console's charts: per node a sample of its newest reading at
//! most every [`EVERY_MS`] with the tasks that ended there since the last sample, and
//! for the fleet the task throughput and latency, both in bounded rings fed from each
//! snapshot. About 14 MB for 1,000 nodes (360 samples of 40 bytes each); nothing of it
//! is journaled (a restart starts the charts afresh).

use std::collections::{HashMap, HashSet, VecDeque};

use fog_proto::{NodeId, Reading};
use serde::Serialize;

/// How far back the charts go.
pub const KEEP_MS: u64 = 3_600_000;
/// At most one sample per node this often (readings come every 10 s by default).
pub const EVERY_MS: u64 = 10_000;
/// A reading stamped further ahead of our clock than this is not charted.
pub const MAX_AHEAD_MS: u64 = 300_000;

/// One point of a node's charts. `None` where the reading did not say.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct NodeSample {
    pub at_ms: u64,
    pub cpu_pct: Option<f32>,
    pub mem_pct: f32,
    pub load1: f32,
    /// Received and sent over every interface, bytes per second.
    pub rx_bps: f32,
    pub tx_bps: f32,
    /// The hottest sensor.
    pub temp_c: Option<f32>,
    /// Tasks that ended on the node (completed, failed, timed out) per second since
    /// the previous sample.
    pub tasks_per_sec: f32,
    /// Their mean latency, submission to result at the coordinator; `None` if none.
    pub task_latency_ms: Option<f32>,
}

/// One point of the fleet's charts.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct FleetSample {
    pub at_ms: u64,
    /// Tasks that ended (completed, failed, dead-lettered) per second since the last.
    pub tasks_per_sec: f32,
    /// Mean of the online nodes' task latency (the placement EWMA), ms.
    pub latency_ms: f32,
    pub online: u32,
    pub in_flight: u32,
}

#[derive(Debug, Default)]
pub struct Trends {
    nodes: HashMap<NodeId, VecDeque<NodeSample>>,
    fleet: VecDeque<FleetSample>,
    /// Tasks ended so far and when, for the next throughput point.
    last_ended: Option<(u64, u64)>,
    /// Per node, tasks ended since its last sample: how many, their summed latency.
    node_tasks: HashMap<NodeId, (u32, u64)>,
}

impl Trends {
    /// A node's newest reading, at `now_ms` by our clock: a sample if the last one
    /// is [`EVERY_MS`] old. A reading stamped in the future (a node's clock far
    /// ahead, or a forged one: readings are not signed) is left out, so it cannot
    /// freeze the charts until our clock catches up.
    pub fn sample(&mut self, id: &NodeId, r: &Reading, now_ms: u64) {
        if r.at_ms > now_ms.saturating_add(MAX_AHEAD_MS) {
            return;
        }
        // No copy of the id for a node already charted (once a second for every node).
        let ring = match self.nodes.get_mut(id) {
            Some(ring) => ring,
            None => self.nodes.entry(id.clone()).or_default(),
        };
        let previous = ring.back().map(|s| s.at_ms);
        if previous.is_some_and(|at| r.at_ms < at.saturating_add(EVERY_MS)) {
            return;
        }
        let (ended, latency_sum) = self.node_tasks.remove(id.as_str()).unwrap_or_default();
        let secs = previous
            .map_or(EVERY_MS, |at| r.at_ms.saturating_sub(at))
            .max(1) as f32
            / 1000.0;
        ring.push_back(NodeSample {
            tasks_per_sec: ended as f32 / secs,
            task_latency_ms: (ended > 0).then(|| latency_sum as f32 / ended as f32),
            at_ms: r.at_ms,
            cpu_pct: r.cpu.total_pct,
            mem_pct: r.memory.used_pct,
            load1: r.load.one,
            rx_bps: r
                .networks
                .iter()
                .filter_map(|x| x.rx_bytes_per_sec)
                .sum::<f64>() as f32,
            tx_bps: r
                .networks
                .iter()
                .filter_map(|x| x.tx_bytes_per_sec)
                .sum::<f64>() as f32,
            temp_c: r.temperatures.iter().map(|t| t.celsius).reduce(f32::max),
        });
        while ring
            .front()
            .is_some_and(|s| s.at_ms.saturating_add(KEEP_MS) < r.at_ms)
        {
            ring.pop_front();
        }
    }

    /// Tasks that ended on nodes since the last call: per node, how many and their
    /// summed latency (ms), for each node's next sample.
    pub fn count_tasks(&mut self, ended: HashMap<String, (u32, u64)>) {
        for (node, (n, sum)) in ended {
            let Ok(id) = NodeId::new(&node) else { continue };
            let t = self.node_tasks.entry(id).or_default();
            t.0 = t.0.saturating_add(n);
            t.1 = t.1.saturating_add(sum);
        }
    }

    /// Forget the charts of nodes the registry no longer has.
    pub fn retain(&mut self, known: &HashSet<&NodeId>) {
        self.nodes.retain(|id, _| known.contains(id));
        self.node_tasks.retain(|id, _| known.contains(id));
    }

    /// The fleet at `now_ms`: `ended` tasks so far (a point when [`EVERY_MS`] has
    /// passed since the last), the mean latency, nodes online, tasks in flight.
    pub fn fleet_point(
        &mut self,
        now_ms: u64,
        ended: u64,
        latency_ms: f32,
        online: u32,
        in_flight: u32,
    ) {
        let Some((at, before)) = self.last_ended else {
            self.last_ended = Some((now_ms, ended));
            return;
        };
        if now_ms < at.saturating_add(EVERY_MS) {
            return;
        }
        self.last_ended = Some((now_ms, ended));
        self.fleet.push_back(FleetSample {
            at_ms: now_ms,
            tasks_per_sec: ended.saturating_sub(before) as f32 * 1000.0
                / now_ms.saturating_sub(at).max(1) as f32,
            latency_ms,
            online,
            in_flight,
        });
        while self
            .fleet
            .front()
            .is_some_and(|s| s.at_ms + KEEP_MS < now_ms)
        {
            self.fleet.pop_front();
        }
    }

    pub fn node(&self, id: &str) -> Option<Vec<NodeSample>> {
        self.nodes
            .iter()
            .find(|(n, _)| n.as_str() == id)
            .map(|(_, ring)| ring.iter().copied().collect())
    }

    pub fn fleet(&self) -> Vec<FleetSample> {
        self.fleet.iter().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::{Trends, EVERY_MS, KEEP_MS};
    use crate::http::tests::fleet_view;

    #[test]
    fn one_sample_per_interval_for_an_hour() {
        let mut t = Trends::default();
        let mut v = fleet_view();
        let start = v
            .details
            .values()
            .next()
            .and_then(|d| d.reading.as_ref())
            .map_or(0, |r| r.at_ms);
        for i in 0..800u64 {
            // A reading every 5 s: every other one is sampled.
            for d in v.details.values_mut() {
                let mut r = (**d.reading.as_ref().expect("a reading")).clone();
                r.at_ms = start + i * 5000;
                d.reading = Some(Arc::new(r));
            }
            v.status
                .counters
                .insert("tasks_completed_total".into(), i * 50);
            crate::view::observe(&mut t, &v, start + i * 5000);
        }
        let s = t.node("pi-1").expect("charted");
        assert_eq!(
            s.len() as u64,
            KEEP_MS / EVERY_MS + 1,
            "an hour at one per 10 s"
        );
        assert!(s.windows(2).all(|w| w[1].at_ms - w[0].at_ms == EVERY_MS));
        assert_eq!(s[0].temp_c, Some(48.5));
        let f = t.fleet();
        assert!(!f.is_empty());
        assert!(
            (f[f.len() - 1].tasks_per_sec - 10.0).abs() < 0.01,
            "{:?}",
            f.last()
        );
        assert!(t.node("nope").is_none());
        // A reading from the future is not charted (nor does it stop the next ones).
        let far = fog_proto::Reading {
            at_ms: u64::MAX - 5,
            ..Default::default()
        };
        let before = t.node("pi-1").map(|s| s.len());
        t.sample(
            &fog_proto::NodeId::new("pi-1").expect("valid"),
            &far,
            start + 800 * 5000,
        );
        assert_eq!(t.node("pi-1").map(|s| s.len()), before);
        // A node that leaves the registry leaves the charts.
        v.status.nodes.retain(|n| n.node.as_str() != "pi-1");
        crate::view::observe(&mut t, &v, start + 800 * 5000);
        assert!(t.node("pi-1").is_none());
    }

    #[test]
    fn a_nodes_samples_carry_the_tasks_that_ended_there() {
        let mut t = Trends::default();
        let id = fog_proto::NodeId::new("pi-1").expect("valid");
        let at = |ms| fog_proto::Reading {
            at_ms: ms,
            ..Default::default()
        };
        t.sample(&id, &at(1_000_000), 1_000_000);
        t.count_tasks([("pi-1".to_owned(), (15, 1_500))].into());
        t.count_tasks([("pi-1".to_owned(), (5, 500)), ("bad/id".to_owned(), (1, 1))].into());
        // Not due yet: the tasks wait for the next sample.
        t.sample(&id, &at(1_005_000), 1_005_000);
        t.sample(&id, &at(1_010_000), 1_010_000);
        t.sample(&id, &at(1_020_000), 1_020_000);
        let s = t.node("pi-1").expect("charted");
        assert_eq!(s.len(), 3);
        assert_eq!((s[0].tasks_per_sec, s[0].task_latency_ms), (0.0, None));
        assert_eq!(s[1].tasks_per_sec, 2.0, "20 tasks over 10 s");
        assert_eq!(s[1].task_latency_ms, Some(100.0));
        assert_eq!(
            (s[2].tasks_per_sec, s[2].task_latency_ms),
            (0.0, None),
            "counted once"
        );
    }
}
