//! Scaling advice: from the fleet's CPU and memory over a window, how many nodes it
//! should have. The coordinator only recommends (on `cluster/scaling`, retained, and in
//! `status`); whoever provisions nodes acts on it.
//!
//! desired = ceil(nodes x observed / target), on whichever of CPU and memory is further
//! above its target, as Kubernetes' horizontal pod autoscaler computes replicas. Two
//! guards keep it from flapping:
//! * a tolerance band: within `tolerance` of the target the advice is to hold;
//! * asymmetric stabilisation: scaling up is advised as soon as the window's average
//!   asks for it; scaling down only after every sample of the last
//!   `scale_down_stabilization` asked for fewer nodes, and then to the largest count
//!   any of them asked for (HPA's scale-down stabilisation window).

use std::collections::VecDeque;
use std::time::Duration;

use fog_proto::{NodeState, NodeSummary, ScaleDirection, ScalingAdvice};
use tokio::time::Instant;

#[derive(Debug, Clone)]
pub struct ScalingConfig {
    pub target_cpu_pct: f32,
    pub target_mem_pct: f32,
    /// Relative band around the target inside which the advice is to hold (0.1 = 10 %).
    pub tolerance: f32,
    pub window: Duration,
    pub scale_down_stabilization: Duration,
    pub min_nodes: u32,
    pub max_nodes: u32,
}

impl Default for ScalingConfig {
    fn default() -> Self {
        ScalingConfig {
            target_cpu_pct: 70.0,
            target_mem_pct: 75.0,
            tolerance: 0.1,
            window: Duration::from_secs(300),
            scale_down_stabilization: Duration::from_secs(300),
            min_nodes: 1,
            max_nodes: 1000,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Instant,
    cpu: f32,
    mem: f32,
}

#[derive(Debug)]
pub struct Scaler {
    cfg: ScalingConfig,
    samples: VecDeque<Sample>,
    /// (when, desired count) over the scale-down stabilisation window.
    wanted: VecDeque<(Instant, u32)>,
    first: Option<Instant>,
    current: Option<ScalingAdvice>,
}

impl Scaler {
    pub fn new(cfg: ScalingConfig) -> Self {
        Scaler {
            cfg,
            samples: VecDeque::new(),
            wanted: VecDeque::new(),
            first: None,
            current: None,
        }
    }

    /// The advice in force, once there is one.
    pub fn current(&self) -> Option<&ScalingAdvice> {
        self.current.as_ref()
    }

    /// Take one sample of the fleet; returns the advice when it changed (to publish).
    pub fn observe(
        &mut self,
        now: Instant,
        wall_ms: u64,
        nodes: &[NodeSummary],
    ) -> Option<ScalingAdvice> {
        let online: Vec<&NodeSummary> = nodes
            .iter()
            .filter(|n| n.state == NodeState::Online && n.cpu_pct.is_some())
            .collect();
        if online.is_empty() {
            return None;
        }
        let n = online.len() as u32;
        let mean =
            |f: &dyn Fn(&NodeSummary) -> f32| online.iter().map(|x| f(x)).sum::<f32>() / n as f32;
        let cpu = mean(&|x| x.cpu_pct.unwrap_or(0.0));
        let mem = mean(&|x| x.mem_pct.unwrap_or(0.0));
        self.samples.push_back(Sample { at: now, cpu, mem });
        let first = *self.first.get_or_insert(now);
        while self
            .samples
            .front()
            .is_some_and(|s| now.saturating_duration_since(s.at) > self.cfg.window)
        {
            self.samples.pop_front();
        }
        // Judge only on half a window of data at least.
        if now.saturating_duration_since(first) < self.cfg.window / 2 {
            return None;
        }
        let k = self.samples.len() as f32;
        let avg_cpu = self.samples.iter().map(|s| s.cpu).sum::<f32>() / k;
        let avg_mem = self.samples.iter().map(|s| s.mem).sum::<f32>() / k;
        let ratio = (avg_cpu / self.cfg.target_cpu_pct.max(1.0))
            .max(avg_mem / self.cfg.target_mem_pct.max(1.0));
        let raw = if (ratio - 1.0).abs() <= self.cfg.tolerance {
            n
        } else {
            (n as f32 * ratio).ceil() as u32
        }
        .clamp(self.cfg.min_nodes.max(1), self.cfg.max_nodes.max(1));
        self.wanted.push_back((now, raw));
        while self.wanted.front().is_some_and(|(t, _)| {
            now.saturating_duration_since(*t) > self.cfg.scale_down_stabilization
        }) {
            self.wanted.pop_front();
        }
        let desired = if raw >= n {
            raw
        } else {
            let covered = now.saturating_duration_since(first) >= self.cfg.scale_down_stabilization;
            let highest = self.wanted.iter().map(|(_, d)| *d).max().unwrap_or(n);
            if covered {
                highest.min(n)
            } else {
                n
            }
        };
        let direction = match desired.cmp(&n) {
            std::cmp::Ordering::Greater => ScaleDirection::Up,
            std::cmp::Ordering::Less => ScaleDirection::Down,
            std::cmp::Ordering::Equal => ScaleDirection::Hold,
        };
        let w = self.cfg.window.as_secs_f32();
        let over = if w >= 120.0 {
            format!("{:.0} min", w / 60.0)
        } else {
            format!("{w:.1} s")
        };
        let reason = format!(
            "fleet CPU {avg_cpu:.0} % (target {:.0} %), memory {avg_mem:.0} % (target {:.0} %) over {over}: {n} nodes, {desired} wanted",
            self.cfg.target_cpu_pct, self.cfg.target_mem_pct
        );
        let changed = self.current.as_ref().is_none_or(|c| {
            c.direction != direction || c.desired_nodes != desired || c.current_nodes != n
        });
        let advice = ScalingAdvice {
            at_ms: wall_ms,
            direction,
            current_nodes: n,
            desired_nodes: desired,
            cpu_pct: avg_cpu,
            mem_pct: avg_mem,
            reason,
        };
        self.current = Some(advice.clone());
        changed.then_some(advice)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fog_proto::{NodeHealth, NodeId};

    fn fleet(n: usize, cpu: f32, mem: f32) -> Vec<NodeSummary> {
        (0..n)
            .map(|i| NodeSummary {
                identity: String::new(),
                task_trust: Default::default(),
                node: NodeId::new(format!("n{i}")).expect("valid"),
                arch: "x86_64".into(),
                state: NodeState::Online,
                cores: 4,
                cpu_pct: Some(cpu),
                mem_pct: Some(mem),
                load1: None,
                last_seen_ms: 0,
                version: String::new(),
                queued: 0,
                running: 0,
                health: NodeHealth::Healthy,
                in_flight: 0,
                breaker: String::new(),
                latency_ms: 0.0,
                degraded: Vec::new(),
                notices: Vec::new(),
                drained: false,
            })
            .collect()
    }

    fn cfg() -> ScalingConfig {
        ScalingConfig {
            window: Duration::from_secs(60),
            scale_down_stabilization: Duration::from_secs(120),
            ..Default::default()
        }
    }

    /// Feed one sample every 2 s for `secs`; return the last advice in force.
    fn run(s: &mut Scaler, t: &mut Instant, secs: u64, f: &[NodeSummary]) -> Option<ScalingAdvice> {
        for _ in 0..secs / 2 {
            *t += Duration::from_secs(2);
            s.observe(*t, 0, f);
        }
        s.current().cloned()
    }

    #[tokio::test(start_paused = true)]
    async fn hot_fleet_scales_up_by_the_ratio_and_at_once() {
        let mut s = Scaler::new(cfg());
        let mut t = Instant::now();
        assert!(
            run(&mut s, &mut t, 20, &fleet(3, 91.0, 50.0)).is_none(),
            "needs half a window of data"
        );
        let a = run(&mut s, &mut t, 20, &fleet(3, 91.0, 50.0)).expect("advice");
        assert_eq!(a.direction, ScaleDirection::Up);
        // ceil(3 x 91 / 70) = 4
        assert_eq!((a.current_nodes, a.desired_nodes), (3, 4));
        assert!(
            a.reason.contains("CPU 91 %") && a.reason.contains("target 70 %"),
            "{}",
            a.reason
        );
        // Memory can drive it too: ceil(4 x 95 / 75) = 6.
        let mut s = Scaler::new(cfg());
        let a = run(&mut s, &mut t, 60, &fleet(4, 10.0, 95.0)).expect("advice");
        assert_eq!(a.desired_nodes, 6);
    }

    #[tokio::test(start_paused = true)]
    async fn inside_the_band_it_holds_and_hovering_does_not_flap() {
        let mut s = Scaler::new(cfg());
        let mut t = Instant::now();
        let mut changes = 0;
        for i in 0..300u64 {
            t += Duration::from_secs(2);
            // Hovering at the target, +-5 %.
            let cpu = if i % 2 == 0 { 66.5 } else { 73.5 };
            if s.observe(t, 0, &fleet(5, cpu, 40.0)).is_some() {
                changes += 1;
            }
        }
        let a = s.current().expect("advice");
        assert_eq!(a.direction, ScaleDirection::Hold);
        assert_eq!(changes, 1, "one advice, never changed");
    }

    #[tokio::test(start_paused = true)]
    async fn scale_down_waits_for_the_stabilisation_window() {
        let mut s = Scaler::new(cfg());
        let mut t = Instant::now();
        let a = run(&mut s, &mut t, 60, &fleet(6, 70.0, 40.0)).expect("advice");
        assert_eq!(a.direction, ScaleDirection::Hold);
        // Load drops to 20 %: ceil(6 x 20/70) = 2, but not before 120 s of asking for less.
        let a = run(&mut s, &mut t, 100, &fleet(6, 20.0, 40.0)).expect("advice");
        assert_eq!(a.direction, ScaleDirection::Hold, "{a:?}");
        let a = run(&mut s, &mut t, 200, &fleet(6, 20.0, 40.0)).expect("advice");
        assert_eq!(a.direction, ScaleDirection::Down);
        assert_eq!(a.desired_nodes, 4, "ceil(6 x 40 / 75): memory now leads");
        // A spike brings back "up" at once.
        let a = run(&mut s, &mut t, 70, &fleet(6, 99.0, 40.0)).expect("advice");
        assert_eq!(a.direction, ScaleDirection::Up);
    }

    #[tokio::test(start_paused = true)]
    async fn bounds_and_an_empty_fleet() {
        let mut s = Scaler::new(ScalingConfig {
            max_nodes: 5,
            ..cfg()
        });
        let mut t = Instant::now();
        assert!(run(&mut s, &mut t, 60, &[]).is_none());
        let a = run(&mut s, &mut t, 60, &fleet(4, 100.0, 100.0)).expect("advice");
        assert_eq!(a.desired_nodes, 5);
    }
}
