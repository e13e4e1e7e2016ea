//! Facts about the machine that both programs need.

/// The kernel's hostname, without a libc call.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}
