//! Where and how to reach the MQTT broker: the `[broker]` table both programs read,
//! URL parsing, TLS files and credentials, and the rules that keep a password off a
//! plain connection.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::config::{interval, invalid, nonempty, ConfigError};

/// A `[broker]` table as written: every key optional, filled from defaults.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBroker {
    url: Option<String>,
    keep_alive_secs: Option<u64>,
    client_id: Option<String>,
    ca_file: Option<PathBuf>,
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    username: Option<String>,
    password: Option<String>,
    password_file: Option<PathBuf>,
    allow_plaintext_password: Option<bool>,
    reconnect_initial_secs: Option<f64>,
    reconnect_max_secs: Option<f64>,
}

impl RawBroker {
    /// The built-in defaults: what an empty `[broker]` table means. The agent's
    /// default.toml documents the same values (a test there checks they agree).
    pub fn defaults() -> RawBroker {
        RawBroker {
            url: Some("mqtt://localhost:1883".into()),
            keep_alive_secs: Some(10),
            client_id: Some(String::new()),
            allow_plaintext_password: Some(false),
            reconnect_initial_secs: Some(0.5),
            reconnect_max_secs: Some(30.0),
            ..RawBroker::default()
        }
    }

    /// Point at another URL (an environment override), keeping the other keys.
    pub fn set_url(&mut self, url: String) {
        self.url = Some(url);
    }

    /// Validate over `defaults` (keys missing here are taken from there).
    pub fn resolve(&self, defaults: &RawBroker, origin: &str) -> Result<BrokerConfig, ConfigError> {
        resolve_broker(self, defaults, origin)
    }
}

/// Where and how to reach the MQTT broker, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct BrokerConfig {
    pub host: String,
    pub port: u16,
    pub tls: Option<TlsFiles>,
    pub keep_alive: Duration,
    /// Empty: derive from the node id.
    pub client_id: String,
    pub credentials: Option<(String, String)>,
    /// Send the password over a plain `mqtt://` connection anyway (the operator said
    /// so with `allow_plaintext_password = true`).
    pub allow_plaintext_password: bool,
    pub reconnect_initial: Duration,
    pub reconnect_max: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TlsFiles {
    pub ca_file: PathBuf,
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

impl BrokerConfig {
    /// A plain-TCP broker at `url` with default settings (tests, the demo).
    pub fn plain(url: &str) -> Result<Self, ConfigError> {
        let raw = RawBroker {
            url: Some(url.to_owned()),
            ..RawBroker::default()
        };
        resolve_broker(&raw, &RawBroker::defaults(), "<built-in>")
    }

    /// Parse a `[broker]` table written with the same keys as the agent's (the
    /// coordinator's config uses it), defaults filled in.
    pub fn from_table(table: Option<toml::Table>, origin: &str) -> Result<Self, ConfigError> {
        let raw: RawBroker = match table {
            Some(t) => t
                .try_into()
                .map_err(|e: toml::de::Error| ConfigError::Parse {
                    origin: origin.to_owned(),
                    message: format!("[broker]: {}", e.to_string().trim_end()),
                })?,
            None => RawBroker::default(),
        };
        resolve_broker(&raw, &RawBroker::defaults(), origin)
    }

    /// The same broker settings aimed at another URL (a `--broker` flag): only the
    /// host and port change, and the scheme must match the config's. TLS files,
    /// credentials and timers are kept; a URL that would drop the configured TLS (or
    /// ask for TLS the config cannot verify), or send a password in cleartext the
    /// config did not allow, is refused rather than obeyed.
    pub fn with_url(&self, url: &str, origin: &str) -> Result<Self, ConfigError> {
        let target = parse_url(url, origin)?;
        match (target.tls, &self.tls) {
            (true, None) => {
                return Err(invalid(
                    origin,
                    "broker.url",
                    format!("{url:?} is mqtts:// but the config has no broker.ca_file to verify the broker with"),
                ))
            }
            (false, Some(_)) => {
                return Err(invalid(
                    origin,
                    "broker.url",
                    format!("{url:?} is plain mqtt:// but the config sets up TLS (broker.ca_file); use mqtts:// or remove the TLS keys"),
                ))
            }
            _ => {}
        }
        let out = BrokerConfig {
            host: target.host,
            port: target.port,
            ..self.clone()
        };
        out.check_cleartext_password(origin)?;
        Ok(out)
    }

    /// A password would cross a plain TCP connection, and the config did not say
    /// that is acceptable.
    pub fn leaks_password(&self) -> bool {
        let has_password = self
            .credentials
            .as_ref()
            .is_some_and(|(_, p)| !p.is_empty());
        has_password && self.tls.is_none() && !self.allow_plaintext_password
    }

    /// Refuse a password that would cross a plain TCP connection unless allowed.
    fn check_cleartext_password(&self, origin: &str) -> Result<(), ConfigError> {
        if self.leaks_password() {
            return Err(invalid(
                origin,
                "broker.url",
                format!(
                    "a password is set but {} is plain mqtt://, so it would cross the network in cleartext; use mqtts:// (with ca_file) or set allow_plaintext_password = true",
                    self.url()
                ),
            ));
        }
        Ok(())
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "mqtts" } else { "mqtt" };
        format!("{scheme}://{}:{}", self.host, self.port)
    }
}

pub(crate) fn resolve_broker(
    raw: &RawBroker,
    d: &RawBroker,
    origin: &str,
) -> Result<BrokerConfig, ConfigError> {
    let url = raw.url.clone().or(d.url.clone()).unwrap_or_default();
    let BrokerUrl { tls, host, port } = parse_url(&url, origin)?;
    let keep_alive_secs = raw.keep_alive_secs.or(d.keep_alive_secs).unwrap_or(10);
    if !(1..=3600).contains(&keep_alive_secs) {
        return Err(invalid(
            origin,
            "broker.keep_alive_secs",
            format!("{keep_alive_secs} is out of range; expected 1 to 3600"),
        ));
    }
    let tls = resolve_tls(raw, tls, origin)?;
    let credentials = resolve_credentials(raw, origin)?;
    let (reconnect_initial, reconnect_max) = resolve_reconnect(raw, d, origin)?;
    let out = BrokerConfig {
        host,
        port,
        tls,
        keep_alive: Duration::from_secs(keep_alive_secs),
        client_id: raw.client_id.clone().unwrap_or_default(),
        credentials,
        allow_plaintext_password: raw
            .allow_plaintext_password
            .or(d.allow_plaintext_password)
            .unwrap_or(false),
        reconnect_initial,
        reconnect_max,
    };
    out.check_cleartext_password(origin)?;
    Ok(out)
}

/// The TLS files for an `mqtts://` URL (the CA required, the client pair both or
/// neither), and a refusal of TLS files beside a plain `mqtt://` URL, which would
/// otherwise be silently ignored. The files have no built-in defaults.
fn resolve_tls(raw: &RawBroker, tls: bool, origin: &str) -> Result<Option<TlsFiles>, ConfigError> {
    let ca_file = nonempty(raw.ca_file.clone());
    let cert = nonempty(raw.cert_file.clone());
    let key = nonempty(raw.key_file.clone());
    if !tls {
        if ca_file.is_some() || cert.is_some() || key.is_some() {
            return Err(invalid(
                origin,
                "broker.url",
                "ca_file/cert_file/key_file are set but the url is mqtt:// (use mqtts://)",
            ));
        }
        return Ok(None);
    }
    let ca_file = ca_file.ok_or_else(|| {
        invalid(
            origin,
            "broker.ca_file",
            "mqtts:// needs the CA that signed the broker's certificate (for a public CA: /etc/ssl/certs/ca-certificates.crt)",
        )
    })?;
    let client_cert = match (cert, key) {
        (Some(c), Some(k)) => Some((c, k)),
        (None, None) => None,
        (Some(_), None) => {
            return Err(invalid(
                origin,
                "broker.key_file",
                "cert_file is set, so key_file is required",
            ))
        }
        (None, Some(_)) => {
            return Err(invalid(
                origin,
                "broker.cert_file",
                "key_file is set, so cert_file is required",
            ))
        }
    };
    Ok(Some(TlsFiles {
        ca_file,
        client_cert,
    }))
}

/// Username and password (inline or from `password_file`, one line ending trimmed).
/// A password needs a username; a username alone is allowed (brokers that
/// authenticate by name or certificate).
fn resolve_credentials(
    raw: &RawBroker,
    origin: &str,
) -> Result<Option<(String, String)>, ConfigError> {
    let username = raw.username.clone().unwrap_or_default();
    let password = raw.password.clone().unwrap_or_default();
    let password_file = nonempty(raw.password_file.clone());
    if !password.is_empty() && password_file.is_some() {
        return Err(invalid(
            origin,
            "broker.password_file",
            "set password or password_file, not both",
        ));
    }
    let password = match password_file {
        Some(p) => std::fs::read_to_string(&p)
            .map_err(|e| {
                invalid(
                    origin,
                    "broker.password_file",
                    format!("reading {}: {e}", p.display()),
                )
            })?
            .trim_end_matches(['\r', '\n'])
            .to_owned(),
        None => password,
    };
    match (username.is_empty(), password.is_empty()) {
        (true, true) => Ok(None),
        (false, _) => Ok(Some((username, password))),
        (true, false) => Err(invalid(
            origin,
            "broker.username",
            "a password is set but no username",
        )),
    }
}

/// The reconnect backoff's first and largest delay, the largest at least the first.
fn resolve_reconnect(
    raw: &RawBroker,
    d: &RawBroker,
    origin: &str,
) -> Result<(Duration, Duration), ConfigError> {
    let reconnect_initial = interval(
        origin,
        "broker.reconnect_initial_secs",
        raw.reconnect_initial_secs
            .or(d.reconnect_initial_secs)
            .unwrap_or(0.5),
        0.01,
        60.0,
    )?;
    let reconnect_max = interval(
        origin,
        "broker.reconnect_max_secs",
        raw.reconnect_max_secs
            .or(d.reconnect_max_secs)
            .unwrap_or(30.0),
        0.01,
        3600.0,
    )?;
    if reconnect_max < reconnect_initial {
        return Err(invalid(
            origin,
            "broker.reconnect_max_secs",
            "must be at least reconnect_initial_secs",
        ));
    }
    Ok((reconnect_initial, reconnect_max))
}

/// What a broker URL says: the scheme (TLS or not), host and port.
struct BrokerUrl {
    tls: bool,
    host: String,
    port: u16,
}

fn parse_url(url: &str, origin: &str) -> Result<BrokerUrl, ConfigError> {
    let (tls, rest) = if let Some(rest) = url.strip_prefix("mqtts://") {
        (true, rest)
    } else if let Some(rest) = url.strip_prefix("mqtt://") {
        (false, rest)
    } else {
        return Err(invalid(
            origin,
            "broker.url",
            format!("{url:?} must start with mqtt:// or mqtts://"),
        ));
    };
    let rest = rest.trim_end_matches('/');
    let default_port = if tls { 8883 } else { 1883 };
    let (host, port) = match rest.rsplit_once(':') {
        // IPv6 literal without a port: "[::1]"
        _ if rest.ends_with(']') => (rest, default_port),
        Some((h, p)) => {
            let port = p.parse::<u16>().ok().filter(|&p| p != 0).ok_or_else(|| {
                invalid(
                    origin,
                    "broker.url",
                    format!("port {p:?} in {url:?} is not a number from 1 to 65535"),
                )
            })?;
            (h, port)
        }
        None => (rest, default_port),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || host.contains('/') || host.contains('@') {
        return Err(invalid(
            origin,
            "broker.url",
            format!("{url:?} has no usable host (expected mqtt://host:port)"),
        ));
    }
    Ok(BrokerUrl {
        tls,
        host: host.to_owned(),
        port,
    })
}
