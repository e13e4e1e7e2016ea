//! Wi-Fi signal per wireless interface from `/proc/net/wireless`:
//!
//! ```text
//! Inter-| sta-|   Quality        |   Discarded packets               | Missed | WE
//!  face | tus | link level noise |  nwid  crypt   frag  retry   misc | beacon | 22
//!  wlan0: 0000   52.  -58.  -256        0      0      0      0     12        0
//! ```

use fog_proto::Wifi;

/// The level as dBm. cfg80211 drivers print it signed; older ones as an unsigned
/// byte (`198.` for -58 dBm). A received signal is never above 0 dBm, so a positive
/// value is the byte form.
fn dbm(v: f32) -> Option<i16> {
    let v = v as i32;
    let v = if v > 0 { v - 256 } else { v };
    (-255..=0).contains(&v).then_some(v as i16)
}

fn number(field: &str) -> Option<f32> {
    field
        .trim_end_matches('.')
        .parse()
        .ok()
        .filter(|v: &f32| v.is_finite())
}

/// (interface, link) for every line with a valid signal level.
pub(crate) fn parse(text: &str) -> Vec<(String, Wifi)> {
    text.lines()
        .skip(2)
        .filter_map(|line| {
            let (name, rest) = line.split_once(':')?;
            let mut f = rest.split_ascii_whitespace().skip(1); // the status word
            let quality = number(f.next()?)?;
            let signal_dbm = dbm(number(f.next()?)?)?;
            // -256 (or 0) is how drivers without a noise measurement print it.
            let noise_dbm = f
                .next()
                .and_then(number)
                .filter(|n| *n > -256.0 && *n != 0.0)
                .and_then(dbm);
            Some((
                name.trim().to_owned(),
                Wifi {
                    link_quality: quality.clamp(0.0, f32::from(u16::MAX)) as u16,
                    signal_dbm,
                    noise_dbm,
                },
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// As a Raspberry Pi 4's brcmfmac prints it, plus an old driver's byte form.
    #[test]
    fn parses_signal_and_noise() {
        let text = "Inter-| sta-|   Quality        |   Discarded packets               | Missed | WE\n face | tus | link level noise |  nwid  crypt   frag  retry   misc | beacon | 22\n wlan0: 0000   52.  -58.  -256        0      0      0      0     12        0\n wlan1: 0000   40.  198.  161.        0      0      0      0      0        0\n wlan2: 0000   0.  -256.  -256        0      0      0      0      0        0\n";
        let v = parse(text);
        assert_eq!(
            v,
            vec![
                (
                    "wlan0".to_owned(),
                    Wifi {
                        link_quality: 52,
                        signal_dbm: -58,
                        noise_dbm: None
                    }
                ),
                (
                    "wlan1".to_owned(),
                    Wifi {
                        link_quality: 40,
                        signal_dbm: -58,
                        noise_dbm: Some(-95)
                    }
                ),
            ],
            "wlan2 has no valid level"
        );
        assert!(parse("").is_empty());
        assert!(parse("h\nh\n wlan0: 0000 nan. inf. -256\n").is_empty());
    }
}
