//! `fog-coordinator drain NODE [--undo]`: place nothing new on a node (for
//! maintenance; what runs there finishes), or place on it again, through a running
//! coordinator's HTTP API, signed with a client key of its `[clients]`.

use std::path::PathBuf;
use std::process::ExitCode;

use super::http::{authority, post_json};
use super::keys::SignArgs;
use fog_coordinator::config::CoordinatorConfig;

use super::{config_err, failure, usage};

#[derive(clap::Args)]
pub struct Args {
    /// The node.
    node: String,
    /// Undrain: place on it again.
    #[arg(long)]
    undo: bool,
    /// The coordinator's HTTP API.
    #[arg(long, default_value = "http://127.0.0.1:9464")]
    url: String,
    /// Config file (for `security.client_key`).
    #[arg(long, short)]
    config: Option<PathBuf>,
    #[command(flatten)]
    sign: SignArgs,
}

pub fn run(a: &Args) -> Result<ExitCode, ExitCode> {
    let verb = if a.undo { "undrain" } else { "drain" };
    let v = node_command(&a.url, a.config.as_deref(), &a.sign, &a.node, verb)?;
    let in_flight = v["in_flight"].as_u64().unwrap_or(0);
    match (a.undo, v["changed"].as_bool() == Some(true)) {
        (false, true) => println!(
            "{}: drained; nothing new is placed there ({in_flight} tasks still running finish)",
            a.node
        ),
        (false, false) => println!(
            "{}: was drained already ({in_flight} tasks running)",
            a.node
        ),
        (true, true) => println!("{}: undrained; tasks are placed there again", a.node),
        (true, false) => println!("{}: was not drained", a.node),
    }
    Ok(ExitCode::SUCCESS)
}

/// `POST /api/v1/nodes/{node}/{verb}` on the coordinator at `url`, signed with the
/// client key of `sign` (or the config's): the JSON answer of a 200; any other
/// answer fails with the API's reason.
pub fn node_command(
    url: &str,
    config: Option<&std::path::Path>,
    sign: &SignArgs,
    node: &str,
    verb: &str,
) -> Result<serde_json::Value, ExitCode> {
    let cfg = match config {
        Some(p) => CoordinatorConfig::load(p),
        None => CoordinatorConfig::from_toml("", "<defaults>"),
    }
    .map_err(config_err)?;
    let signer = sign.signer(&cfg)?.ok_or_else(|| {
        usage(&format!("{verb} needs a client key: --key FILE, $FOG_CLIENT_KEY or security.client_key (see `fog-coordinator keys client`)"))
    })?;
    let host = authority(url).map_err(|e| usage(&e))?;
    let path = format!("/api/v1/nodes/{}/{verb}", percent_encode(node));
    let auth = signer.http_authorization("POST", &path, fog_rt::clock::now_ms(), b"");
    let (code, v) = post_json(host, &path, &auth, b"", std::time::Duration::from_secs(10))
        .map_err(|e| failure(&e))?;
    if code != 200 {
        let reason = v["reason"].as_str().unwrap_or("no reason given");
        return Err(failure(&format!(
            "{node}: {verb} refused (HTTP {code}): {reason}"
        )));
    }
    Ok(v)
}

/// A path segment: everything but RFC 3986's unreserved characters percent-encoded,
/// so the server decodes exactly the node id that was signed (`pi%41` stays `pi%41`).
fn percent_encode(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::percent_encode;

    #[test]
    fn node_ids_are_sent_as_they_are() {
        assert_eq!(percent_encode("pi-1_a.b~"), "pi-1_a.b~");
        assert_eq!(percent_encode("pi%41"), "pi%2541");
        assert_eq!(percent_encode("a?b/c"), "a%3Fb%2Fc");
        assert_eq!(percent_encode("é"), "%C3%A9");
    }
}
