//! `fog-coordinator report --html FILE`: the fleet, its throughput, the task profiles
//! and the bottlenecks in one self-contained HTML file, from a running coordinator's
//! HTTP API (plain HTTP: its listener, on loopback by default).

use std::path::PathBuf;
use std::process::ExitCode;

use fog_coordinator::report::{html, Inputs};

use super::http::{authority, get};
use super::{failure, usage};

#[derive(clap::Args)]
pub struct Args {
    /// Write the report here.
    #[arg(long, value_name = "FILE")]
    html: PathBuf,
    /// The coordinator's HTTP API.
    #[arg(long, default_value = "http://127.0.0.1:9464")]
    url: String,
    /// How far back the profiles go: 30m, 1h, 90s (at most 1h, what the coordinator keeps).
    #[arg(long, default_value = "1h")]
    since: String,
}

/// `30m`, `1h`, `90s` in seconds, 1 to 3,600.
fn since_secs(s: &str) -> Result<u64, String> {
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = n
        .parse()
        .map_err(|_| format!("--since {s:?}: a number and s, m or h (like 30m)"))?;
    let secs = match unit {
        "s" | "" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return Err(format!("--since {s:?}: the unit is s, m or h")),
    };
    if secs == 0 || secs > 3600 {
        return Err(format!(
            "--since {s:?}: from 1 s to 1 h (the coordinator keeps an hour)"
        ));
    }
    Ok(secs)
}

pub fn run(a: &Args) -> Result<ExitCode, ExitCode> {
    let secs = since_secs(&a.since).map_err(|e| usage(&e))?;
    let host = authority(&a.url).map_err(|e| usage(&e))?;
    let fetch = |path: &str| get(host, path, false).map_err(|e| failure(&e));
    let inputs = Inputs {
        health: get(host, "/api/v1/health", true).map_err(|e| failure(&e))?,
        nodes: fetch("/api/v1/nodes")?,
        fleet_history: fetch("/api/v1/fleet/history")?,
        profiles: fetch(&format!("/api/v1/profiles?since_secs={secs}"))?,
        source: a.url.clone(),
    };
    let generated = humantime_now();
    let page = html(&inputs, &generated);
    std::fs::write(&a.html, page)
        .map_err(|e| failure(&format!("writing {}: {e}", a.html.display())))?;
    eprintln!("fog-coordinator: report written to {}", a.html.display());
    Ok(ExitCode::SUCCESS)
}

/// Now, as `2026-12-02 16:04 UTC`.
fn humantime_now() -> String {
    let secs = fog_rt::clock::now_ms() / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y}-{m:02}-{d:02} {:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60
    )
}

#[cfg(test)]
mod tests {
    use super::since_secs;

    #[test]
    fn arguments_are_checked() {
        assert_eq!(since_secs("1h"), Ok(3600));
        assert_eq!(since_secs("30m"), Ok(1800));
        assert_eq!(since_secs("90"), Ok(90));
        for bad in ["2h", "0m", "h", "5d", "-1m", ""] {
            assert!(since_secs(bad).is_err(), "{bad}");
        }
    }
}
