//! /metrics' tests: what is exported, and that the Grafana dashboard uses only that.

mod exported {
    use std::sync::Arc;

    use fog_proto::NodeState;

    use super::super::{render, FORGET_SERIES_AFTER};
    use crate::http::tests::fleet_view;

    #[test]
    fn nodes_readings_and_the_coordinator_are_exported() {
        let v = Arc::new(fleet_view());
        let text = render(&v, fog_rt::clock::now_ms());
        for line in [
            "# TYPE fog_node_up gauge",
            "fog_node_up{node=\"pi-1\"} 1",
            "fog_node_up{node=\"pi-3\"} 0",
            "fog_node_info{node=\"pi-1\",arch=\"aarch64\",version=\"0.1.0\",identity=\"approved\"} 1",
            "fog_node_load1{node=\"pi-1\"} 0.5",
            "fog_node_memory_available_bytes{node=\"pi-1\"} 536870912",
            "fog_node_filesystem_avail_bytes{node=\"pi-1\",mountpoint=\"/\",device=\"mmcblk0p2\",fstype=\"ext4\"} 21474836480",
            "fog_node_temperature_celsius{node=\"pi-1\",sensor=\"thermal_zone0/cpu-thermal\"} 48.5",
            "# TYPE fog_node_agent_cpu_seconds_total counter",
            "fog_coordinator_tasks_submitted_total 5",
            "fog_coordinator_tasks_waiting 1",
            "fog_coordinator_journal_up 1",
            "fog_coordinator_nodes{state=\"offline\"} 1",
            "# TYPE fog_task_duration_seconds histogram",
            "fog_task_duration_seconds_bucket{kind=\"echo\",le=\"0.005\"} 2",
            "fog_task_duration_seconds_bucket{kind=\"echo\",le=\"+Inf\"} 3",
            "fog_task_duration_seconds_count{kind=\"echo\"} 3",
            "fog_tasks_finished_total{kind=\"echo\",outcome=\"completed\"} 2",
            "fog_tasks_finished_total{kind=\"echo\",outcome=\"failed\"} 1",
            "# TYPE fog_coordinator_placement_seconds histogram",
            "fog_coordinator_placement_seconds_bucket{le=\"5e-05\"} 0",
            "fog_coordinator_placement_seconds_bucket{le=\"0.0001\"} 1",
            "fog_coordinator_placement_seconds_count 1",
            "# TYPE fog_coordinator_journal_commit_seconds histogram",
            "fog_coordinator_journal_commit_seconds_bucket{le=\"0.001\"} 1",
            "fog_coordinator_journal_commit_seconds_count 1",
        ] {
            assert!(text.lines().any(|l| l == line), "no line {line:?} in\n{text}");
        }
        // An offline node's old figures are not "now".
        assert!(!text.contains("fog_node_load1{node=\"pi-2\"}"), "{text}");
        assert!(text.contains("fog_node_up{node=\"pi-2\"} 0"), "{text}");
        // Each family in one block: its TYPE line once.
        let types = text
            .lines()
            .filter(|l| l.starts_with("# TYPE fog_node_up "))
            .count();
        assert_eq!(types, 1);
    }

    #[test]
    fn a_node_silent_past_the_bound_leaves_the_output() {
        let mut view = fleet_view();
        let long_ago = fog_rt::clock::now_ms() - FORGET_SERIES_AFTER.as_millis() as u64 - 1000;
        view.status.nodes[1].last_seen_ms = long_ago;
        assert_eq!(view.status.nodes[1].state, NodeState::Offline);
        let text = render(&Arc::new(view), fog_rt::clock::now_ms());
        assert!(!text.contains("node=\"pi-2\""), "{text}");
        assert!(text.contains("node=\"pi-1\""), "{text}");
    }

    /// Prometheus' own checker on the output (Debian's `prometheus` package).
    #[test]
    #[ignore = "needs promtool (apt-get install prometheus); .ci/run runs it"]
    fn promtool_check_metrics_accepts_the_output() {
        use std::io::Write;
        let text = render(&Arc::new(fleet_view()), fog_rt::clock::now_ms());
        let mut child = std::process::Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("promtool on PATH (apt-get install prometheus)");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes())
            .expect("write");
        let out = child.wait_with_output().expect("promtool ran");
        let said = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && said.trim().is_empty(),
            "promtool: {said}\n{text}"
        );
    }
}

/// The Grafana dashboard in docs/grafana/ uses only metrics this module exports.
mod dashboard {
    use std::sync::Arc;

    #[test]
    fn every_metric_the_dashboard_queries_is_exported() {
        // Every kind of series present: a saturated node (a bottleneck), a network
        // interface and power flags in a reading, the dispatcher's counters.
        let mut v = crate::http::tests::fleet_view();
        v.status.nodes[0].cpu_pct = Some(95.0);
        let d = v
            .details
            .values_mut()
            .next()
            .expect("a node with a reading");
        let mut r = (**d.reading.as_ref().expect("a reading")).clone();
        r.cpu.total_pct = Some(50.0);
        r.networks.push(fog_proto::Network {
            interface: "eth0".into(),
            ..Default::default()
        });
        r.power = Some(fog_proto::Power {
            under_voltage_now: Some(false),
            throttled_now: Some(false),
            ..Default::default()
        });
        d.reading = Some(Arc::new(r));
        for (name, n) in crate::dispatch::DispatchCounters::default().named_for_tests() {
            v.status.counters.insert(name.to_owned(), n);
        }
        let text = super::super::render(&Arc::new(v), fog_rt::clock::now_ms());
        let families: std::collections::BTreeSet<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split(' ').next())
            .collect();
        let dash: serde_json::Value =
            serde_json::from_str(include_str!("../../../../docs/grafana/fog.json"))
                .expect("the dashboard is JSON");
        let mut queried = 0;
        for panel in dash["panels"].as_array().expect("panels") {
            for t in panel["targets"].as_array().expect("targets") {
                let expr = t["expr"].as_str().expect("an expression");
                for name in expr
                    .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .filter(|w| w.starts_with("fog_"))
                {
                    let family = ["_bucket", "_sum", "_count"]
                        .iter()
                        .find_map(|s| name.strip_suffix(s).filter(|f| families.contains(f)))
                        .unwrap_or(name);
                    assert!(
                        families.contains(family),
                        "the dashboard queries {name}, which /metrics does not export"
                    );
                    queried += 1;
                }
            }
        }
        assert!(queried >= 20, "{queried}");
    }
}
