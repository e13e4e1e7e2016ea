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

/// A number in `min..=max` (a float also finite), or an error naming the key and the
/// range: "`v` is out of range; expected `min` to `max`".
pub fn in_range<T>(origin: &str, key: &'static str, v: T, min: T, max: T) -> Result<T, ConfigError>
where
    T: PartialOrd + std::fmt::Display,
{
    if min <= v && v <= max {
        Ok(v)
    } else {
        Err(invalid(
            origin,
            key,
            format!("{v} is out of range; expected {min} to {max}"),
        ))
    }
}

/// A percentage from `min` to 100 (finite).
pub fn percent(origin: &str, key: &'static str, v: f32, min: f32) -> Result<f32, ConfigError> {
    in_range(origin, key, v, min, 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_name_the_key_and_the_bounds() {
        assert_eq!(in_range("f", "k", 5u32, 1, 100).expect("in range"), 5);
        let e = in_range("f", "k", 0u32, 1, 100).expect_err("below");
        assert_eq!(
            e.to_string(),
            "config f: key `k`: 0 is out of range; expected 1 to 100"
        );
        assert!(in_range("f", "k", f64::NAN, 1.0, 50.0).is_err());
        assert!(in_range("f", "k", f64::INFINITY, 1.0, 50.0).is_err());
        assert_eq!(percent("f", "p", 100.0, 0.0).expect("in range"), 100.0);
        let e = percent("f", "p", 150.0, 1.0).expect_err("above");
        assert!(
            e.to_string()
                .ends_with("150 is out of range; expected 1 to 100"),
            "{e}"
        );
        let e = interval("f", "s", 0.01, 0.05, 3600.0).expect_err("below");
        assert!(
            e.to_string().ends_with("expected 0.05 to 3600 seconds"),
            "{e}"
        );
    }
}
