//! `fog-sim`: many light agents in one process, against a real broker and a real
//! coordinator, to see what a large fleet costs the coordinator (`scripts/sim.sh`
//! drives it and measures; docs/performance.md has the figures).
//!
//! ```text
//! fog-sim --broker 127.0.0.1:1883 --agents 10000 [--rate 500] [--duration 120]
//!         [--heartbeat 5] [--reading 10] [--keep-alive 30] [--encoding json|postcard]
//!         [--prefix fog] [--first 1]
//! ```
//!
//! Agents `sim-00001`... connect at `--rate` a second (a broker and a coordinator
//! meet a fleet that boots together, not all at once), then heartbeat, publish
//! readings and answer tasks until `--duration` ends or SIGINT/SIGTERM, when each says
//! goodbye as a stopping agent does. Every 5 s a line on stderr; at the end one JSON
//! line on stdout with the counts and this process's RSS.

mod agent;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use agent::{Plan, Stats};
use fog_proto::{Encoding, NodeId, Prefix, Topics};
use tokio_util::sync::CancellationToken;

const USAGE: &str = "usage: fog-sim --broker HOST:PORT --agents N [--rate PER_SEC] [--duration SECS] \
[--heartbeat SECS] [--reading SECS] [--keep-alive SECS] [--encoding json|postcard] [--prefix P] [--first K]";

#[derive(Debug)]
struct Args {
    broker: SocketAddr,
    agents: u32,
    rate: f64,
    duration: Duration,
    heartbeat: Duration,
    reading: Duration,
    keep_alive: u16,
    encoding: Encoding,
    prefix: String,
    first: u32,
}

fn parse(mut it: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut a = Args {
        broker: SocketAddr::from(([127, 0, 0, 1], 1883)),
        agents: 0,
        rate: 500.0,
        duration: Duration::from_secs(60),
        heartbeat: Duration::from_secs(5),
        reading: Duration::from_secs(10),
        keep_alive: 30,
        encoding: Encoding::Json,
        prefix: "fog".into(),
        first: 1,
    };
    let secs = |v: &str, what: &str| -> Result<Duration, String> {
        v.parse::<f64>()
            .ok()
            .filter(|s| s.is_finite() && *s > 0.0 && *s < 1e6)
            .map(Duration::from_secs_f64)
            .ok_or_else(|| format!("{what}: {v:?} is not a number of seconds"))
    };
    while let Some(flag) = it.next() {
        let v = it
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        match flag.as_str() {
            "--broker" => a.broker = v.parse().map_err(|e| format!("--broker {v:?}: {e}"))?,
            "--agents" => a.agents = v.parse().map_err(|e| format!("--agents {v:?}: {e}"))?,
            "--first" => a.first = v.parse().map_err(|e| format!("--first {v:?}: {e}"))?,
            "--rate" => {
                a.rate = v
                    .parse::<f64>()
                    .ok()
                    .filter(|r| r.is_finite() && *r > 0.0)
                    .ok_or_else(|| format!("--rate {v:?}: connections a second, above 0"))?
            }
            "--duration" => a.duration = secs(&v, "--duration")?,
            "--heartbeat" => a.heartbeat = secs(&v, "--heartbeat")?,
            "--reading" => a.reading = secs(&v, "--reading")?,
            "--keep-alive" => {
                a.keep_alive = v
                    .parse()
                    .ok()
                    .filter(|k| *k >= 2)
                    .ok_or_else(|| format!("--keep-alive {v:?}: whole seconds, at least 2"))?
            }
            "--encoding" => {
                a.encoding = match v.as_str() {
                    "json" => Encoding::Json,
                    "postcard" => Encoding::Postcard,
                    _ => return Err(format!("--encoding {v:?}: json or postcard")),
                }
            }
            "--prefix" => a.prefix = v,
            _ => return Err(format!("unknown flag {flag:?}\n{USAGE}")),
        }
    }
    if a.agents == 0 {
        return Err(format!("--agents is required\n{USAGE}"));
    }
    Ok(a)
}

/// This process's resident memory, KiB (VmRSS).
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Room for a descriptor per agent and some: the soft limit raised to the hard one.
fn raise_fd_limit(want: u64) {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct given.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) == 0 && l.rlim_cur < want {
            l.rlim_cur = want.min(l.rlim_max);
            if libc::setrlimit(libc::RLIMIT_NOFILE, &l) != 0 {
                eprintln!("fog-sim: could not raise the open files limit to {want}");
            }
        }
    }
}

fn main() -> std::process::ExitCode {
    let args = match parse(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("fog-sim: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    raise_fd_limit(u64::from(args.agents) + 1024);
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("fog-sim: no runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    rt.block_on(simulate(args))
}

async fn simulate(args: Args) -> std::process::ExitCode {
    let prefix = match Prefix::new(args.prefix.clone()) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("fog-sim: --prefix {:?}: {e}", args.prefix);
            return std::process::ExitCode::from(2);
        }
    };
    let plan = Arc::new(Plan {
        broker: args.broker,
        topics: Topics::new(prefix),
        encoding: args.encoding,
        heartbeat: args.heartbeat,
        reading: args.reading,
        keep_alive_secs: args.keep_alive,
    });
    let stats = Arc::new(Stats::default());
    let stop = CancellationToken::new();
    cancel_on_signals(&stop);
    let rss_before = rss_kib();
    let started = tokio::time::Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let gap = Duration::from_secs_f64(1.0 / args.rate);
    let mut report =
        tokio::time::interval_at(started + Duration::from_secs(5), Duration::from_secs(5));
    let mut next = started;
    let mut spawned = 0u32;
    let end = started + args.duration;
    loop {
        let spawn_due = (spawned < args.agents).then_some(next);
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep_until(end) => break,
            () = async { tokio::time::sleep_until(spawn_due.unwrap_or(end)).await }, if spawn_due.is_some() => {
                let n = args.first + spawned;
                let Ok(id) = NodeId::new(format!("sim-{n:05}")) else { break };
                tasks.spawn(agent::run(id, plan.clone(), stats.clone(), stop.clone()));
                spawned += 1;
                next += gap;
            }
            _ = report.tick() => {
                eprintln!(
                    "fog-sim: {:>6.1}s {} of {} connected, {} heartbeats, {} readings, {} tasks, {} errors, RSS {} KiB",
                    started.elapsed().as_secs_f64(),
                    stats.connected.load(Ordering::Relaxed),
                    args.agents,
                    stats.heartbeats.load(Ordering::Relaxed),
                    stats.readings.load(Ordering::Relaxed),
                    stats.tasks.load(Ordering::Relaxed),
                    stats.errors.load(Ordering::Relaxed),
                    rss_kib(),
                );
            }
        }
    }
    let rss_peak = rss_kib();
    let connected = stats.connected.load(Ordering::Relaxed);
    // A signal cancels the agents at once, so some have said goodbye already.
    let by_signal = stop.is_cancelled();
    stop.cancel();
    // Goodbyes, bounded: a broker that stopped reading does not hold the exit.
    let _ = tokio::time::timeout(Duration::from_secs(20), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    print_summary(&stats, spawned, connected, started, rss_peak, rss_before);
    if !by_signal && connected < u64::from(spawned) {
        eprintln!(
            "fog-sim: {} of {spawned} agents were connected at the end",
            connected
        );
    }
    std::process::ExitCode::SUCCESS
}

/// SIGINT or SIGTERM: every agent says goodbye and the run ends.
fn cancel_on_signals(stop: &CancellationToken) {
    let signals = stop.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        signals.cancel();
    });
    if let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    {
        let s = stop.clone();
        tokio::spawn(async move {
            term.recv().await;
            s.cancel();
        });
    }
}

/// The run's one JSON line on stdout.
fn print_summary(
    stats: &Stats,
    spawned: u32,
    connected: u64,
    started: tokio::time::Instant,
    rss_peak: u64,
    rss_before: u64,
) {
    let per_agent =
        (rss_peak.saturating_sub(rss_before) as f64 * 1024.0) / f64::from(spawned.max(1));
    println!(
        "{}",
        serde_json::json!({
            "agents": spawned,
            "connected_at_end": connected,
            "sessions": stats.sessions.load(Ordering::Relaxed),
            "heartbeats": stats.heartbeats.load(Ordering::Relaxed),
            "readings": stats.readings.load(Ordering::Relaxed),
            "tasks": stats.tasks.load(Ordering::Relaxed),
            "acks": stats.acks.load(Ordering::Relaxed),
            "errors": stats.errors.load(Ordering::Relaxed),
            "seconds": started.elapsed().as_secs_f64(),
            "rss_kib": rss_peak,
            "bytes_per_agent": per_agent.round(),
        })
    );
}

#[cfg(test)]
mod tests {
    use super::parse;

    fn p(s: &str) -> Result<super::Args, String> {
        parse(s.split_whitespace().map(str::to_owned))
    }

    #[test]
    fn flags_parse_and_mistakes_say_which() {
        let a =
            p("--agents 10 --broker 127.0.0.1:1884 --rate 50 --heartbeat 1 --encoding postcard")
                .expect("parses");
        assert_eq!((a.agents, a.broker.port(), a.rate), (10, 1884, 50.0));
        assert_eq!(a.heartbeat.as_secs(), 1);
        assert!(p("").unwrap_err().contains("--agents is required"));
        assert!(p("--agents x").unwrap_err().contains("--agents \"x\""));
        assert!(p("--agents 1 --rate 0").unwrap_err().contains("--rate"));
        assert!(p("--agents 1 --keep-alive 1")
            .unwrap_err()
            .contains("at least 2"));
        assert!(p("--agents 1 --encoding xml")
            .unwrap_err()
            .contains("json or postcard"));
        assert!(p("--agents 1 --bogus 1")
            .unwrap_err()
            .contains("unknown flag"));
        assert!(p("--agents").unwrap_err().contains("needs a value"));
    }
}
