//! Mosquitto 2.0's password file: `user:$7$<iterations>$<salt>$<hash>`, the hash
//! PBKDF2-HMAC-SHA512 of the password with a 12-byte random salt, both in standard
//! base64, 101 iterations: what `mosquitto_passwd` 2.0 writes.

use std::num::NonZeroU32;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use ring::rand::{SecureRandom, SystemRandom};

/// `mosquitto_passwd`'s iteration count.
pub const ITERATIONS: u32 = 101;
const SALT_BYTES: usize = 12;
const HASH_BYTES: usize = 64;
/// Random bytes in a generated password (32 characters of URL-safe base64).
const PASSWORD_BYTES: usize = 24;

#[derive(Debug, thiserror::Error)]
#[error("the system random number generator failed")]
pub struct RandomError;

fn random<const N: usize>() -> Result<[u8; N], RandomError> {
    let mut b = [0u8; N];
    SystemRandom::new().fill(&mut b).map_err(|_| RandomError)?;
    Ok(b)
}

/// A new random password: URL-safe base64, no whitespace, no padding.
pub fn new_password() -> Result<String, RandomError> {
    Ok(URL_SAFE_NO_PAD.encode(random::<PASSWORD_BYTES>()?))
}

fn derive(password: &str, salt: &[u8], iterations: NonZeroU32) -> [u8; HASH_BYTES] {
    let mut out = [0u8; HASH_BYTES];
    ring::pbkdf2::derive(
        ring::pbkdf2::PBKDF2_HMAC_SHA512,
        iterations,
        salt,
        password.as_bytes(),
        &mut out,
    );
    out
}

/// One line of the password file (no line ending) for `user`, with a fresh salt.
pub fn line(user: &str, password: &str) -> Result<String, RandomError> {
    Ok(line_with_salt(user, password, &random::<SALT_BYTES>()?))
}

fn line_with_salt(user: &str, password: &str, salt: &[u8]) -> String {
    let iterations = NonZeroU32::new(ITERATIONS).expect("101 is not zero");
    let hash = derive(password, salt, iterations);
    format!(
        "{user}:$7${ITERATIONS}${}${}",
        STANDARD.encode(salt),
        STANDARD.encode(hash)
    )
}

/// The username of a password file line, if it is one (`user:...`).
pub fn user_of(line: &str) -> Option<&str> {
    line.split_once(':').map(|(u, _)| u)
}

/// Whether `line` (as Mosquitto or [`line`] wrote it) accepts `password`. Anything
/// that is not a well-formed `$7$` line is `false`.
pub fn verify(line: &str, password: &str) -> bool {
    let Some((_, hash)) = line.split_once(':') else {
        return false;
    };
    let mut parts = hash.split('$');
    let (Some(""), Some("7"), Some(iter), Some(salt), Some(expect), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return false;
    };
    let (Some(iterations), Ok(salt), Ok(expect)) = (
        iter.parse().ok().and_then(NonZeroU32::new),
        STANDARD.decode(salt),
        STANDARD.decode(expect),
    ) else {
        return false;
    };
    ring::pbkdf2::verify(
        ring::pbkdf2::PBKDF2_HMAC_SHA512,
        iterations,
        &salt,
        password.as_bytes(),
        &expect,
    )
    .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Written by `mosquitto_passwd -b -c pw alice hunter2` (Mosquitto 2.0.11).
    const FROM_MOSQUITTO: &str = "alice:$7$101$Y52gJoZdt36w3cq7$QaTmhyPvnfK13Lt7WiG/p8+O5kJVPQFkK+gaYuhH1kniBWG0bW6nIgM8GVwJlTNDXEs8AX62vxezCjjVm/6i3Q==";

    #[test]
    fn hashes_like_mosquitto_passwd() {
        assert!(verify(FROM_MOSQUITTO, "hunter2"));
        assert!(!verify(FROM_MOSQUITTO, "hunter3"));
        // The same salt gives the same line, byte for byte.
        let salt = STANDARD.decode("Y52gJoZdt36w3cq7").expect("base64");
        assert_eq!(line_with_salt("alice", "hunter2", &salt), FROM_MOSQUITTO);
    }

    #[test]
    fn generated_lines_verify_and_differ_in_salt() {
        let pw = new_password().expect("rng");
        assert_eq!(pw.len(), 32);
        assert!(pw
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
        let a = line("pi-1", &pw).expect("rng");
        let b = line("pi-1", &pw).expect("rng");
        assert_ne!(a, b, "a fresh salt each time");
        assert!(verify(&a, &pw) && verify(&b, &pw));
        assert_eq!(user_of(&a), Some("pi-1"));
        for junk in [
            "",
            "u",
            "u:",
            "u:$6$1$a$b",
            "u:$7$x$AA==$AA==",
            "u:$7$0$AA==$AA==",
        ] {
            assert!(!verify(junk, "x"), "{junk:?}");
        }
    }
}
