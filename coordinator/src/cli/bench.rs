//! `fog-coordinator bench`: a load of tasks against the configured broker, or against a
//! fleet in this process (`--fleet N`, needs the `demo` feature), optionally killing one
//! of its agents mid-run to show a failover.

use std::process::ExitCode;
use std::time::Duration;

use fog_coordinator::client::{self, BenchOptions, BenchReport, Client};
use fog_coordinator::config::CoordinatorConfig;
use fog_coordinator::placement::Strategy;
use fog_proto::Topics;

use super::{config_err, failure, load, runtime, Common};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    sign: super::keys::SignArgs,
    #[arg(long, default_value_t = 10_000)]
    tasks: usize,
    /// Closed loop (the default): at most this many tasks outstanding, the next sent
    /// as results come back.
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
    /// Open loop: submit at this many tasks per second whatever comes back, each task
    /// timed from its slot in the schedule (a backlog shows as latency); replaces
    /// --concurrency.
    #[arg(long, value_name = "TASKS_PER_SEC", value_parser = parse_rate, conflicts_with = "concurrency")]
    rate: Option<f64>,
    #[arg(long, default_value = "sha256")]
    kind: String,
    #[arg(long, default_value_t = 1024)]
    payload_bytes: usize,
    /// Seconds without any result before the rest count as lost.
    #[arg(long, default_value_t = 30.0)]
    wait: f64,
    /// Placement strategy for every task (default: the coordinator's): round_robin,
    /// weighted_round_robin, least_connections, response_time, consistent_hash,
    /// p2c, adaptive, cost_aware.
    #[arg(long)]
    strategy: Option<Strategy>,
    /// Run against a fleet started in this process (embedded broker, coordinator
    /// and N agents) instead of the configured broker.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=64))]
    fleet: Option<u16>,
    /// Kill one agent of the --fleet (as a crash would) this many seconds into the
    /// run, to show a failover under load.
    #[arg(long, value_name = "SECS", requires = "fleet")]
    kill_agent_after: Option<f64>,
}

/// A rate for --rate: a number of tasks per second above 0 and at most a million.
fn parse_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 && r <= 1e6 => Ok(r),
        Ok(_) => Err(format!(
            "{s} is not a rate above 0 and at most 1000000 tasks/s"
        )),
        Err(e) => Err(format!("{s}: {e}")),
    }
}

pub fn run(a: Args) -> Result<ExitCode, ExitCode> {
    #[cfg(not(feature = "demo"))]
    if a.fleet.is_some() {
        return Err(super::needs_demo_feature("`bench --fleet`"));
    }
    fog_rt::logging::init("FOG_LOG", "warn,rumqttd=off");
    let cfg = load(&a.common).map_err(config_err)?;
    runtime()?.block_on(bench(cfg, a))
}

async fn bench(cfg: CoordinatorConfig, a: Args) -> Result<ExitCode, ExitCode> {
    let signer = a.sign.signer(&cfg)?;
    let mut local = start_fleet(&cfg, a.fleet).await?;
    let broker = local.as_ref().map_or(cfg.broker.clone(), fleet::broker);
    let mut c = Client::connect_as(
        &broker,
        Topics::new(cfg.prefix.clone()),
        Duration::from_secs(10),
        signer,
    )
    .await
    .map_err(|e| failure(&e))?
    // Submissions go out in the config's encoding, like everything else the
    // coordinator's side publishes.
    .encoding(cfg.encoding);
    let opts = BenchOptions {
        kind: a.kind,
        tasks: a.tasks,
        concurrency: a.concurrency,
        rate: a.rate,
        payload_bytes: a.payload_bytes,
        wait: Duration::from_secs_f64(a.wait.clamp(0.1, 3600.0)),
        strategy: a.strategy.map(|s| s.to_string()).unwrap_or_default(),
        progress: true,
    };
    let (report, killed) = run_killing(&mut c, &opts, a.kill_agent_after, &mut local).await?;
    c.close().await;
    println!("{report}");
    if let Some(f) = local {
        // One more snapshot so the counters include the end of the run.
        tokio::time::sleep(Duration::from_millis(600)).await;
        let s = f.snapshot();
        let get = |k: &str| s.counters.get(k).copied().unwrap_or(0);
        if let Some(node) = &killed {
            println!(
                "failover: {node} killed; {} tasks it held were placed again elsewhere ({} re-placements in all, {} dead-lettered)",
                get("tasks_node_lost_total"),
                get("tasks_replaced_total"),
                get("tasks_dead_lettered_total"),
            );
        }
        f.stop().await;
    }
    Ok(if report.lost == 0 && report.duplicated == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The bench, killing one agent of the local fleet `kill_after` seconds in; the report
/// and the node killed.
async fn run_killing(
    c: &mut Client,
    opts: &BenchOptions,
    kill_after: Option<f64>,
    local: &mut Option<fleet::Fleet>,
) -> Result<(BenchReport, Option<String>), ExitCode> {
    let run = client::bench(c, opts);
    tokio::pin!(run);
    let kill_at = tokio::time::sleep(Duration::from_secs_f64(
        kill_after.unwrap_or(0.0).clamp(0.0, 86_400.0),
    ));
    tokio::pin!(kill_at);
    let mut killed: Option<String> = None;
    let report = loop {
        tokio::select! {
            r = &mut run => break r.map_err(|e| failure(&e))?,
            _ = &mut kill_at, if kill_after.is_some() && killed.is_none() => {
                killed = local.as_mut().and_then(fleet::Fleet::kill_one);
                if let Some(node) = &killed {
                    eprintln!("\nkilled agent {node} (its connection dropped without a goodbye)");
                }
            }
        }
    };
    Ok((report, killed))
}

#[cfg(feature = "demo")]
async fn start_fleet(
    cfg: &CoordinatorConfig,
    n: Option<u16>,
) -> Result<Option<fleet::Fleet>, ExitCode> {
    let Some(n) = n else { return Ok(None) };
    eprintln!("starting a fleet of {n} agents in this process...");
    fleet::Fleet::start(usize::from(n), cfg.placement.clone())
        .await
        .map(Some)
        .map_err(|e| failure(&e))
}

/// Without the `demo` feature there is no local fleet (`run` refused `--fleet`).
#[cfg(not(feature = "demo"))]
async fn start_fleet(
    _: &CoordinatorConfig,
    _: Option<u16>,
) -> Result<Option<fleet::Fleet>, ExitCode> {
    Ok(None)
}

#[cfg(feature = "demo")]
mod fleet {
    pub use fog_coordinator::fleet::Fleet;

    pub fn broker(f: &Fleet) -> fog_rt::broker::BrokerConfig {
        f.broker_cfg.clone()
    }
}

/// A fleet that cannot exist: the binary was built without the `demo` feature.
#[cfg(not(feature = "demo"))]
mod fleet {
    use std::sync::Arc;

    pub enum Fleet {}

    impl Fleet {
        pub fn kill_one(&mut self) -> Option<String> {
            match *self {}
        }

        pub fn snapshot(&self) -> Arc<fog_proto::CoordinatorStatus> {
            match *self {}
        }

        pub async fn stop(self) {
            match self {}
        }
    }

    pub fn broker(f: &Fleet) -> fog_rt::broker::BrokerConfig {
        match *f {}
    }
}
