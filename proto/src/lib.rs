//! fog-proto: the wire contract between fog agents, coordinators and clients.
//!
//! Everything that crosses a process boundary lives here and nowhere else:
//!
//! * [`topic`]: topic names under a validated prefix (`fog/v1/nodes/{node}/status`, ...)
//!   and a parser that maps an incoming topic back to what it is.
//! * [`message`]: one type per topic (birth/status, heartbeat, reading, alert, task
//!   assignment, result, submission, coordinator status, scaling advice).
//! * [`schema`]: the [`Message`] trait (name and size limit per type) and the
//!   compatibility rule: what may change without a [`SCHEMA_VERSION`] bump.
//! * [`codec`]: JSON (the default, readable with `mosquitto_sub`) and postcard (compact),
//!   told apart by their first byte, each frame carrying [`SCHEMA_VERSION`]. Decoding
//!   never panics and enforces a per-message size limit.
//! * [`seal`]: the signature a message may carry, and exactly which bytes it covers.
//!
//! This crate has no async runtime and no I/O, so every consumer (agent, coordinator,
//! tests, benches, third-party tools) shares exactly one definition of the format.
//!
//! ```
//! use fog_proto::{codec, Encoding, Heartbeat};
//! let hb = Heartbeat { seq: 7, ..Heartbeat::default() };
//! let bytes = codec::encode(&hb, Encoding::Json).expect("heartbeats always encode");
//! let back: Heartbeat = codec::decode(&bytes).expect("round trip");
//! assert_eq!(back, hb);
//! ```

pub mod codec;
pub mod message;
pub mod payload;
pub mod reading;
pub mod schema;
pub mod seal;
pub mod topic;

pub use codec::{DecodeError, EncodeError, Encoding};
pub use message::*;
pub use payload::Payload;
pub use seal::{Seal, Sealed};
pub use topic::{NodeId, NodeTopic, ParsedTopic, Prefix, TopicError, Topics};

/// Version of the message schema carried in every frame. A receiver rejects frames of
/// another version with [`DecodeError::UnsupportedVersion`] instead of guessing.
pub const SCHEMA_VERSION: u16 = 1;
