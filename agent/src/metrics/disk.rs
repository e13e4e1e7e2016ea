//! Per-mount use (statvfs) and per-device I/O rates (`/proc/diskstats`).

use std::collections::HashMap;
use std::ffi::CString;
use std::time::Instant;

use fog_proto::Disk;

use super::{pct, rate, ProcReader};

/// Sector size `/proc/diskstats` counts in, whatever the device's real one.
const SECTOR_BYTES: u64 = 512;

/// A mounted block device from `/proc/self/mounts`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Mount {
    pub device: String,
    pub mount: String,
    pub fs_type: String,
}

/// Mount points are octal-escaped in /proc/mounts (`\040` for a space).
fn unescape(s: &str) -> String {
    if !s.contains('\\') {
        return s.to_owned();
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Block-device mounts, first mount of each device only, minus excluded types.
pub(crate) fn parse_mounts(text: &str, exclude_fs: &[String]) -> Vec<Mount> {
    let mut out: Vec<Mount> = Vec::new();
    for line in text.lines() {
        let mut f = line.split_ascii_whitespace();
        let (Some(dev), Some(mnt), Some(fs)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        if !dev.starts_with("/dev/") || exclude_fs.iter().any(|e| e == fs) {
            continue;
        }
        if out.iter().any(|m| m.device == dev) {
            continue; // bind mounts and btrfs subvolumes: count the device once
        }
        out.push(Mount {
            device: dev.to_owned(),
            mount: unescape(mnt),
            fs_type: fs.to_owned(),
        });
    }
    out
}

/// (read bytes, written bytes) per device name from `/proc/diskstats`.
pub(crate) fn parse_diskstats(text: &str) -> impl Iterator<Item = (&str, u64, u64)> {
    text.lines().filter_map(|line| {
        let mut f = line.split_ascii_whitespace();
        let name = f.nth(2)?;
        let sectors_read: u64 = f.nth(2)?.parse().ok()?;
        let sectors_written: u64 = f.nth(3)?.parse().ok()?;
        Some((
            name,
            sectors_read * SECTOR_BYTES,
            sectors_written * SECTOR_BYTES,
        ))
    })
}

fn statvfs(path: &str) -> Option<(u64, u64, f32)> {
    let c = CString::new(path).ok()?;
    // SAFETY: zeroed statvfs is a valid out-parameter; `c` is a NUL-terminated path.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
        return None;
    }
    let frsize = s.f_frsize as u64;
    let total = s.f_blocks as u64 * frsize;
    let avail = s.f_bavail as u64 * frsize;
    let used = (s.f_blocks as u64).saturating_sub(s.f_bfree as u64) * frsize;
    // df's figure: used over what non-root users could ever have.
    Some((total, avail, pct(used as f64, (used + avail) as f64)))
}

#[derive(Default)]
pub(crate) struct DiskTracker {
    prev: HashMap<String, (u64, u64, Instant)>,
}

impl DiskTracker {
    /// `io` is `/proc/diskstats` as (device name, read bytes, written bytes).
    pub fn sample(
        &mut self,
        r: &mut ProcReader,
        io: &[(String, u64, u64)],
        exclude_fs: &[String],
        now: Instant,
    ) -> Vec<Disk> {
        let mounts = r
            .read("proc/self/mounts")
            .map(|t| parse_mounts(t, exclude_fs))
            .unwrap_or_default();
        let mut out = Vec::with_capacity(mounts.len());
        for m in mounts {
            let Some((total, avail, used_pct)) =
                statvfs(&r.path(m.mount.trim_start_matches('/')).to_string_lossy())
            else {
                continue;
            };
            let name = m.device.rsplit('/').next().unwrap_or_default().to_owned();
            let (mut read_rate, mut write_rate) = (None, None);
            let counters = io
                .iter()
                .find(|(n, _, _)| *n == name)
                .map(|&(_, rd, wr)| (rd, wr));
            if let Some((rd, wr)) = counters {
                let prev = self.prev.get(&name).copied();
                read_rate = rate(prev.map(|(p, _, t)| (p, t)), rd, now);
                write_rate = rate(prev.map(|(_, p, t)| (p, t)), wr, now);
                self.prev.insert(name, (rd, wr, now));
            }
            out.push(Disk {
                mount: m.mount,
                device: m.device,
                fs_type: m.fs_type,
                total_bytes: total,
                available_bytes: avail,
                used_pct,
                read_bytes_per_sec: read_rate,
                write_bytes_per_sec: write_rate,
                read_bytes_total: counters.map(|(rd, _)| rd),
                write_bytes_total: counters.map(|(_, wr)| wr),
            });
        }
        if self.prev.len() > out.len() {
            self.prev
                .retain(|k, _| out.iter().any(|d| d.device.rsplit('/').next() == Some(k)));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_block_devices_once_and_unescapes() {
        let text = "proc /proc proc rw 0 0\n/dev/sda1 / ext4 rw 0 0\n/dev/sda1 /srv/bind ext4 rw 0 0\n/dev/sdb1 /mnt/my\\040disk vfat rw 0 0\n/dev/loop0 /snap/x squashfs ro 0 0\ntmpfs /tmp tmpfs rw 0 0\n";
        let m = parse_mounts(text, &["squashfs".to_owned()]);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].mount, "/");
        assert_eq!(m[1].mount, "/mnt/my disk");
    }

    #[test]
    fn parses_diskstats() {
        let text = "   8       0 sda 100 0 2000 50 40 0 800 30 0 60 80\n 179 0 mmcblk0 1 2\n";
        let v: Vec<_> = parse_diskstats(text).collect();
        assert_eq!(v, vec![("sda", 2000 * 512, 800 * 512)]);
    }

    #[test]
    fn statvfs_of_root_is_plausible() {
        let (total, avail, used) = statvfs("/").expect("root statvfs");
        assert!(total > 0 && avail <= total && (0.0..=100.0).contains(&used));
        assert!(statvfs("/definitely/not/here").is_none());
    }
}
