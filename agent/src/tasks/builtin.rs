//! Built-in kinds: `echo`, `sha256`, `sleep`. They run on worker threads, never on the
//! async reactor.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::arena::{Arena, Block};
use super::job::JobOutcome;

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Lowercase hex SHA-256 of `payload`, written into an arena block.
pub fn sha256(arena: &Arc<Arena>, payload: &[u8], started: Instant) -> JobOutcome {
    // ring's SHA-256 (SHA instructions where the CPU has them), already linked for
    // the seals: one SHA-256 implementation in the binary, not two.
    let digest = ring::digest::digest(&ring::digest::SHA256, payload);
    let mut out = match arena.alloc(64) {
        Ok(b) => b,
        Err(e) => {
            return JobOutcome::Failed {
                error: format!("busy: {e}"),
                retryable: true,
                exit_code: None,
                duration: started.elapsed(),
            }
        }
    };
    for (i, byte) in digest.as_ref().iter().enumerate() {
        let s = out.as_mut_slice();
        s[2 * i] = HEX[(byte >> 4) as usize];
        s[2 * i + 1] = HEX[(byte & 0xf) as usize];
    }
    completed(out, started)
}

/// `echo`: the payload block itself is the output (no copy).
pub fn echo(payload: Block, started: Instant) -> JobOutcome {
    completed(payload, started)
}

/// `sleep`: the payload is a number of milliseconds (ASCII). Wakes early on cancel.
pub fn sleep(
    payload: Block,
    timeout: Duration,
    cancel: &AtomicBool,
    started: Instant,
) -> JobOutcome {
    let text = std::str::from_utf8(payload.as_slice()).unwrap_or("").trim();
    let Ok(ms) = text.parse::<u64>() else {
        return JobOutcome::Failed {
            error: format!(
                "sleep expects a number of milliseconds, got {:?}",
                text.chars().take(32).collect::<String>()
            ),
            retryable: false,
            exit_code: None,
            duration: started.elapsed(),
        };
    };
    let want = Duration::from_millis(ms);
    let until = started + want.min(timeout);
    while Instant::now() < until {
        if cancel.load(Ordering::Relaxed) {
            return JobOutcome::Failed {
                error: "cancelled: the agent is shutting down".into(),
                retryable: true,
                exit_code: None,
                duration: started.elapsed(),
            };
        }
        std::thread::sleep(
            until
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(20)),
        );
    }
    if want > timeout {
        return JobOutcome::TimedOut { after: timeout };
    }
    let mut payload = payload;
    payload.set_len(0);
    completed(payload, started)
}

fn completed(output: Block, started: Instant) -> JobOutcome {
    JobOutcome::Completed {
        output,
        truncated: false,
        exit_code: None,
        duration: started.elapsed(),
        cpu: Duration::ZERO,
        peak_rss_bytes: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(arena: &Arc<Arena>, bytes: &[u8]) -> Block {
        let mut b = arena.alloc(bytes.len()).expect("fits");
        b.as_mut_slice().copy_from_slice(bytes);
        b
    }

    #[test]
    fn sha256_matches_a_known_vector() {
        let arena = Arena::new(1 << 16);
        match sha256(&arena, b"abc", Instant::now()) {
            JobOutcome::Completed { output, .. } => assert_eq!(
                output.as_slice(),
                b"ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn echo_returns_the_payload() {
        let arena = Arena::new(1 << 16);
        match echo(block(&arena, b"hi \x00 there"), Instant::now()) {
            JobOutcome::Completed { output, .. } => assert_eq!(output.as_slice(), b"hi \x00 there"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn sleep_parses_times_out_and_cancels() {
        let arena = Arena::new(1 << 16);
        let no = AtomicBool::new(false);
        assert!(matches!(
            sleep(
                block(&arena, b"5"),
                Duration::from_secs(1),
                &no,
                Instant::now()
            ),
            JobOutcome::Completed { .. }
        ));
        assert!(matches!(
            sleep(
                block(&arena, b"500"),
                Duration::from_millis(30),
                &no,
                Instant::now()
            ),
            JobOutcome::TimedOut { .. }
        ));
        assert!(matches!(
            sleep(
                block(&arena, b"soon"),
                Duration::from_secs(1),
                &no,
                Instant::now()
            ),
            JobOutcome::Failed {
                retryable: false,
                ..
            }
        ));
        let yes = AtomicBool::new(true);
        assert!(matches!(
            sleep(
                block(&arena, b"10000"),
                Duration::from_secs(20),
                &yes,
                Instant::now()
            ),
            JobOutcome::Failed {
                retryable: true,
                ..
            }
        ));
    }
}
