//! What a message type is to the codec, and the compatibility rule for changing one.
//!
//! This module sits below both `message` (the types) and `codec` (the framing), so
//! neither has to import the other for it. (It names neither in code: the layout
//! check reads paths, and the dependency goes one way.)
//!
//! # Compatibility at one `SCHEMA_VERSION`
//!
//! A frame carries the schema version and a receiver refuses any other version, so
//! the version only has to change when peers of the same version could misread each
//! other. What the decoders really do (the tests below pin it):
//!
//! * **JSON** is self-describing. A decoder ignores members it does not know (no type
//!   here is `deny_unknown_fields`) and fills a missing member from
//!   `#[serde(default)]`; a missing `Option` member is `None` even without it. So a
//!   field added with `#[serde(default)]` (or as an `Option`) is readable both ways
//!   between old and new builds: no bump. Renaming or removing a field, changing its
//!   type, or adding one without a default does need a bump.
//! * **postcard** is positional and not self-describing: a struct is its fields in
//!   declaration order with no names and no count. `#[serde(default)]` does not help
//!   it. An older decoder reading a newer frame decodes its own fields and finds bytes
//!   left over, which `codec::decode` refuses (trailing bytes are an
//!   error, not skipped); a newer decoder reading an older frame runs out of input at
//!   the first new field. Either way the frame is refused with
//!   `DecodeError::Postcard`, never misread. So any
//!   field added, removed or reordered changes the postcard layout; the fields with
//!   `#[serde(default)]` at version 1 were added while every postcard peer was
//!   upgraded together, and a mixed-build fleet must publish JSON (the default) until
//!   all peers run the new build. The golden vectors in `tests/golden` fail on any
//!   layout change, so it cannot happen by accident.
//!
//! Rules that keep both encodings decodable at all: no `skip_serializing_if`
//! (postcard would lose its place), no internally tagged enums, no maps keyed by
//! anything but strings.

use serde::{Deserialize, Serialize};

/// A message type with its place in the protocol.
pub trait Message: Serialize + for<'de> Deserialize<'de> {
    /// Short name used in errors and counters (`heartbeat`, `reading`, ...).
    const NAME: &'static str;
    /// Largest encoded frame accepted on decode, in bytes.
    const MAX_BYTES: usize;

    /// The first float field holding NaN or an infinity, by name (`cpu_pct`,
    /// `disks[].used_pct`), or `None`. No fog message may carry one: JSON writes
    /// them as `null`, which no decoder accepts, so `codec` refuses them on encode
    /// and on decode in both encodings. Types without floats keep the default.
    fn non_finite(&self) -> Option<&'static str> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{decode, encode};
    use crate::{DecodeError, Encoding, Heartbeat};

    /// `Heartbeat` as it was before its `#[serde(default)]` fields were appended.
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct OldHeartbeat {
        seq: u64,
        at_ms: u64,
        cpu_pct: Option<f32>,
        mem_pct: f32,
        load1: f32,
        queued: u32,
        running: u32,
        free_slots: u32,
    }

    impl Message for OldHeartbeat {
        const NAME: &'static str = "old heartbeat";
        const MAX_BYTES: usize = 1024;
    }

    fn new_heartbeat() -> Heartbeat {
        Heartbeat {
            seq: 7,
            at_ms: 1_790_000_000_000,
            cpu_pct: Some(12.5),
            backlog_bytes: 4096,
            degraded: vec!["store".into()],
            ..Heartbeat::default()
        }
    }

    fn old_heartbeat() -> OldHeartbeat {
        OldHeartbeat {
            seq: 7,
            at_ms: 1_790_000_000_000,
            cpu_pct: Some(12.5),
            mem_pct: 0.0,
            load1: 0.0,
            queued: 0,
            running: 0,
            free_slots: 0,
        }
    }

    #[test]
    fn json_reads_appended_default_fields_both_ways() {
        let new = encode(&new_heartbeat(), Encoding::Json).expect("encodes");
        let old: OldHeartbeat = decode(&new).expect("an old reader skips the new members");
        assert_eq!(old, old_heartbeat());

        let from_old = encode(&old_heartbeat(), Encoding::Json).expect("encodes");
        let hb: Heartbeat = decode(&from_old).expect("a new reader fills the defaults");
        assert_eq!(hb.backlog_bytes, 0);
        assert!(hb.degraded.is_empty());
        assert_eq!(hb.seq, 7);
    }

    #[test]
    fn postcard_refuses_appended_fields_both_ways() {
        let new = encode(&new_heartbeat(), Encoding::Postcard).expect("encodes");
        assert!(
            matches!(
                decode::<OldHeartbeat>(&new),
                Err(DecodeError::Postcard { .. })
            ),
            "an old reader finds trailing bytes"
        );

        let from_old = encode(&old_heartbeat(), Encoding::Postcard).expect("encodes");
        assert!(
            matches!(
                decode::<Heartbeat>(&from_old),
                Err(DecodeError::Postcard { .. })
            ),
            "a new reader runs out of input; #[serde(default)] does not apply"
        );
    }
}
