//! Private keys on disk: PKCS#8 in PEM, mode 0600, never overwritten.

use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use ring::signature::{Ed25519KeyPair, KeyPair as _};

use super::PublicKey;

const PEM_BEGIN: &str = "-----BEGIN PRIVATE KEY-----";
const PEM_END: &str = "-----END PRIVATE KEY-----";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("reading key {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("writing key {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} already exists; remove it first if you mean to replace that key")]
    Exists { path: PathBuf },
    #[error("key {path} can be read by other users (mode {mode:o}); run `chmod 600 {path}`")]
    Exposed { path: PathBuf, mode: u32 },
    #[error("key {path} is not an Ed25519 private key in PKCS#8 PEM: {why}")]
    BadFile { path: PathBuf, why: String },
    #[error("not a fog public key line ({why}): {line:?}")]
    BadLine { line: String, why: String },
    #[error("the system random number generator failed")]
    Random,
}

/// An Ed25519 key pair.
pub struct KeyPair {
    pair: Ed25519KeyPair,
    public: PublicKey,
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyPair({})", self.public.id())
    }
}

impl KeyPair {
    /// A new random key and its PKCS#8 document (to write to a file).
    pub fn generate() -> Result<(KeyPair, Vec<u8>), KeyError> {
        let rng = ring::rand::SystemRandom::new();
        let doc = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| KeyError::Random)?;
        let der = doc.as_ref().to_vec();
        let pair = Self::from_pkcs8(&der).map_err(|why| KeyError::BadFile {
            path: PathBuf::from("(generated)"),
            why,
        })?;
        Ok((pair, der))
    }

    fn from_pkcs8(der: &[u8]) -> Result<KeyPair, String> {
        // `maybe_unchecked` also reads PKCS#8 v1, which OpenSSL writes.
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der).map_err(|e| e.to_string())?;
        let bytes: [u8; 32] = pair
            .public_key()
            .as_ref()
            .try_into()
            .map_err(|_| "the public key is not 32 bytes".to_owned())?;
        Ok(KeyPair {
            public: PublicKey::from_bytes(bytes),
            pair,
        })
    }

    pub fn public(&self) -> &PublicKey {
        &self.public
    }

    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        self.pair.sign(message).as_ref().to_vec()
    }

    /// Read a key file, refusing one that other users can read.
    pub fn load(path: &Path) -> Result<KeyPair, KeyError> {
        let meta = std::fs::metadata(path).map_err(|source| KeyError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeyError::Exposed {
                path: path.to_owned(),
                mode,
            });
        }
        let text = std::fs::read_to_string(path).map_err(|source| KeyError::Read {
            path: path.to_owned(),
            source,
        })?;
        let bad = |why: String| KeyError::BadFile {
            path: path.to_owned(),
            why,
        };
        let body = pem_body(&text).ok_or_else(|| bad(format!("no {PEM_BEGIN} block")))?;
        let der = base64::engine::general_purpose::STANDARD
            .decode(body)
            .map_err(|e| bad(format!("the PEM body is not base64 ({e})")))?;
        Self::from_pkcs8(&der).map_err(bad)
    }

    /// Make a new key at `path` (mode 0600, parent folders made), never replacing one.
    /// Also writes `<path>.pub` with the public key line.
    pub fn create(path: &Path) -> Result<KeyPair, KeyError> {
        if path.exists() {
            return Err(KeyError::Exists {
                path: path.to_owned(),
            });
        }
        let (pair, der) = Self::generate()?;
        let b64 = base64::engine::general_purpose::STANDARD.encode(&der);
        let mut pem = String::from(PEM_BEGIN);
        pem.push('\n');
        for chunk in b64.as_bytes().chunks(64) {
            pem.push_str(&String::from_utf8_lossy(chunk));
            pem.push('\n');
        }
        pem.push_str(PEM_END);
        pem.push('\n');
        write_new(path, pem.as_bytes(), 0o600)?;
        let pub_path = public_path(path);
        let _ = std::fs::remove_file(&pub_path);
        write_new(
            &pub_path,
            format!("{}\n", pair.public.line()).as_bytes(),
            0o644,
        )?;
        Ok(pair)
    }

    /// The key at `path`, made on first use (a node's identity key).
    pub fn load_or_create(path: &Path) -> Result<(KeyPair, bool), KeyError> {
        if path.exists() {
            Ok((Self::load(path)?, false))
        } else {
            Ok((Self::create(path)?, true))
        }
    }
}

/// `<key>.pub` beside a key file.
pub fn public_path(key: &Path) -> PathBuf {
    let mut s = key.as_os_str().to_owned();
    s.push(".pub");
    PathBuf::from(s)
}

fn pem_body(text: &str) -> Option<String> {
    let start = text.find(PEM_BEGIN)? + PEM_BEGIN.len();
    let end = start + text[start..].find(PEM_END)?;
    Some(text[start..end].split_whitespace().collect())
}

/// Write a whole file under a temporary name and link it into place, so `path` either
/// does not exist or holds all of it, and an existing file is never replaced.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), KeyError> {
    let err = |source| KeyError::Write {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::hard_link(&tmp, path)
    })();
    let _ = std::fs::remove_file(&tmp);
    match result {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(KeyError::Exists {
            path: path.to_owned(),
        }),
        other => other.map_err(err),
    }
}
