//! Any config file: the agent's and the coordinator's loaders return a config or a
//! ConfigError, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = fog_agent::config::Config::from_toml(text);
    let _ = fog_coordinator::config::CoordinatorConfig::from_toml(text, "fuzz");
});
