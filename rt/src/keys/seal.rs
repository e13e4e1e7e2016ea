//! Sealing a message and opening one: which key, for whom, how old.

use fog_proto::seal::{signing_bytes, SIGNATURE_BYTES};
use fog_proto::{EncodeError, Payload, Seal, Sealed};

use super::{KeyPair, PublicKey};

/// Why a message's seal was not believed. [`SealError::label`] names the counter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("it is not signed")]
    Unsigned,
    #[error("it is signed by key {0}, which is not trusted here")]
    UnknownKey(String),
    #[error("its signature by key {0} does not verify (forged or altered)")]
    BadSignature(String),
    #[error("it is for {found:?}, not {expected:?}")]
    WrongScope { expected: String, found: String },
    #[error("it was signed {age_s} s ago, more than the {max_s} s allowed (a replay, or the clocks disagree)")]
    Stale { age_s: u64, max_s: u64 },
    #[error("it was signed {ahead_s} s in the future, more than the {max_s} s allowed (check the clocks)")]
    Future { ahead_s: u64, max_s: u64 },
}

impl SealError {
    /// Short stable name, for counters and logs.
    pub fn label(&self) -> &'static str {
        match self {
            SealError::Unsigned => "unsigned",
            SealError::UnknownKey(_) => "unknown_key",
            SealError::BadSignature(_) => "bad_signature",
            SealError::WrongScope { .. } => "wrong_scope",
            SealError::Stale { .. } => "stale",
            SealError::Future { .. } => "future",
        }
    }
}

/// The age check: a seal more than `max_skew_ms` away from `now_ms`, either way, is
/// refused.
#[derive(Debug, Clone, Copy)]
pub struct Freshness {
    pub now_ms: u64,
    pub max_skew_ms: u64,
}

impl Freshness {
    fn check(self, at_ms: u64) -> Result<(), SealError> {
        let max_s = self.max_skew_ms / 1000;
        if at_ms + self.max_skew_ms < self.now_ms {
            return Err(SealError::Stale {
                age_s: (self.now_ms - at_ms) / 1000,
                max_s,
            });
        }
        if at_ms > self.now_ms + self.max_skew_ms {
            return Err(SealError::Future {
                ahead_s: (at_ms - self.now_ms) / 1000,
                max_s,
            });
        }
        Ok(())
    }
}

/// Sign `msg` with `key` for `scope` at `at_ms`, replacing any seal it had.
pub fn seal<M: Sealed>(
    msg: &mut M,
    key: &KeyPair,
    scope: &str,
    at_ms: u64,
) -> Result<(), EncodeError> {
    let id = key.public().id();
    let d = digest(msg, id, scope, at_ms)?;
    msg.put_seal(Some(Seal {
        key: id.to_owned(),
        scope: scope.to_owned(),
        at_ms,
        sig: Payload(key.sign(d.as_ref())),
    }));
    Ok(())
}

/// Check `msg`'s seal: signed by one of `keys`, for `scope`, and (if asked) fresh.
/// Returns the key that signed it. The seal stays on the message.
pub fn open<'k, M: Sealed>(
    msg: &mut M,
    keys: &'k [PublicKey],
    scope: &str,
    fresh: Option<Freshness>,
) -> Result<&'k PublicKey, SealError> {
    let seal = msg.take_seal().ok_or(SealError::Unsigned)?;
    let result = check(msg, &seal, keys, scope, fresh);
    msg.put_seal(Some(seal));
    result
}

fn check<'k, M: Sealed>(
    msg: &mut M,
    seal: &Seal,
    keys: &'k [PublicKey],
    scope: &str,
    fresh: Option<Freshness>,
) -> Result<&'k PublicKey, SealError> {
    let key = keys
        .iter()
        .find(|k| k.id() == seal.key)
        .ok_or_else(|| SealError::UnknownKey(short(&seal.key)))?;
    let digest = digest(msg, &seal.key, &seal.scope, seal.at_ms);
    if seal.sig.0.len() != SIGNATURE_BYTES
        || !digest.is_ok_and(|d| key.verify(d.as_ref(), &seal.sig.0))
    {
        return Err(SealError::BadSignature(key.id().to_owned()));
    }
    // Scope and time are checked after the signature, so a reason given back is about
    // what the key holder really signed, not what a forger claims.
    if seal.scope != scope {
        return Err(SealError::WrongScope {
            expected: scope.to_owned(),
            found: short(&seal.scope),
        });
    }
    if let Some(f) = fresh {
        f.check(seal.at_ms)?;
    }
    Ok(key)
}

/// What the Ed25519 signature is over: the SHA-256 of the signed bytes. Ed25519 hashes
/// its message twice with SHA-512; over a 256-task list of 1 KiB payloads that was
/// 0.9 ms to sign and 0.5 ms to open, most of fog's added cost per task. One SHA-256
/// pass (with the CPU's SHA instructions where it has them) is several times cheaper.
/// The bytes are encoded into one buffer and hashed in one call (see `signing_bytes`
/// for why not streamed).
fn digest<M: Sealed>(
    msg: &mut M,
    key: &str,
    scope: &str,
    at_ms: u64,
) -> Result<ring::digest::Digest, EncodeError> {
    let mut bytes = Vec::with_capacity(1024);
    signing_bytes(msg, key, scope, at_ms, &mut bytes)?;
    Ok(ring::digest::digest(&ring::digest::SHA256, &bytes))
}

fn short(s: &str) -> String {
    s.chars().take(64).collect()
}
