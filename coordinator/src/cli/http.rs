//! A few lines of HTTP/1.1 client for the CLI's calls to a coordinator's API (plain
//! HTTP to its own listener; no TLS, no redirects, one request a connection).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::Value;

/// `host:port` of an `http://` URL.
pub fn authority(url: &str) -> Result<&str, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("--url {url:?}: only http:// (the coordinator's own listener)"))?;
    Ok(rest.trim_end_matches('/'))
}

/// `GET path` over a fresh connection; the JSON body of a 200 (or of a 503, if
/// `unwell_too`: the health endpoint's answer when a part is not well).
pub fn get(host: &str, path: &str, unwell_too: bool) -> Result<Value, String> {
    request(host, "GET", path, None, unwell_too)
}

/// `POST path` with `authorization` and a JSON `body`, waiting up to `wait` for
/// the answer: its status and JSON body, whatever the status.
pub fn post_json(
    host: &str,
    path: &str,
    authorization: &str,
    body: &[u8],
    wait: Duration,
) -> Result<(u16, Value), String> {
    let (code, text) = exchange(host, "POST", path, Some(authorization), body, wait)?;
    let v = serde_json::from_str(&text)
        .map_err(|e| format!("{host}{path}: HTTP {code}, not JSON ({e}): {}", text.trim()))?;
    Ok((code, v))
}

fn request(
    host: &str,
    method: &str,
    path: &str,
    authorization: Option<&str>,
    unwell_too: bool,
) -> Result<Value, String> {
    let (code, body) = exchange(
        host,
        method,
        path,
        authorization,
        b"",
        Duration::from_secs(10),
    )?;
    if code != 200 && !(unwell_too && code == 503) {
        return Err(format!("{host}{path}: HTTP {code}: {}", body.trim()));
    }
    serde_json::from_str(&body).map_err(|e| format!("{host}{path}: not JSON: {e}"))
}

/// One request on a fresh connection: the status and the (de-chunked) body.
fn exchange(
    host: &str,
    method: &str,
    path: &str,
    authorization: Option<&str>,
    body: &[u8],
    wait: Duration,
) -> Result<(u16, String), String> {
    let mut s = TcpStream::connect(host).map_err(|e| format!("connecting to {host}: {e}"))?;
    let _ = s.set_read_timeout(Some(wait));
    let auth = authorization.map_or(String::new(), |a| format!("Authorization: {a}\r\n"));
    let kind = if body.is_empty() {
        ""
    } else {
        "Content-Type: application/json\r\n"
    };
    write!(s, "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nAccept: application/json\r\n{auth}{kind}Content-Length: {}\r\n\r\n", body.len())
        .and_then(|()| s.write_all(body))
        .map_err(|e| format!("asking {host}{path}: {e}"))?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .map_err(|e| format!("reading {host}{path}: {e}"))?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("{host}{path}: not an HTTP answer"))?;
    let code = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(|| format!("{host}{path}: not an HTTP status line"))?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)?
    } else {
        body.to_owned()
    };
    Ok((code, body))
}

fn dechunk(mut body: &str) -> Result<String, String> {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n").ok_or("a truncated chunked body")?;
        let n = usize::from_str_radix(size.trim(), 16).map_err(|_| "a bad chunk size")?;
        if n == 0 {
            return Ok(out);
        }
        out.push_str(rest.get(..n).ok_or("a truncated chunk")?);
        body = rest.get(n + 2..).ok_or("a truncated chunk")?;
    }
}

#[cfg(test)]
mod tests {
    use super::{authority, dechunk};

    #[test]
    fn urls_and_chunked_bodies() {
        assert_eq!(authority("http://127.0.0.1:9464/"), Ok("127.0.0.1:9464"));
        assert!(authority("https://x").is_err());
        assert_eq!(
            dechunk("5\r\nhello\r\n1\r\n!\r\n0\r\n\r\n").as_deref(),
            Ok("hello!")
        );
        assert!(dechunk("9\r\nhi\r\n").is_err());
    }
}
