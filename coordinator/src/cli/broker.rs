//! `fog-coordinator broker`: only the embedded MQTT broker, until killed.

use std::net::SocketAddr;
use std::process::ExitCode;

use fog_coordinator::broker::EmbeddedBroker;

use super::failure;

#[derive(clap::Args)]
pub struct Args {
    #[arg(long, default_value = "127.0.0.1:1883")]
    listen: SocketAddr,
}

pub fn run(a: &Args) -> Result<ExitCode, ExitCode> {
    fog_rt::logging::init("FOG_LOG", "info,rumqttd=warn");
    EmbeddedBroker::start(a.listen).map_err(|e| failure(&e))?;
    println!("listening on {}", a.listen);
    loop {
        std::thread::park();
    }
}
