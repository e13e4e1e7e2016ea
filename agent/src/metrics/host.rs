//! Load averages, uptime and the agent's own footprint.

use fog_proto::Load;

use super::ProcReader;

/// Load averages; a field that is not a finite number at least 0 reads as 0 (`f32`
/// parses "nan" and "inf", which no fog message may carry).
pub(crate) fn parse_load(text: &str) -> Load {
    let mut it = text.split_ascii_whitespace().map(|v| {
        v.parse::<f32>()
            .ok()
            .filter(|x| x.is_finite() && *x >= 0.0)
            .unwrap_or(0.0)
    });
    Load {
        one: it.next().unwrap_or(0.0),
        five: it.next().unwrap_or(0.0),
        fifteen: it.next().unwrap_or(0.0),
    }
}

pub(crate) fn load(r: &mut ProcReader) -> Load {
    r.read("proc/loadavg").map(parse_load).unwrap_or_default()
}

pub(crate) fn uptime_secs(r: &mut ProcReader) -> u64 {
    r.read("proc/uptime")
        .and_then(|t| t.split_ascii_whitespace().next()?.parse::<f64>().ok())
        .map_or(0, |s| s as u64)
}

/// The agent process's resident memory and CPU time.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcessFootprint {
    pub rss_bytes: u64,
    pub cpu_secs: f64,
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions; it returns -1 for unknown names.
    let v = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if v > 0 {
        v as u64
    } else {
        4096
    }
}

fn clock_ticks() -> f64 {
    // SAFETY: as above.
    let v = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if v > 0 {
        v as f64
    } else {
        100.0
    }
}

/// utime + stime (fields 14 and 15) from `/proc/self/stat`; the command name in
/// field 2 may contain spaces and parentheses, so fields are counted after the last ')'.
pub(crate) fn parse_stat_cpu_ticks(text: &str) -> Option<u64> {
    let after = &text[text.rfind(')')? + 1..];
    let mut fields = after.split_ascii_whitespace();
    // after ')' the first field is #3 (state); utime is #14 → index 11.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

pub(crate) fn footprint(r: &mut ProcReader) -> ProcessFootprint {
    let rss_pages = r
        .read("proc/self/statm")
        .and_then(|t| t.split_ascii_whitespace().nth(1)?.parse::<u64>().ok())
        .unwrap_or(0);
    let ticks = r
        .read("proc/self/stat")
        .and_then(parse_stat_cpu_ticks)
        .unwrap_or(0);
    ProcessFootprint {
        rss_bytes: rss_pages * page_size(),
        cpu_secs: ticks as f64 / clock_ticks(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_loadavg() {
        let l = parse_load("0.50 0.25 1.00 1/123 4567\n");
        assert_eq!((l.one, l.five, l.fifteen), (0.5, 0.25, 1.0));
        assert_eq!(parse_load("").one, 0.0);
    }

    #[test]
    fn non_finite_load_averages_read_as_zero() {
        let l = parse_load("nan inf -inf 1/123 4567\n");
        assert_eq!((l.one, l.five, l.fifteen), (0.0, 0.0, 0.0));
        let l = parse_load("NaN 1e39 -1 1/1 1\n");
        assert_eq!((l.one, l.five, l.fifteen), (0.0, 0.0, 0.0));
    }

    #[test]
    fn parses_stat_with_hostile_command_names() {
        let line = "42 (a) b) (c) S 1 42 42 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 1 0 5 1000 200 0";
        assert_eq!(parse_stat_cpu_ticks(line), Some(10));
        assert_eq!(parse_stat_cpu_ticks("no paren"), None);
        assert_eq!(parse_stat_cpu_ticks("1 (x) S 1"), None);
    }
}
