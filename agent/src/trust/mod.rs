//! Who this node believes and speaks as.
//!
//! * [`Gate`]: whether an assignment list may run here (signed by a trusted
//!   coordinator key, addressed to this node, fresh), and why not.
//! * [`Identity`]: this node's own key, made on first start in the data directory,
//!   which signs its status, heartbeats and results.
//! * [`store`]: the trusted-keys folder that `fog-agent trust add` writes.

pub mod cli;
mod gate;
mod identity;
pub mod store;
#[cfg(test)]
mod tests;

pub use gate::{Gate, Refusal};
pub use identity::Identity;
pub use store::trusted_keys;
