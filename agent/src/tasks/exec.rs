//! Running a configured command for a task, safely.
//!
//! * Never a shell: the program and its argv come from the node's config only. The
//!   payload goes to stdin and nowhere else.
//! * A clean environment (only what the config sets) and a fixed working directory.
//! * Its own process group, with rlimits set between fork and exec: address space,
//!   CPU seconds, open files, no core dumps.
//! * A timeout (or a cancellation, e.g. shutdown) kills the whole group, so a child
//!   that forked a grandchild leaves nothing behind; the group is also killed after a
//!   normal exit, for the same reason.
//! * stdout is written into the caller's buffer (an arena block) up to its capacity;
//!   the rest is read and discarded and the result says it was cut. The last 2 KiB of
//!   stderr are kept for the error message.
//! * Exit status, wall time, CPU time and peak RSS come from `wait4`.

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Bytes of stderr kept for the error message.
pub const STDERR_TAIL_BYTES: usize = 2048;

// Declared in config (the `[tasks.<kind>]` tables); re-exported here, its old home.
pub use crate::config::CommandSpec;

/// How the process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
    TimedOut,
    Cancelled,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ExecOutcome {
    pub exit: Exit,
    /// Bytes of stdout written to the output buffer.
    pub stdout_len: usize,
    /// stdout was longer than the buffer and was cut.
    pub truncated: bool,
    pub stderr_tail: String,
    pub wall: Duration,
    pub cpu: Duration,
    pub peak_rss_bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("starting {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("waiting for {program}: {source}")]
    Wait {
        program: String,
        source: std::io::Error,
    },
}

/// setrlimit's resource argument: glibc declares its own enum type, musl a plain int.
#[cfg(target_env = "gnu")]
type Resource = libc::__rlimit_resource_t;
#[cfg(not(target_env = "gnu"))]
type Resource = libc::c_int;

fn set_limit(resource: Resource, soft: u64, hard: u64) -> std::io::Result<()> {
    let lim = libc::rlimit {
        rlim_cur: soft as libc::rlim_t,
        rlim_max: hard as libc::rlim_t,
    };
    // SAFETY: plain syscall on a valid struct; async-signal-safe.
    if unsafe { libc::setrlimit(resource, &lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn kill_group(pgid: i32) {
    // SAFETY: signalling our own child's process group; ESRCH (already gone) is fine.
    unsafe {
        libc::killpg(pgid, libc::SIGKILL);
    }
}

/// The process for `spec`: argv, a clean environment, the working directory, piped
/// stdio, and (between fork and exec) its own process group and the rlimits.
fn command(spec: &CommandSpec) -> Command {
    let mut cmd = Command::new(&spec.program);
    cmd.args(&spec.args)
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&spec.working_dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let (mem, cpu, nofile) = (
        spec.memory_limit_bytes,
        spec.cpu_limit_secs,
        spec.max_open_files,
    );
    // SAFETY: the closure runs between fork and exec and calls only async-signal-safe
    // functions (setpgid, setrlimit), allocating nothing.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setpgid(0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if let Some(m) = mem {
                set_limit(libc::RLIMIT_AS, m, m)?;
            }
            if let Some(c) = cpu {
                // SIGXCPU at the soft limit, SIGKILL one second later.
                set_limit(libc::RLIMIT_CPU, c, c + 1)?;
            }
            set_limit(libc::RLIMIT_NOFILE, nofile, nofile)?;
            set_limit(libc::RLIMIT_CORE, 0, 0)?;
            Ok(())
        });
    }
    cmd
}

/// Read stdout into `buf` up to its size; read and discard the rest, saying so.
fn read_capped(child_out: &mut impl Read, buf: &mut [u8]) -> (usize, bool) {
    let mut n = 0;
    let mut truncated = false;
    loop {
        if n < buf.len() {
            match child_out.read(&mut buf[n..]) {
                Ok(0) | Err(_) => break,
                Ok(k) => n += k,
            }
        } else {
            let mut sink = [0u8; 4096];
            match child_out.read(&mut sink) {
                Ok(0) | Err(_) => break,
                Ok(_) => truncated = true,
            }
        }
    }
    (n, truncated)
}

/// The last [`STDERR_TAIL_BYTES`] of stderr, as text.
fn stderr_tail(child_err: &mut impl Read) -> String {
    let mut tail = [0u8; STDERR_TAIL_BYTES];
    let mut len = 0usize;
    let mut chunk = [0u8; 1024];
    loop {
        match child_err.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(k) => {
                let k = k.min(STDERR_TAIL_BYTES);
                if len + k > STDERR_TAIL_BYTES {
                    let drop = len + k - STDERR_TAIL_BYTES;
                    tail.copy_within(drop..len, 0);
                    len -= drop;
                }
                tail[len..len + k].copy_from_slice(&chunk[..k]);
                len += k;
            }
        }
    }
    String::from_utf8_lossy(&tail[..len]).trim_end().to_owned()
}

/// What `wait4` said: its return, the status, the child's usage, and errno.
type Waited = (i32, i32, libc::rusage, std::io::Error);

/// Reap the child `pid` (blocking), with its resource usage.
fn wait_for(pid: i32) -> Waited {
    let mut status = 0;
    // SAFETY: zeroed rusage is a valid out-parameter.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let r = loop {
        // SAFETY: waiting for our own child with valid out-pointers.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if r == -1 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
            continue;
        }
        break r;
    };
    (r, status, usage, std::io::Error::last_os_error())
}

/// Wait for the waiter's answer, killing the group once at the deadline or on
/// `cancel`; the answer, and what ended the process if we did.
fn watch(
    rx: &mpsc::Receiver<Waited>,
    deadline: Instant,
    cancel: &AtomicBool,
    pid: i32,
) -> (Waited, Option<Exit>) {
    let mut ended_by: Option<Exit> = None;
    let waited = loop {
        let now = Instant::now();
        let slice = deadline
            .saturating_duration_since(now)
            .min(Duration::from_millis(20));
        match rx.recv_timeout(slice) {
            Ok(w) => break w,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if ended_by.is_none() && cancel.load(Ordering::Relaxed) {
                    ended_by = Some(Exit::Cancelled);
                    kill_group(pid);
                } else if ended_by.is_none() && Instant::now() >= deadline {
                    ended_by = Some(Exit::TimedOut);
                    kill_group(pid);
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                unreachable!("the waiter always sends")
            }
        }
    };
    (waited, ended_by)
}

/// Run `spec` with `stdin` as input, writing stdout into `stdout_buf`. Blocks the
/// calling thread (run it on a worker, never on the async reactor). `cancel` is
/// polled; setting it kills the process group.
pub fn run(
    spec: &CommandSpec,
    stdin: &[u8],
    stdout_buf: &mut [u8],
    cancel: &AtomicBool,
) -> Result<ExecOutcome, ExecError> {
    let program = spec.program.display().to_string();
    let mut cmd = command(spec);
    let started = Instant::now();
    let mut child = cmd.spawn().map_err(|source| ExecError::Spawn {
        program: program.clone(),
        source,
    })?;
    let pid = child.id() as i32;
    let mut child_in = child.stdin.take().expect("stdin was piped");
    let mut child_out = child.stdout.take().expect("stdout was piped");
    let mut child_err = child.stderr.take().expect("stderr was piped");

    std::thread::scope(|s| {
        // stdin: write the payload, then close so the program sees EOF. A program
        // that exits without reading gives EPIPE, which is not an error of ours.
        s.spawn(move || {
            let _ = child_in.write_all(stdin);
        });
        let out = s.spawn(move || read_capped(&mut child_out, stdout_buf));
        let err = s.spawn(move || stderr_tail(&mut child_err));

        let (tx, rx) = mpsc::channel();
        s.spawn(move || {
            let _ = tx.send(wait_for(pid));
        });

        let (waited, ended_by) = watch(&rx, started + spec.timeout, cancel, pid);
        let wall = started.elapsed();
        // Whatever the leader did, leave no descendants behind (they would also hold
        // the pipes open and keep the readers waiting).
        kill_group(pid);
        let (r, status, usage, wait_err) = waited;
        let (stdout_len, truncated) = out.join().expect("stdout reader does not panic");
        let stderr_tail = err.join().expect("stderr reader does not panic");
        if r == -1 {
            return Err(ExecError::Wait {
                program,
                source: wait_err,
            });
        }
        let exit = ended_by.unwrap_or(if libc::WIFEXITED(status) {
            Exit::Code(libc::WEXITSTATUS(status))
        } else {
            Exit::Signal(libc::WTERMSIG(status))
        });
        let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
        Ok(ExecOutcome {
            exit,
            stdout_len,
            truncated,
            stderr_tail,
            wall,
            cpu: tv(usage.ru_utime) + tv(usage.ru_stime),
            // ru_maxrss is in KiB on Linux.
            peak_rss_bytes: usage.ru_maxrss as u64 * 1024,
        })
    })
}

/// Name a signal for messages.
pub fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGKILL => "SIGKILL",
        libc::SIGTERM => "SIGTERM",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGABRT => "SIGABRT",
        libc::SIGXCPU => "SIGXCPU (cpu limit)",
        libc::SIGBUS => "SIGBUS",
        libc::SIGPIPE => "SIGPIPE",
        _ => "signal",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(program: &str, args: &[&str]) -> CommandSpec {
        CommandSpec {
            program: program.into(),
            args: args.iter().map(|s| (*s).to_owned()).collect(),
            env: vec![("PATH".into(), "/usr/bin:/bin".into())],
            working_dir: "/".into(),
            timeout: Duration::from_secs(10),
            memory_limit_bytes: None,
            cpu_limit_secs: None,
            max_open_files: 64,
            max_output_bytes: 4096,
        }
    }

    fn go(s: &CommandSpec, input: &[u8], cap: usize) -> (ExecOutcome, Vec<u8>) {
        let mut buf = vec![0u8; cap];
        let o = run(s, input, &mut buf, &AtomicBool::new(false)).expect("runs");
        buf.truncate(o.stdout_len);
        (o, buf)
    }

    #[test]
    fn payload_goes_to_stdin_and_never_to_a_shell() {
        let hostile = b"$(touch /tmp/fog-pwned); `id`; rm -rf / ; echo hi | cat && exit 3 \x00\xff";
        let (o, out) = go(&spec("/bin/cat", &[]), hostile, 4096);
        assert_eq!(o.exit, Exit::Code(0));
        assert_eq!(
            out, hostile,
            "cat echoed the payload byte for byte: nothing was interpreted"
        );
        assert!(!std::path::Path::new("/tmp/fog-pwned").exists());
    }

    #[test]
    fn output_is_capped_and_marked() {
        let big = vec![b'x'; 100_000];
        let (o, out) = go(&spec("/bin/cat", &[]), &big, 1000);
        assert_eq!((o.stdout_len, o.truncated), (1000, true));
        assert_eq!(out.len(), 1000);
    }

    #[test]
    fn huge_input_to_a_program_that_ignores_it_does_not_hang() {
        let big = vec![b'y'; 8 << 20];
        let (o, _) = go(&spec("/bin/true", &[]), &big, 16);
        assert_eq!(o.exit, Exit::Code(0));
    }

    #[test]
    fn exit_codes_and_stderr_tail() {
        let (o, _) = go(&spec("/bin/sh", &["-c", "echo oops >&2; exit 3"]), b"", 16);
        assert_eq!(o.exit, Exit::Code(3));
        assert_eq!(o.stderr_tail, "oops");
        let long = "seq 1 5000 >&2; exit 1";
        let (o, _) = go(&spec("/bin/sh", &["-c", long]), b"", 16);
        assert!(o.stderr_tail.len() <= STDERR_TAIL_BYTES);
        assert!(
            o.stderr_tail.ends_with("5000"),
            "{}",
            &o.stderr_tail[o.stderr_tail.len() - 20..]
        );
    }

    #[test]
    fn environment_is_only_what_the_config_sets() {
        std::env::set_var("FOG_SECRET_FROM_PARENT", "leak");
        let mut s = spec("/usr/bin/env", &[]);
        s.env.push(("ONLY".into(), "this".into()));
        let (_, out) = go(&s, b"", 4096);
        let text = String::from_utf8_lossy(&out);
        assert!(text.contains("ONLY=this"));
        assert!(!text.contains("FOG_SECRET_FROM_PARENT"), "{text}");
    }

    #[test]
    fn timeout_kills_the_whole_process_group() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pidfile = dir.path().join("grandchild.pid");
        // The child forks a grandchild that would outlive it, records its pid, and waits.
        let script = format!("sleep 30 & echo $! > {}; wait", pidfile.display());
        let mut s = spec("/bin/sh", &["-c", &script]);
        s.timeout = Duration::from_millis(300);
        let called = Instant::now();
        let (o, _) = go(&s, b"", 16);
        let returned = called.elapsed();
        assert_eq!(o.exit, Exit::TimedOut);
        // The design: `run` polls every 20 ms and SIGKILLs the group as soon as the
        // deadline has passed (no SIGTERM first, so no grace period), and SIGKILL ends
        // the leader at once. So the wall time is the timeout plus at most one poll
        // slice plus the reaping; 1 s of slack is for scheduling on a loaded 2-core CI
        // box (or qemu-user), far less than any real regression: a missed kill waits
        // for `sleep 30`.
        const SLACK: Duration = Duration::from_secs(1);
        assert!(
            o.wall >= s.timeout,
            "ended before its timeout: {:?}",
            o.wall
        );
        assert!(o.wall < s.timeout + SLACK, "killed late: {:?}", o.wall);
        // And the call returns as promptly: nothing left in the group holds the
        // pipes open (the grandchild has the stdout and stderr of the shell).
        assert!(returned < s.timeout + SLACK, "returned after {returned:?}");
        let gc: i32 = std::fs::read_to_string(&pidfile)
            .expect("pid written")
            .trim()
            .parse()
            .expect("pid");
        // Give the kernel a moment to reap it (it is reparented to init).
        std::thread::sleep(Duration::from_millis(100));
        // SAFETY: probing a pid with signal 0.
        let alive = unsafe { libc::kill(gc, 0) } == 0 && !is_zombie(gc);
        assert!(!alive, "grandchild {gc} survived the timeout");
    }

    fn is_zombie(pid: i32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| {
                s.rsplit(')')
                    .next()
                    .is_some_and(|r| r.trim_start().starts_with('Z'))
            })
            .unwrap_or(true)
    }

    #[test]
    fn cancellation_kills_it() {
        let s = spec("/bin/sleep", &["30"]);
        let cancel = AtomicBool::new(true);
        let mut buf = [0u8; 8];
        let o = run(&s, b"", &mut buf, &cancel).expect("runs");
        assert_eq!(o.exit, Exit::Cancelled);
    }

    #[test]
    fn cpu_limit_breach_is_reported() {
        let mut s = spec("/bin/sh", &["-c", "while :; do :; done"]);
        s.cpu_limit_secs = Some(1);
        let (o, _) = go(&s, b"", 16);
        assert!(
            matches!(o.exit, Exit::Signal(sig) if sig == libc::SIGXCPU || sig == libc::SIGKILL),
            "{:?}",
            o.exit
        );
        // The kernel kills at the limit; rusage may account a little under it.
        assert!(o.cpu >= Duration::from_millis(500), "{:?}", o.cpu);
    }

    #[test]
    fn memory_limit_breach_is_a_failure() {
        if let Some(why) = crate::testing::under_qemu_user() {
            eprintln!(
                "skipped: running under qemu-user ({why}), which ignores RLIMIT_AS from \
                 the guest, so no child can see the limit"
            );
            return;
        }
        let mut probe = spec("/bin/sh", &["-c", "ulimit -v"]);
        probe.memory_limit_bytes = Some(64 << 20);
        let (o, seen) = go(&probe, b"", 64);
        assert_eq!(o.exit, Exit::Code(0), "{}", o.stderr_tail);
        assert_eq!(
            String::from_utf8_lossy(&seen).trim(),
            "65536",
            "the child sees the limit in KiB"
        );
        let python = spec(
            "/usr/bin/python3",
            &["-c", "x = bytearray(512 * 1024 * 1024)"],
        );
        let with_python = python.program.exists();
        let mut s = if with_python {
            python
        } else {
            spec(
                "/bin/sh",
                &[
                    "-c",
                    "x=$(head -c 300000000 /dev/zero | tr '\\0' a); echo ${#x}",
                ],
            )
        };
        s.memory_limit_bytes = Some(64 << 20);
        let (o, _) = go(&s, b"", 64);
        assert!(
            matches!(o.exit, Exit::Code(c) if c != 0) || matches!(o.exit, Exit::Signal(_)),
            "allocation beyond RLIMIT_AS must fail: {:?}",
            o.exit
        );
        if with_python {
            // Failed for the allocation, not for something else (python not starting).
            assert!(o.stderr_tail.contains("MemoryError"), "{}", o.stderr_tail);
        }
    }

    #[test]
    fn missing_program_is_a_clear_error() {
        let s = spec("/nonexistent/fog-tool", &[]);
        let mut buf = [0u8; 8];
        let e = run(&s, b"", &mut buf, &AtomicBool::new(false)).expect_err("refused");
        assert!(e.to_string().contains("/nonexistent/fog-tool"), "{e}");
    }

    #[test]
    fn rusage_is_reported() {
        let (o, _) = go(
            &spec(
                "/bin/sh",
                &["-c", "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done"],
            ),
            b"",
            16,
        );
        assert_eq!(o.exit, Exit::Code(0));
        assert!(o.peak_rss_bytes > 0);
        assert!(o.cpu > Duration::ZERO);
        assert!(o.wall >= o.cpu / 2);
    }
}
