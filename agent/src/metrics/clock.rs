//! Whether the system clock is synchronised. A board without a battery-backed clock
//! (every Raspberry Pi before the 5) boots with the time it saved at shutdown, or
//! 1970; until NTP answers, `at_ms` is wrong and readings say so.
//!
//! The kernel's own answer is `adjtimex(2)` (read-only with `modes = 0`): its
//! estimated maximum error stays below 16 s only while a time daemon keeps it
//! disciplined (systemd's `timedatectl` uses the same rule). A unit with
//! `ProtectClock=yes` may have the call denied by seccomp; then
//! `systemd-timesyncd`'s flag file `/run/systemd/timesync/synchronized` answers, and
//! if neither can, the reading says nothing (`None`) rather than guessing.

use super::ProcReader;

/// The kernel's "unsynchronised" maximum error, in microseconds (NTP_PHASE_LIMIT).
const UNSYNCED_MAXERROR_US: i64 = 16_000_000;

/// How to tell: the kernel and the flag files under the root, or (for a fixture tree,
/// which cannot fake the kernel) the files only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClockProbe {
    Kernel,
    FilesOnly,
}

/// The kernel's maximum error estimate, or `None` if the call is refused.
fn kernel_maxerror_us() -> Option<i64> {
    // SAFETY: a zeroed timex is valid, and `modes = 0` only reads the clock's state.
    let mut tx: libc::timex = unsafe { std::mem::zeroed() };
    let state = unsafe { libc::adjtimex(&mut tx) };
    (state >= 0).then_some(tx.maxerror as i64)
}

pub(crate) fn synced_from_maxerror(maxerror_us: i64) -> bool {
    maxerror_us < UNSYNCED_MAXERROR_US
}

/// timesyncd creates its directory when it runs, and the flag file once it has
/// synchronised the clock. Without the directory there is no timesyncd to ask.
pub(crate) fn synced_from_timesyncd(r: &ProcReader) -> Option<bool> {
    r.exists("run/systemd/timesync")
        .then(|| r.exists("run/systemd/timesync/synchronized"))
}

pub(crate) fn synced(probe: ClockProbe, r: &ProcReader) -> Option<bool> {
    if probe == ClockProbe::Kernel {
        if let Some(e) = kernel_maxerror_us() {
            return Some(synced_from_maxerror(e));
        }
    }
    synced_from_timesyncd(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::tests::Fixture;

    #[test]
    fn the_kernel_rule_is_timedatectls() {
        assert!(synced_from_maxerror(120_000));
        assert!(!synced_from_maxerror(16_000_000));
        assert!(!synced_from_maxerror(16_384_000));
    }

    #[test]
    fn timesyncd_files_answer_when_present() {
        let f = Fixture::new();
        assert_eq!(
            synced(ClockProbe::FilesOnly, &f.reader()),
            None,
            "no timesyncd"
        );
        f.put("run/systemd/timesync/.keep", "");
        assert_eq!(
            synced(ClockProbe::FilesOnly, &f.reader()),
            Some(false),
            "not yet"
        );
        f.put("run/systemd/timesync/synchronized", "");
        assert_eq!(synced(ClockProbe::FilesOnly, &f.reader()), Some(true));
    }

    #[test]
    fn the_live_kernel_answers() {
        // Whatever this machine's state, the call itself works outside a sandbox.
        assert!(kernel_maxerror_us().is_some());
    }
}
