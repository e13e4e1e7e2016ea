//! `fog-coordinator status`: fetch the retained snapshot, print the node table.

use std::process::ExitCode;

use fog_coordinator::status::render_table;

use super::{fetch_snapshot, print_json, Common};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    common: Common,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
    /// Seconds to wait for the coordinator's status.
    #[arg(long, default_value_t = 5.0)]
    timeout: f64,
}

pub fn run(a: &Args) -> Result<ExitCode, ExitCode> {
    let s = fetch_snapshot(&a.common, a.timeout)?;
    if a.json {
        print_json(&s)?;
    } else {
        print!("{}", render_table(&s, fog_rt::clock::now_ms()));
    }
    Ok(ExitCode::SUCCESS)
}
