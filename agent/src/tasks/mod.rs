//! Running tasks: the arena their bytes live in and safe command execution (the worker
//! pool and the durable store arrive with the rest of the tasks issue).

pub mod arena;
pub mod exec;
