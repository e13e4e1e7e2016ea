//! Replay measurement: how long an agent takes to replay a backlog of N readings (made
//! while its broker was unreachable) at the configured rate, and how late live
//! readings are meanwhile.
//!
//!   fog-replay-bench [N] [RATE_PER_SEC]     (defaults: 10000, the agent's default)
//!
//! The backlog is written with the agent's own store code (real readings from this
//! machine, timestamps 10 s apart, as ~28 hours of outage at the default interval
//! would leave), then a real agent starts against a broker (Mosquitto with
//! FOG_E2E_MOSQUITTO=1, else the embedded one, each in its own process) with readings
//! every second, and a subscriber times every arrival. Run by scripts/replay-bench.sh.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use fog_agent::store::backlog::Class;
use fog_agent::store::RedbStore;
use fog_e2e::{TestBroker, Watcher};
use fog_proto::{codec, Reading};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let n: u64 = args.next().map_or(Ok(10_000), |a| a.parse())?;
    let rate: Option<u32> = args.next().map(|a| a.parse()).transpose()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(run(n, rate))
}

fn now_ms() -> u64 {
    fog_rt::clock::now_ms()
}

async fn run(n: u64, rate: Option<u32>) -> anyhow::Result<()> {
    let broker = TestBroker::start()?;
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let rate_line = rate.map_or(String::new(), |r| format!("replay_per_sec = {r}\n"));
    let text = format!(
        "node_id = \"replay\"\ndata_dir = \"{}\"\nmetrics_interval_secs = 1.0\n[broker]\nurl = \"{}\"\n[store]\n{rate_line}",
        data.display(),
        broker.url()
    );
    let cfg = fog_agent::config::Config::from_toml(&text)?;
    let rate = cfg.store.replay_per_sec;

    // The backlog, as an outage would have left it.
    let start_ms = now_ms();
    let mut sample = fog_agent::metrics::Collector::new(cfg.metrics.clone());
    sample.reading(start_ms);
    std::thread::sleep(Duration::from_millis(200));
    let mut reading = sample.reading(start_ms);
    let mut bytes_total = 0usize;
    {
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let (store, _) = RedbStore::<u32>::open(&data.join("store"), &cfg.store, tx)?;
        let (rtx, _rrx) = tokio::sync::mpsc::unbounded_channel();
        let mut backlog = store.backlog(&cfg.store, rtx)?;
        for i in 0..n {
            reading.seq = i + 1;
            reading.at_ms = start_ms - (n - i) * 10_000;
            let b = codec::encode(&reading, cfg.encoding)?;
            bytes_total += b.len();
            backlog.push(Class::Reading, b);
        }
        // Dropping the backlog and the store commits and closes.
    }
    println!(
        "backlog: {n} readings, {:.1} MiB ({} bytes each), replay at {rate}/s, in flight at most {}",
        bytes_total as f64 / (1 << 20) as f64,
        bytes_total / n.max(1) as usize,
        cfg.store.replay_in_flight
    );

    let mut w = Watcher::start(broker.addr, "fog/v1/nodes/replay/metrics").await;
    let stop = tokio_util::sync::CancellationToken::new();
    let started = Instant::now();
    let started_ms = now_ms();
    let agent = tokio::spawn(fog_agent::run(cfg, stop.clone()));

    let mut replayed: Vec<u64> = Vec::with_capacity(n as usize);
    let mut seen = HashSet::new();
    let mut duplicates = 0u64;
    let mut live = 0u64;
    let mut live_max_delay_ms = 0u64;
    let mut last_replayed = started;
    let deadline = started + Duration::from_secs(n / u64::from(rate) * 3 + 60);
    while (replayed.len() as u64) < n && Instant::now() < deadline {
        let Some(a) = w.next(Duration::from_secs(1)).await else {
            continue;
        };
        let r: Reading = codec::decode(&a.payload)?;
        let arrived_ms = now_ms().saturating_sub(a.at.elapsed().as_millis() as u64);
        if r.at_ms < started_ms {
            if !seen.insert(r.seq) {
                duplicates += 1;
            }
            replayed.push(r.seq);
            last_replayed = a.at;
        } else {
            live += 1;
            live_max_delay_ms = live_max_delay_ms.max(arrived_ms.saturating_sub(r.at_ms));
        }
    }
    stop.cancel();
    let _ = agent.await;
    let took = last_replayed.duration_since(started);
    let in_order = replayed.windows(2).all(|p| p[0] < p[1]);
    println!(
        "replayed {} of {n} in {:.1} s ({:.0}/s), in order: {in_order}, duplicates: {duplicates}",
        seen.len(),
        took.as_secs_f64(),
        seen.len() as f64 / took.as_secs_f64().max(1e-9)
    );
    println!(
        "live readings during the replay: {live}, latest arrived {live_max_delay_ms} ms after it was made (interval 1000 ms)"
    );
    if (seen.len() as u64) < n || duplicates > 0 || !in_order || live_max_delay_ms >= 1000 {
        anyhow::bail!("replay incomplete, out of order, duplicated, or live readings held back");
    }
    Ok(())
}
