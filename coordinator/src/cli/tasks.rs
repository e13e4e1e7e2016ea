//! `fog-coordinator tasks`: the running, recent and dead-lettered lists of the
//! retained snapshot.

use std::process::ExitCode;

use fog_coordinator::status::{render_tasks, TaskLists};
use fog_proto::{CoordinatorStatus, TaskSummary};

use super::{fetch_snapshot, print_json, Common};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    common: Common,
    /// Only tasks in flight (placed or waiting for a node).
    #[arg(long)]
    running: bool,
    /// Only tasks that ended recently.
    #[arg(long)]
    recent: bool,
    /// Only dead-lettered tasks (out of attempts).
    #[arg(long)]
    dead: bool,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
    #[arg(long, default_value_t = 5.0)]
    timeout: f64,
}

pub fn run(a: &Args) -> Result<ExitCode, ExitCode> {
    let all = !(a.running || a.recent || a.dead);
    let which = TaskLists {
        running: all || a.running,
        recent: all || a.recent,
        dead: all || a.dead,
    };
    let s = fetch_snapshot(&a.common, a.timeout)?;
    if a.json {
        print_json(&as_json(&s, which))?;
    } else {
        print!("{}", render_tasks(&s, fog_rt::clock::now_ms(), which));
    }
    Ok(ExitCode::SUCCESS)
}

/// The three lists, the ones not asked for empty.
fn as_json(s: &CoordinatorStatus, which: TaskLists) -> serde_json::Value {
    let pick = |on: bool, v: &Vec<TaskSummary>| {
        if on {
            v.clone()
        } else {
            Vec::new()
        }
    };
    serde_json::json!({
        "running": pick(which.running, &s.running),
        "recent": pick(which.recent, &s.recent),
        "dead": pick(which.dead, &s.dead),
    })
}
