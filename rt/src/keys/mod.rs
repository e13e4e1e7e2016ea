//! Ed25519 keys and seals: the coordinator's key (signs assignments), each client's
//! (signs submissions) and each node's (signs its status, heartbeats and results).
//!
//! * [`PublicKey`]: one line an operator copies between machines,
//!   `fog-ed25519 <base64 of 32 bytes> [comment]`, and its short id (the first 8
//!   bytes of its SHA-256, in hex) that a [`fog_proto::Seal`] names.
//! * [`KeyPair`]: a private key in a PKCS#8 PEM file of mode 0600 (the format
//!   `openssl genpkey -algorithm ed25519` writes, so keys can come from elsewhere).
//! * [`seal`] / [`open`]: sign a message, and check one against a set of keys, its
//!   scope and its age, with a [`SealError`] that says which check failed.
//!
//! ring does the arithmetic; it is in the tree already through rustls.

mod file;
mod seal;

pub use file::{public_path, KeyError, KeyPair};
pub use seal::{open, seal, Freshness, SealError};

use base64::Engine as _;
use ring::signature::{UnparsedPublicKey, ED25519};

/// First word of a public key line.
pub const KEY_LINE_TAG: &str = "fog-ed25519";

/// An Ed25519 public key and its id.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    bytes: [u8; 32],
    id: String,
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({})", self.id)
    }
}

impl PublicKey {
    pub fn from_bytes(bytes: [u8; 32]) -> PublicKey {
        let digest = ring::digest::digest(&ring::digest::SHA256, &bytes);
        let id = digest.as_ref()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        PublicKey { bytes, id }
    }

    /// Parse `fog-ed25519 <base64> [comment]` (surrounding whitespace ignored).
    pub fn from_line(line: &str) -> Result<PublicKey, KeyError> {
        let mut words = line.split_whitespace();
        let bad = |why: &str| KeyError::BadLine {
            line: short(line),
            why: why.to_owned(),
        };
        match words.next() {
            Some(KEY_LINE_TAG) => {}
            Some(_) => return Err(bad("it does not start with `fog-ed25519`")),
            None => return Err(bad("it is empty")),
        }
        let b64 = words
            .next()
            .ok_or_else(|| bad("the base64 key after `fog-ed25519` is missing"))?;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|e| bad(&format!("the key is not base64 ({e})")))?;
        let bytes: [u8; 32] = raw
            .try_into()
            .map_err(|v: Vec<u8>| bad(&format!("the key is {} bytes, not 32", v.len())))?;
        Ok(PublicKey::from_bytes(bytes))
    }

    /// `fog-ed25519 <base64>`: what [`PublicKey::from_line`] reads.
    pub fn line(&self) -> String {
        format!(
            "{KEY_LINE_TAG} {}",
            base64::engine::general_purpose::STANDARD.encode(self.bytes)
        )
    }

    /// The short id a seal names (16 hex digits).
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        UnparsedPublicKey::new(&ED25519, &self.bytes)
            .verify(message, signature)
            .is_ok()
    }
}

fn short(s: &str) -> String {
    let s = s.trim();
    if s.chars().count() > 80 {
        format!("{}...", s.chars().take(80).collect::<String>())
    } else {
        s.to_owned()
    }
}

#[cfg(test)]
mod tests;
