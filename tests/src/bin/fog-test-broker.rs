//! The embedded broker as its own process, so end-to-end tests can kill and restart
//! it (rumqttd has no in-process shutdown).

fn main() -> std::process::ExitCode {
    let Some(addr) = std::env::args().nth(1).and_then(|a| a.parse().ok()) else {
        eprintln!("usage: fog-test-broker ADDR");
        return std::process::ExitCode::from(2);
    };
    match fog_coordinator::broker::EmbeddedBroker::start(addr) {
        Ok(_) => loop {
            std::thread::park();
        },
        Err(e) => {
            eprintln!("fog-test-broker: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
