//! Running tasks: the arena their bytes live in, the worker pool, the built-in kinds
//! and safe command execution.

pub mod arena;
pub mod builtin;
pub mod exec;
pub mod host;
pub mod job;
pub mod pool;
