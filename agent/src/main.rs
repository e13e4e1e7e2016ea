//! fog-agent command line: everything is in [`fog_agent::app`], so tests run the same
//! code as a process.

fn main() -> std::process::ExitCode {
    fog_agent::app::main()
}
