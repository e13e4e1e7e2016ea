//! `fog-coordinator report --html FILE`: one self-contained HTML file (inline style and
//! SVG, no script, nothing fetched when opened) that a person can mail to a colleague:
//! the fleet, its last hour of throughput, the task profiles and the bottlenecks,
//! from a running coordinator's HTTP API.

use std::fmt::Write as _;

use serde_json::Value;

/// What the report is made of: the API's answers, as JSON.
pub struct Inputs {
    pub health: Value,
    pub nodes: Value,
    pub fleet_history: Value,
    pub profiles: Value,
    /// Where they came from, said in the report.
    pub source: String,
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => esc(s),
        Value::Null => "–".into(),
        Value::Number(n) => n
            .as_f64()
            .map(|f| {
                if f.fract() == 0.0 {
                    format!("{f:.0}")
                } else {
                    format!("{f:.1}")
                }
            })
            .unwrap_or_default(),
        other => esc(&other.to_string()),
    }
}

fn pct(v: &Value) -> String {
    v.as_f64()
        .map_or("–".into(), |f| format!("{:.1}%", f * 100.0))
}

/// A line chart of `points` (x ms, y) as inline SVG.
fn chart(title: &str, points: &[(f64, f64)], unit: &str) -> String {
    if points.is_empty() {
        return format!(
            "<div class=chart><h3>{}</h3><p class=dim>no data in the window</p></div>",
            esc(title)
        );
    }
    let (w, h) = (600.0, 120.0);
    let x0 = points.iter().map(|p| p.0).fold(f64::INFINITY, f64::min);
    let x1 = points
        .iter()
        .map(|p| p.0)
        .fold(f64::NEG_INFINITY, f64::max)
        .max(x0 + 1.0);
    let ymax = points.iter().map(|p| p.1).fold(0.0, f64::max).max(1e-9);
    let mut pts = String::new();
    for (x, y) in points {
        let _ = write!(
            pts,
            "{:.1},{:.1} ",
            (x - x0) / (x1 - x0) * w,
            h - y / ymax * (h - 6.0) - 3.0
        );
    }
    format!(
        "<div class=chart><h3>{} <span class=dim>(max {:.1} {})</span></h3><svg viewBox=\"0 0 {w} {h}\" preserveAspectRatio=none><polyline fill=none stroke=\"#2a7ab8\" stroke-width=2 vector-effect=non-scaling-stroke points=\"{}\"/></svg></div>",
        esc(title),
        ymax,
        esc(unit),
        pts.trim_end()
    )
}

fn series(history: &Value, key: &str) -> Vec<(f64, f64)> {
    history["samples"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| Some((s["at_ms"].as_f64()?, s[key].as_f64()?)))
        .collect()
}

fn profile_rows(out: &mut String, profiles: &Value) {
    let kinds = profiles["kinds"].as_array().cloned().unwrap_or_default();
    let nodes = profiles["nodes"].as_array().cloned().unwrap_or_default();
    if kinds.is_empty() {
        out.push_str("<tr><td colspan=11 class=dim>No task ended in the window.</td></tr>");
    }
    for k in &kinds {
        let mine = nodes.iter().filter(|n| n["kind"] == k["kind"]);
        for (i, p) in std::iter::once(k).chain(mine).enumerate() {
            let _ = write!(
                out,
                "<tr{}><td>{}</td><td>{}</td><td>{}</td><td>{} ms</td><td>{} ms</td><td>{} ms</td><td>{} ms</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                if i == 0 { " class=kind" } else { "" },
                text(&p["kind"]),
                if i == 0 { "<b>all nodes</b>".into() } else { text(&p["node"]) },
                text(&p["count"]),
                text(&p["p50_ms"]),
                text(&p["p95_ms"]),
                text(&p["p99_ms"]),
                text(&p["mean_cpu_ms"]),
                p["max_peak_rss_bytes"].as_f64().map_or("–".into(), |b| format!("{:.1} MiB", b / 1_048_576.0)),
                pct(&p["failure_rate"]),
                pct(&p["timeout_rate"]),
                pct(&p["cache_hit_rate"]),
            );
        }
    }
}

/// The report's HTML.
pub fn html(i: &Inputs, generated: &str) -> String {
    let nodes = i.nodes["nodes"].as_array().cloned().unwrap_or_default();
    let count = |s: &str| nodes.iter().filter(|n| n["state"] == s).count();
    let mut out = String::with_capacity(64 * 1024);
    let _ = write!(
        out,
        "<!doctype html><html lang=en><head><meta charset=utf-8><meta name=viewport content=\"width=device-width, initial-scale=1\"><title>fog fleet report, {generated}</title><style>\
body{{font:14px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:72rem;padding:0 1rem;color:#1d2329}}h1{{font-size:1.5rem}}h2{{margin-top:2rem;border-bottom:1px solid #ddd}}h3{{font-size:.95rem;margin:.2rem 0}}\
table{{border-collapse:collapse;width:100%;font-size:.85rem}}th,td{{text-align:left;padding:.25rem .5rem;border-bottom:1px solid #eee}}tr.kind td{{background:#f3f6f9}}.dim{{color:#777;font-weight:normal}}\
.charts{{display:grid;grid-template-columns:repeat(auto-fit,minmax(20rem,1fr));gap:1rem}}.chart svg{{width:100%;height:8rem;background:#f7f9fb}}.warn{{color:#b35c00}}.cards span{{display:inline-block;margin-right:1.5rem}}\
</style></head><body><h1>fog fleet report</h1><p class=dim>Generated {generated} from {}, coordinator {}; task profiles over the last {} s.</p>",
        esc(&i.source),
        text(&i.health["version"]),
        text(&i.profiles["window_secs"]),
    );
    let _ = write!(
        out,
        "<h2>Fleet</h2><p class=cards><span><b>{}</b> nodes</span><span><b>{}</b> online</span><span><b>{}</b> suspect</span><span><b>{}</b> offline</span><span>broker {}</span><span>journal {}</span><span><b>{}</b> tasks in flight</span></p>",
        nodes.len(),
        count("online"),
        count("suspect"),
        count("offline"),
        text(&i.health["broker"]),
        text(&i.health["journal"]),
        text(&i.health["in_flight"]),
    );
    out.push_str("<div class=charts>");
    out.push_str(&chart(
        "Tasks per second",
        &series(&i.fleet_history, "tasks_per_sec"),
        "tasks/s",
    ));
    out.push_str(&chart(
        "Task latency, mean of the nodes",
        &series(&i.fleet_history, "latency_ms"),
        "ms",
    ));
    out.push_str(&chart(
        "Nodes online",
        &series(&i.fleet_history, "online"),
        "nodes",
    ));
    out.push_str(&chart(
        "Tasks in flight",
        &series(&i.fleet_history, "in_flight"),
        "tasks",
    ));
    out.push_str("</div><h2>Bottlenecks</h2>");
    let bottlenecks = i.profiles["bottlenecks"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if bottlenecks.is_empty() {
        out.push_str("<p class=dim>None over the window.</p>");
    } else {
        out.push_str("<table><tr><th>what</th><th>kind</th><th>node</th><th>detail</th></tr>");
        for b in &bottlenecks {
            let _ = write!(
                out,
                "<tr><td class=warn>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                text(&b["what"]).replace('_', " "),
                b.get("kind").map(text).unwrap_or_default(),
                b.get("node").map(text).unwrap_or_default(),
                text(&b["detail"])
            );
        }
        out.push_str("</table>");
    }
    out.push_str("<h2>Task profiles</h2><table><tr><th>kind</th><th>node</th><th>tasks</th><th>p50</th><th>p95</th><th>p99</th><th>mean CPU</th><th>peak RSS</th><th>failed</th><th>timed out</th><th>from cache</th></tr>");
    profile_rows(&mut out, &i.profiles);
    out.push_str("</table><h2>Nodes</h2><table><tr><th>node</th><th>state</th><th>health</th><th>arch</th><th>version</th><th>CPU</th><th>memory</th><th>load</th><th>in flight</th><th>notices</th></tr>");
    for n in &nodes {
        let notices: Vec<String> = n["notices"]
            .as_array()
            .into_iter()
            .flatten()
            .map(text)
            .collect();
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}%</td><td>{}%</td><td>{}</td><td>{}</td><td class=warn>{}</td></tr>",
            text(&n["node"]),
            text(&n["state"]),
            text(&n["health"]),
            text(&n["arch"]),
            text(&n["version"]),
            text(&n["cpu_pct"]),
            text(&n["mem_pct"]),
            text(&n["load1"]),
            text(&n["in_flight"]),
            notices.join(", ")
        );
    }
    out.push_str("</table></body></html>\n");
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::{html, Inputs};

    #[test]
    fn a_self_contained_report_with_every_section() {
        let i = Inputs {
            health: json!({"version": "0.1.0", "broker": "connected", "journal": "ok", "in_flight": 2}),
            nodes: json!({"nodes": [{"node": "pi-1", "state": "online", "health": "healthy", "arch": "aarch64", "version": "0.1.0", "cpu_pct": 12.5, "mem_pct": 40.0, "load1": 0.5, "in_flight": 1, "notices": ["under-voltage"]},
                                    {"node": "<script>", "state": "offline", "health": "offline", "arch": "", "version": "", "cpu_pct": null, "mem_pct": null, "load1": null, "in_flight": 0, "notices": []}]}),
            fleet_history: json!({"samples": [{"at_ms": 1, "tasks_per_sec": 10.0, "latency_ms": 3.0, "online": 1, "in_flight": 2}, {"at_ms": 10001, "tasks_per_sec": 12.0, "latency_ms": 4.0, "online": 1, "in_flight": 1}]}),
            profiles: json!({"window_secs": 3600, "kinds": [{"kind": "resize", "count": 10, "p50_ms": 5, "p95_ms": 9, "p99_ms": 10, "mean_cpu_ms": 4.0, "max_peak_rss_bytes": 1048576, "failure_rate": 0.1, "timeout_rate": 0.0, "cache_hit_rate": 0.5}],
                            "nodes": [{"kind": "resize", "node": "pi-1", "count": 10, "p50_ms": 5, "p95_ms": 9, "p99_ms": 10, "mean_cpu_ms": 4.0, "max_peak_rss_bytes": 1048576, "failure_rate": 0.1, "timeout_rate": 0.0, "cache_hit_rate": 0.5}],
                            "bottlenecks": [{"what": "slow_node", "kind": "resize", "node": "pi-1", "detail": "p50 50 ms against 5 ms"}]}),
            source: "http://127.0.0.1:9464".into(),
        };
        let h = html(&i, "2026-12-02 16:00 UTC");
        for want in [
            "<h2>Fleet</h2>",
            "<b>2</b> nodes",
            "<h2>Bottlenecks</h2>",
            "slow node",
            "<h2>Task profiles</h2>",
            "resize",
            "10.0%",
            "1.0 MiB",
            "<polyline",
            "under-voltage",
            "&lt;script&gt;",
        ] {
            assert!(h.contains(want), "no {want:?} in the report");
        }
        assert!(!h.contains("<script"), "nothing runs, no name is markup");
        assert!(
            !h.contains("http-equiv") && !h.contains(" src="),
            "nothing fetched when opened"
        );
    }
}
