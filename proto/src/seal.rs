//! The seal: who vouches for a message, and exactly which bytes they signed.
//!
//! A sealed message type carries an optional [`Seal`] as its last field. The signature
//! is over the SHA-256 of [`signing_bytes`] (fog-rt hashes them): a domain tag, the message type's name, the seal's key id,
//! scope and time, and the postcard encoding of the message with its seal taken out.
//! postcard is deterministic for a given value, so the signed bytes are the same
//! whichever encoding carried the message (JSON stays readable with `mosquitto_sub`),
//! and a receiver recomputes them from what it decoded: a message whose any field was
//! changed in transit, in either encoding, no longer verifies.
//!
//! This crate fixes only what is signed. The keys and the Ed25519 arithmetic live in
//! `fog_rt::keys`, so fog-proto stays free of cryptography and I/O.

use serde::{Deserialize, Serialize};

use crate::codec::{AppendVec, EncodeError};
use crate::payload::Payload;
use crate::schema::Message;

/// Separates fog's signatures from any other use of the same key.
pub const SEAL_DOMAIN: &[u8] = b"fog/v1 seal\0";

/// Length of an Ed25519 signature.
pub const SIGNATURE_BYTES: usize = 64;

/// Who signed a message, for whom, and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seal {
    /// Id of the signing key: the first 8 bytes of the SHA-256 of its public key, in
    /// hex (what `fog-coordinator keys show` and `fog-agent trust list` print).
    pub key: String,
    /// What the message is bound to: the node an assignment list is addressed to, the
    /// node a node's message comes from, the client a submission comes from.
    pub scope: String,
    /// Wall clock when it was signed (ms since the Unix epoch).
    pub at_ms: u64,
    /// Ed25519 signature over [`signing_bytes`].
    pub sig: Payload,
}

/// A message type that can carry a [`Seal`].
pub trait Sealed: Message {
    fn seal(&self) -> Option<&Seal>;
    fn take_seal(&mut self) -> Option<Seal>;
    fn put_seal(&mut self, seal: Option<Seal>);
}

/// The bytes a seal with this `key`, `scope` and `at_ms` signs for `msg` (its own seal
/// is ignored: taken out while encoding and put back). Written into `out`, cleared
/// first.
///
/// The message is encoded with the same postcard flavor as the wire encoding
/// (`codec::AppendVec`), so a binary holds one copy of each message's serializer, not
/// a second one for hashing (docs/performance.md, "Signatures": what that saved on the
/// agent's resident memory).
pub fn signing_bytes<M: Sealed>(
    msg: &mut M,
    key: &str,
    scope: &str,
    at_ms: u64,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    out.clear();
    out.extend_from_slice(SEAL_DOMAIN);
    out.extend_from_slice(M::NAME.as_bytes());
    out.push(0);
    postcard_into(&(key, scope, at_ms), M::NAME, out)?;
    let held = msg.take_seal();
    let body = postcard_into(&*msg, M::NAME, out);
    msg.put_seal(held);
    body
}

fn postcard_into<T: Serialize + ?Sized>(
    value: &T,
    what: &'static str,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    postcard::serialize_with_flavor(value, AppendVec(out))
        .map_err(|source| EncodeError::Postcard { what, source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{decode, encode};
    use crate::{Encoding, Payload, TaskAssignment, TaskAssignments};

    fn list() -> TaskAssignments {
        TaskAssignments {
            items: vec![TaskAssignment {
                id: "t-1".into(),
                attempt: 1,
                kind: "echo".into(),
                payload: Payload(b"hi".to_vec()),
                timeout_ms: 1000,
                priority: 0,
                deadline_ms: 0,
                cacheable: false,
            }],
            seal: None,
        }
    }

    fn bytes(m: &mut TaskAssignments, key: &str, scope: &str, at: u64) -> Vec<u8> {
        let mut out = Vec::new();
        signing_bytes(m, key, scope, at, &mut out).expect("encodes");
        out
    }

    #[test]
    fn the_signed_bytes_ignore_the_seal_and_the_encoding() {
        let mut plain = list();
        let want = bytes(&mut plain, "k", "node-1", 5);
        let mut sealed = list();
        sealed.seal = Some(Seal {
            key: "k".into(),
            scope: "node-1".into(),
            at_ms: 5,
            sig: Payload(vec![7; SIGNATURE_BYTES]),
        });
        assert_eq!(bytes(&mut sealed, "k", "node-1", 5), want);
        assert!(sealed.seal.is_some(), "the seal is put back");
        for enc in [Encoding::Json, Encoding::Postcard] {
            let wire = encode(&sealed, enc).expect("encodes");
            let mut back: TaskAssignments = decode(&wire).expect("decodes");
            assert_eq!(back.seal, sealed.seal);
            assert_eq!(bytes(&mut back, "k", "node-1", 5), want, "{enc:?}");
        }
    }

    #[test]
    fn every_bound_field_changes_the_signed_bytes() {
        let base = bytes(&mut list(), "k", "node-1", 5);
        assert_ne!(bytes(&mut list(), "j", "node-1", 5), base);
        assert_ne!(bytes(&mut list(), "k", "node-2", 5), base);
        assert_ne!(bytes(&mut list(), "k", "node-1", 6), base);
        let mut other = list();
        other.items[0].attempt = 2;
        assert_ne!(bytes(&mut other, "k", "node-1", 5), base);
        // The name and scope are length-prefixed, so bytes cannot slide between them.
        assert_ne!(bytes(&mut list(), "kn", "ode-1", 5), base);
    }
}
