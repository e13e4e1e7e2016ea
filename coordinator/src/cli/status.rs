//! `fog-coordinator status`: fetch the retained snapshot, print the node table.

use std::process::ExitCode;
use std::time::Duration;

use fog_coordinator::status::render_table;

use super::{config_err, fetch_status, load, print_json, runtime, Common};

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
    fog_rt::logging::init("FOG_LOG", "warn,rumqttd=warn");
    let cfg = load(&a.common).map_err(config_err)?;
    let timeout = Duration::from_secs_f64(a.timeout.clamp(0.1, 600.0));
    runtime()?.block_on(async move {
        let s = fetch_status(&cfg, timeout).await?;
        if a.json {
            print_json(&s)?;
        } else {
            print!("{}", render_table(&s, fog_rt::clock::now_ms()));
        }
        Ok(ExitCode::SUCCESS)
    })
}
