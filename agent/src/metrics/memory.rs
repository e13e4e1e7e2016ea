//! Memory and swap from `/proc/meminfo`.

use fog_proto::Memory;

use super::{pct, ProcReader};

pub(crate) fn parse(text: &str) -> Memory {
    let (mut total, mut avail, mut free, mut buffers, mut cached) = (0u64, None, 0u64, 0u64, 0u64);
    let (mut swap_total, mut swap_free) = (0u64, 0u64);
    for line in text.lines() {
        let Some((key, rest)) = line.split_once(':') else {
            continue;
        };
        let kib = || -> u64 {
            rest.split_ascii_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
                .saturating_mul(1024)
        };
        match key {
            "MemTotal" => total = kib(),
            "MemAvailable" => avail = Some(kib()),
            "MemFree" => free = kib(),
            "Buffers" => buffers = kib(),
            "Cached" => cached = kib(),
            "SwapTotal" => swap_total = kib(),
            "SwapFree" => swap_free = kib(),
            _ => {}
        }
    }
    // Kernels before 3.14 have no MemAvailable; approximate as free + buffers + cache.
    let available = avail.unwrap_or(free + buffers + cached).min(total);
    Memory {
        total_bytes: total,
        available_bytes: available,
        used_pct: pct((total - available) as f64, total as f64),
        swap_total_bytes: swap_total,
        swap_used_bytes: swap_total.saturating_sub(swap_free),
    }
}

pub(crate) fn read(r: &mut ProcReader) -> Memory {
    r.read("proc/meminfo").map(parse).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_meminfo() {
        let m = parse("MemTotal:  1000 kB\nMemFree: 100 kB\nMemAvailable:   250 kB\nSwapTotal: 400 kB\nSwapFree: 300 kB\n");
        assert_eq!(m.total_bytes, 1000 * 1024);
        assert_eq!(m.available_bytes, 250 * 1024);
        assert_eq!(m.used_pct, 75.0);
        assert_eq!(m.swap_used_bytes, 100 * 1024);
    }

    #[test]
    fn old_kernels_and_garbage() {
        let m = parse("MemTotal: 1000 kB\nMemFree: 100 kB\nBuffers: 100 kB\nCached: 300 kB\n");
        assert_eq!(m.available_bytes, 500 * 1024);
        let g = parse("nonsense\n:::\nMemTotal: lots kB\n");
        assert_eq!(g.total_bytes, 0);
        assert_eq!(g.used_pct, 0.0);
    }
}
