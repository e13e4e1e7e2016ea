//! The real `fog-agent` program under a name of this crate, so end-to-end tests can
//! start it as a process (`fog-test-agent run --config PATH`), kill -9 it and start it
//! again on the same data directory. It is the same code as the installed binary
//! (`fog_agent::app::main`): startup checks, signals and exit codes included.

fn main() -> std::process::ExitCode {
    fog_agent::app::main()
}
