//! Per-interface rates and counters from `/proc/net/dev`, and the signal of wireless
//! ones from `/proc/net/wireless`.

use std::collections::HashMap;
use std::time::Instant;

use fog_proto::Network;

use super::{rate, wireless, ProcReader};

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Counters {
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub rx_errors: u64,
    pub rx_dropped: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
    pub tx_errors: u64,
    pub tx_dropped: u64,
}

/// Parse one data line: `  eth0: rx_bytes rx_packets errs drop fifo frame compressed
/// multicast tx_bytes tx_packets errs drop ...`.
pub(crate) fn parse_line(line: &str) -> Option<(&str, Counters)> {
    let (name, rest) = line.split_once(':')?;
    let mut v = [0u64; 12];
    let mut it = rest.split_ascii_whitespace();
    for slot in v.iter_mut() {
        *slot = it.next()?.parse().ok()?;
    }
    Some((
        name.trim(),
        Counters {
            rx_bytes: v[0],
            rx_packets: v[1],
            rx_errors: v[2],
            rx_dropped: v[3],
            tx_bytes: v[8],
            tx_packets: v[9],
            tx_errors: v[10],
            tx_dropped: v[11],
        },
    ))
}

#[derive(Default)]
pub(crate) struct NetworkTracker {
    prev: HashMap<String, (Counters, Instant)>,
}

impl NetworkTracker {
    pub fn sample(&mut self, r: &mut ProcReader, exclude: &[String], now: Instant) -> Vec<Network> {
        // Parsed into owned values first: the reader has one buffer.
        let wifi = r
            .read("proc/net/wireless")
            .map(wireless::parse)
            .unwrap_or_default();
        let Some(text) = r.read("proc/net/dev") else {
            return Vec::new();
        };
        let mut out = Vec::new();
        // The first two lines are headers.
        for (name, c) in text.lines().skip(2).filter_map(parse_line) {
            if exclude.iter().any(|e| e == name) {
                continue;
            }
            let prev = self.prev.get(name).copied();
            let r = |f: fn(&Counters) -> u64| rate(prev.map(|(p, t)| (f(&p), t)), f(&c), now);
            out.push(Network {
                interface: name.to_owned(),
                rx_bytes_per_sec: r(|c| c.rx_bytes),
                tx_bytes_per_sec: r(|c| c.tx_bytes),
                rx_packets_per_sec: r(|c| c.rx_packets),
                tx_packets_per_sec: r(|c| c.tx_packets),
                rx_errors_total: c.rx_errors,
                tx_errors_total: c.tx_errors,
                rx_dropped_total: c.rx_dropped,
                tx_dropped_total: c.tx_dropped,
                rx_bytes_total: c.rx_bytes,
                tx_bytes_total: c.tx_bytes,
                rx_packets_total: c.rx_packets,
                tx_packets_total: c.tx_packets,
                wifi: wifi.iter().find(|(n, _)| n == name).map(|(_, w)| w.clone()),
            });
            match self.prev.get_mut(name) {
                Some(slot) => *slot = (c, now),
                None => {
                    self.prev.insert(name.to_owned(), (c, now));
                }
            }
        }
        // Forget interfaces that went away, so the map stays bounded by what exists.
        if self.prev.len() > out.len() {
            self.prev
                .retain(|k, _| out.iter().any(|n| &n.interface == k));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_net_dev_lines() {
        let (name, c) =
            parse_line("  eth0: 1000 10 1 2 0 0 0 0  500 5 3 4 0 0 0 0").expect("parses");
        assert_eq!(name, "eth0");
        assert_eq!(
            (c.rx_bytes, c.rx_packets, c.rx_errors, c.rx_dropped),
            (1000, 10, 1, 2)
        );
        assert_eq!(
            (c.tx_bytes, c.tx_packets, c.tx_errors, c.tx_dropped),
            (500, 5, 3, 4)
        );
        assert!(parse_line("Inter-|   Receive").is_none());
        assert!(parse_line("eth0: 1 2 3").is_none());
    }
}
