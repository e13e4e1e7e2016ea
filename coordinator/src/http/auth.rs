//! Who may change something through the API: a request signed with a client key of
//! the security issue's `[clients]` (the same keys that sign MQTT submissions).
//!
//! ```text
//! Authorization: Fog client=NAME, at=UNIX_MS, sig=BASE64(ed25519(MESSAGE))
//! MESSAGE = "fog-http-v1\n" METHOD "\n" PATH_AND_QUERY "\n" UNIX_MS "\n" hex(sha256(BODY))
//! ```
//!
//! Refused with 401 when missing, malformed, by an unknown client, badly signed,
//! outside the clock skew or replayed (each signature is taken once); 403 when the
//! client may not act on that node (its `nodes` and `labels`).

use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use base64::Engine as _;
use fog_rt::keys::KeyPair;

use super::ApiError;
use crate::clients::{ClientPolicy, Clients, ReplayCache};

/// The bytes a client signs for one request.
pub fn message(method: &str, path_and_query: &str, at_ms: u64, body: &[u8]) -> Vec<u8> {
    let mut hex = String::with_capacity(64);
    for b in ring::digest::digest(&ring::digest::SHA256, body).as_ref() {
        let _ = write!(hex, "{b:02x}");
    }
    format!("fog-http-v1\n{method}\n{path_and_query}\n{at_ms}\n{hex}").into_bytes()
}

/// The `Authorization` header for a request, signed by `client` with `key`.
pub fn authorization(
    client: &str,
    key: &KeyPair,
    method: &str,
    path_and_query: &str,
    at_ms: u64,
    body: &[u8],
) -> String {
    let sig = key.sign(&message(method, path_and_query, at_ms, body));
    let b64 = base64::engine::general_purpose::STANDARD.encode(sig);
    format!("Fog client={client}, at={at_ms}, sig={b64}")
}

/// The configured clients, the skew allowed and the signatures already taken.
pub struct Verifier {
    clients: Clients,
    max_skew_ms: u64,
    seen: Mutex<ReplayCache>,
}

fn unauthorized(reason: impl Into<String>) -> ApiError {
    ApiError {
        status: StatusCode::UNAUTHORIZED,
        code: "unauthorized",
        reason: reason.into(),
    }
}

impl Verifier {
    pub fn new(clients: Clients, max_skew: Duration) -> Verifier {
        Verifier {
            clients,
            max_skew_ms: max_skew.as_millis() as u64,
            seen: Mutex::new(ReplayCache::new(max_skew * 2, 100_000)),
        }
    }

    /// The client that signed this request, if its signature holds.
    pub fn check(
        &self,
        headers: &HeaderMap,
        method: &str,
        path_and_query: &str,
        body: &[u8],
        now_ms: u64,
    ) -> Result<&ClientPolicy, ApiError> {
        let h = headers
            .get("authorization")
            .ok_or_else(|| unauthorized("this endpoint needs a signed request: Authorization: Fog client=NAME, at=MS, sig=... (see docs/api.md)"))?
            .to_str()
            .map_err(|_| unauthorized("the Authorization header is not text"))?;
        let fields = h
            .strip_prefix("Fog ")
            .ok_or_else(|| unauthorized("the Authorization scheme must be Fog"))?;
        let (mut client, mut at, mut sig) = (None, None, None);
        for f in fields.split(',').map(str::trim) {
            match f.split_once('=') {
                Some(("client", v)) => client = Some(v),
                Some(("at", v)) => at = v.parse::<u64>().ok(),
                Some(("sig", v)) => sig = base64::engine::general_purpose::STANDARD.decode(v).ok(),
                _ => return Err(unauthorized(format!("unknown Authorization field {f:?}"))),
            }
        }
        let (Some(client), Some(at), Some(sig)) = (client, at, sig) else {
            return Err(unauthorized(
                "Authorization needs client=, at= (ms) and sig= (base64)",
            ));
        };
        let policy = self
            .clients
            .get(client)
            .ok_or_else(|| unauthorized(format!("client {client:?} is not configured here")))?;
        if !policy
            .key
            .verify(&message(method, path_and_query, at, body), &sig)
        {
            return Err(unauthorized(format!(
                "the signature is not client {client:?}'s for this request"
            )));
        }
        if at.abs_diff(now_ms) > self.max_skew_ms {
            return Err(unauthorized(format!(
                "signed at {at}, {} s from this coordinator's clock (at most {} s)",
                at.abs_diff(now_ms) / 1000,
                self.max_skew_ms / 1000
            )));
        }
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take(&sig, now_ms)
            .map_err(|e| {
                let reason = e.to_string().replace("submission refused: ", "");
                match e {
                    // Full: not this request's fault; try again later.
                    crate::clients::Refusal::Busy(_) => ApiError {
                        status: StatusCode::SERVICE_UNAVAILABLE,
                        code: "busy",
                        reason,
                    },
                    _ => unauthorized(reason),
                }
            })?;
        Ok(policy)
    }
}

/// Whether `policy` may act on a node with `labels`.
pub fn may_target(
    policy: &ClientPolicy,
    node: &str,
    labels: &std::collections::BTreeMap<String, String>,
) -> Result<(), ApiError> {
    let node_ok = policy.nodes.is_empty() || policy.nodes.iter().any(|n| n == node);
    let labels_ok = policy.labels.iter().all(|(k, v)| labels.get(k) == Some(v));
    if node_ok && labels_ok {
        return Ok(());
    }
    Err(ApiError {
        status: StatusCode::FORBIDDEN,
        code: "forbidden",
        reason: format!(
            "client {:?} may not act on node {node:?} (its nodes and labels in [clients])",
            policy.name
        ),
    })
}
