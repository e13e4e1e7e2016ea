//! `fog-coordinator submit`: one task, its id or (with `--wait`) its result: output on
//! stdout, status and timings on stderr.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use fog_coordinator::client;
use fog_proto::{Outcome, TaskResult, Topics};

use super::{config_err, failure, load, runtime, usage, Common, EXIT_NO_INPUT};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    sign: super::keys::SignArgs,
    /// Task kind (echo, sha256, sleep, or a command the agents declare).
    #[arg(long)]
    kind: String,
    /// The payload as text.
    #[arg(long, conflicts_with = "payload_file")]
    payload: Option<String>,
    /// Read the payload from a file ("-" for stdin).
    #[arg(long, value_name = "PATH")]
    payload_file: Option<PathBuf>,
    /// Read the payload from stdin (same as --payload-file -).
    #[arg(value_name = "-", hide = true)]
    stdin: Option<String>,
    #[arg(long, default_value_t = 0)]
    priority: u8,
    /// Seconds the task may run.
    #[arg(long, default_value_t = 60.0)]
    timeout: f64,
    /// Answer from the agents' content cache when the same kind and payload ran before.
    #[arg(long)]
    cacheable: bool,
    /// Wait for the result (otherwise print the task id once submitted).
    #[arg(long)]
    wait: bool,
    /// Submit through a coordinator's HTTP API (`http://HOST:PORT`, its `http_listen`)
    /// instead of the broker: for a machine that reaches the coordinator but not the
    /// broker. Needs a client key; waits at most 300 s for a result.
    #[arg(long, value_name = "URL")]
    url: Option<String>,
}

pub fn run(a: Args) -> Result<ExitCode, ExitCode> {
    fog_rt::logging::init("FOG_LOG", "warn,rumqttd=warn");
    let cfg = load(&a.common).map_err(config_err)?;
    let bytes = payload(&a)?;
    if !(a.timeout.is_finite() && a.timeout > 0.0) {
        return Err(usage("--timeout must be a positive number of seconds"));
    }
    let timeout = Duration::from_secs_f64(a.timeout.min(86_400.0));
    let signer = a.sign.signer(&cfg)?;
    if let Some(url) = &a.url {
        let signer = signer.ok_or_else(|| {
            usage("--url needs a client key: --key FILE, $FOG_CLIENT_KEY or security.client_key (see `fog-coordinator keys client`)")
        })?;
        return over_http(&a, url, &signer, bytes, timeout);
    }
    runtime()?.block_on(async move {
        let mut c = client::Client::connect_as(
            &cfg.broker,
            Topics::new(cfg.prefix.clone()),
            Duration::from_secs(10),
            signer,
        )
        .await
        .map_err(|e| failure(&e))?;
        let sub = client::submission(&a.kind, bytes, a.priority, timeout, a.cacheable);
        if !a.wait {
            let id = c.submit(sub).await.map_err(|e| failure(&e))?;
            c.close().await;
            println!("{id}");
            return Ok(ExitCode::SUCCESS);
        }
        let r = client::submit_and_wait(&mut c, sub, timeout + Duration::from_secs(30))
            .await
            .map_err(|e| failure(&e))?;
        c.close().await;
        Ok(print_result(&r))
    })
}

/// The task through `POST /api/v1/tasks` (docs/api.md): its id once accepted, or
/// with `--wait` its result.
fn over_http(
    a: &Args,
    url: &str,
    signer: &client::Signer,
    payload: Vec<u8>,
    timeout: Duration,
) -> Result<ExitCode, ExitCode> {
    use base64::Engine as _;
    let host = super::http::authority(url).map_err(|e| usage(&e))?;
    let task = serde_json::json!({
        "kind": a.kind,
        "payload_base64": base64::engine::general_purpose::STANDARD.encode(payload),
        "priority": a.priority,
        "timeout_ms": timeout.as_millis().min(u128::from(u32::MAX)) as u64,
        "cacheable": a.cacheable,
    });
    let body = serde_json::json!({ "tasks": [task] })
        .to_string()
        .into_bytes();
    // The result comes within the task's time limit, plus time to be placed.
    let wait_secs = (timeout.as_secs() + 30).min(300);
    let path = if a.wait {
        format!("/api/v1/tasks?wait={wait_secs}")
    } else {
        "/api/v1/tasks".to_owned()
    };
    let auth = signer.http_authorization("POST", &path, fog_rt::clock::now_ms(), &body);
    let (code, v) = super::http::post_json(
        host,
        &path,
        &auth,
        &body,
        Duration::from_secs(wait_secs + 10),
    )
    .map_err(|e| failure(&e))?;
    let item = &v["tasks"][0];
    let reason = item["reason"]
        .as_str()
        .or(v["reason"].as_str())
        .unwrap_or("");
    let id = item["id"].as_str().unwrap_or("");
    match item["state"].as_str() {
        Some("finished") => {
            let r: TaskResult = serde_json::from_value(item["result"].clone())
                .map_err(|e| failure(&format!("the coordinator's result for {id}: {e}")))?;
            Ok(print_result(&r))
        }
        Some("accepted" | "running") if !a.wait => {
            println!("{id}");
            Ok(ExitCode::SUCCESS)
        }
        Some(state @ ("accepted" | "running" | "pending")) => {
            eprintln!("{id}: {state}, no result within {wait_secs} s; follow it at {url}/api/v1/tasks/{id}");
            Err(ExitCode::FAILURE)
        }
        Some(state) => {
            eprintln!("{id}: {state}: {reason}");
            Err(ExitCode::FAILURE)
        }
        None => Err(failure(&format!("HTTP {code}: {reason}"))),
    }
}

/// The payload from exactly one of `--payload`, `--payload-file` and `-`.
fn payload(a: &Args) -> Result<Vec<u8>, ExitCode> {
    match (&a.payload, a.payload_file.as_deref(), a.stdin.as_deref()) {
        (Some(p), None, None) => Ok(p.clone().into_bytes()),
        (None, Some(p), None) if p.as_os_str() == "-" => read_stdin(),
        (None, None, Some("-")) => read_stdin(),
        (None, Some(p), None) => std::fs::read(p).map_err(|e| {
            eprintln!("fog-coordinator: reading {}: {e}", p.display());
            ExitCode::from(EXIT_NO_INPUT)
        }),
        _ => Err(usage(
            "give exactly one of --payload TEXT, --payload-file PATH or - (stdin)",
        )),
    }
}

fn read_stdin() -> Result<Vec<u8>, ExitCode> {
    use std::io::Read as _;
    let mut v = Vec::new();
    std::io::stdin().read_to_end(&mut v).map_err(|e| {
        eprintln!("fog-coordinator: reading stdin: {e}");
        ExitCode::from(EXIT_NO_INPUT)
    })?;
    Ok(v)
}

/// Output to stdout, status and timings to stderr; non-zero exit unless completed.
fn print_result(r: &TaskResult) -> ExitCode {
    use std::io::Write as _;
    match &r.outcome {
        Outcome::Completed {
            output,
            truncated,
            exit_code,
            duration_ms,
            cpu_ms,
            peak_rss_bytes,
            from_cache,
        } => {
            let _ = std::io::stdout().write_all(&output.0);
            let _ = std::io::stdout().flush();
            eprintln!(
                "completed on {} (attempt {}): {duration_ms} ms wall, {cpu_ms} ms cpu, peak rss {peak_rss_bytes} B{}{}{}",
                r.node,
                r.attempt,
                exit_code.map(|c| format!(", exit {c}")).unwrap_or_default(),
                if *truncated { ", output truncated" } else { "" },
                if *from_cache { ", from cache" } else { "" },
            );
            ExitCode::SUCCESS
        }
        Outcome::Failed {
            error,
            retryable,
            exit_code,
            duration_ms,
        } => {
            eprintln!(
                "failed on {} after {duration_ms} ms{}{}: {error}",
                r.node,
                exit_code
                    .map(|c| format!(" (exit {c})"))
                    .unwrap_or_default(),
                if *retryable { " (retryable)" } else { "" }
            );
            ExitCode::FAILURE
        }
        Outcome::TimedOut { after_ms } => {
            eprintln!("timed out on {} after {after_ms} ms", r.node);
            ExitCode::FAILURE
        }
        Outcome::Rejected { reason, retryable } => {
            eprintln!(
                "rejected by {}: {reason}{}",
                r.node,
                if *retryable { " (retryable)" } else { "" }
            );
            ExitCode::FAILURE
        }
        Outcome::Accepted => {
            eprintln!("accepted by {} but no final result", r.node);
            ExitCode::FAILURE
        }
    }
}
