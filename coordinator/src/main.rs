//! fog-coordinator command line: parse the arguments, run the subcommand (`cli/`, one
//! file each), exit with its code.

mod cli;

use std::process::ExitCode;

use clap::Parser;

/// mimalloc, not glibc's malloc: the coordinator allocates a task's records on its
/// main thread and frees many of them on the journal thread, and glibc's cross-thread
/// frees (taking the owning arena's lock) were 17 % of the journal thread and much of
/// the main thread's time under load (docs/performance.md). The agent keeps glibc's:
/// there every resident KiB counts and the hot path does not allocate per task.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    cli::run(cli::Cli::parse())
}
