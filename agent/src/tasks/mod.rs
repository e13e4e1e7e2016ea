//! Running tasks: the arena their bytes live in (more modules arrive with the tasks
//! issue: the worker pool, command execution and the durable store).

pub mod arena;
