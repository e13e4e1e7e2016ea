//! What every fog config shares: the error that names the file and the key, and the
//! checks each crate's loader runs on its values.

use std::path::PathBuf;
use std::time::Duration;

/// A config that cannot be used, with where and why.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config {origin}: {message}")]
    Parse { origin: String, message: String },
    #[error("config {origin}: key `{key}`: {message}")]
    Invalid {
        origin: String,
        key: &'static str,
        message: String,
    },
}

/// A value refused: `origin` is the file (or flag), `key` the dotted key.
pub fn invalid(origin: &str, key: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        origin: origin.to_owned(),
        key,
        message: message.into(),
    }
}

pub fn interval(
    origin: &str,
    key: &'static str,
    secs: f64,
    min: f64,
    max: f64,
) -> Result<Duration, ConfigError> {
    if !secs.is_finite() || secs < min || secs > max {
        return Err(invalid(
            origin,
            key,
            format!("{secs} is out of range; expected {min} to {max} seconds"),
        ));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// An empty path in TOML means "not set".
pub fn nonempty(p: Option<PathBuf>) -> Option<PathBuf> {
    p.filter(|p| !p.as_os_str().is_empty())
}
