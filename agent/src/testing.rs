//! Helpers for the unit tests.

/// Why these tests run under qemu-user, if they do (the ARM cross-check runs the unit
/// tests under qemu-aarch64 and qemu-arm). qemu-user silently ignores the guest's
/// setrlimit/prlimit64 of RLIMIT_AS, RLIMIT_DATA and RLIMIT_STACK (they would limit
/// the emulator itself), and emulated code runs 10 to 150 times slower.
///
/// Detected by what qemu-user does, never by what the child sees (a child that
/// sees no limit is exactly what a regression that stops setting it looks like):
/// * `FOG_UNDER_QEMU` set (not empty, not `0`): scripts/cross-check.sh exports it
///   with its qemu runner; set it too when running the tests under qemu by other
///   means (binfmt_misc, Docker `cross`).
/// * The process is the emulator: the kernel names a process after the binary it
///   executed, and with a qemu runner that is `qemu-<arch>`. qemu-user fakes
///   `/proc/self/{exe,cmdline,stat,maps,auxv}` for the guest but not
///   `/proc/self/status`, whose `Name:` is the thread group leader's (the test
///   harness names only the threads it spawns).
pub fn under_qemu_user() -> Option<String> {
    if let Some(v) = std::env::var_os("FOG_UNDER_QEMU") {
        if !v.is_empty() && v != "0" {
            return Some(format!("FOG_UNDER_QEMU={}", v.to_string_lossy()));
        }
    }
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let name = status.lines().find_map(|l| l.strip_prefix("Name:"))?.trim();
    name.starts_with("qemu-")
        .then(|| format!("this process is {name} (/proc/self/status)"))
}
