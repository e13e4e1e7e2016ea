//! Under-voltage and throttling on a Raspberry Pi, without `vcgencmd`: the firmware
//! driver's `get_throttled` file (the same word `vcgencmd get_throttled` prints) and
//! the `raspberrypi-hwmon` driver's `in0_lcrit_alarm`. Other boards have neither and
//! get no `power` at all.

use fog_proto::Power;

use super::ProcReader;

/// Bits of the firmware's throttled word: "now" in the low half, "since boot" in the
/// high half.
const UNDER_VOLTAGE: u32 = 1 << 0;
const FREQ_CAPPED: u32 = 1 << 1;
const THROTTLED: u32 = 1 << 2;
const SOFT_TEMP_LIMIT: u32 = 1 << 3;
const OCCURRED_SHIFT: u32 = 16;

/// The files found once at start.
pub(crate) struct PowerSources {
    throttled: Option<String>,
    under_voltage_alarm: Option<String>,
}

/// `50005`, `0x50005` or `0x0`: hex, with or without its prefix.
pub(crate) fn parse_flags(text: &str) -> Option<u32> {
    let t = text.trim();
    let digits = t
        .strip_prefix("0x")
        .or_else(|| t.strip_prefix("0X"))
        .unwrap_or(t);
    u32::from_str_radix(digits, 16).ok()
}

pub(crate) fn from_flags(flags: u32) -> Power {
    let now = |bit: u32| Some(flags & bit != 0);
    let since = |bit: u32| Some(flags & (bit << OCCURRED_SHIFT) != 0);
    Power {
        throttled_flags: Some(flags),
        under_voltage_now: now(UNDER_VOLTAGE),
        under_voltage_occurred: since(UNDER_VOLTAGE),
        freq_capped_now: now(FREQ_CAPPED),
        freq_capped_occurred: since(FREQ_CAPPED),
        throttled_now: now(THROTTLED),
        throttled_occurred: since(THROTTLED),
        soft_temp_limit_now: now(SOFT_TEMP_LIMIT),
        soft_temp_limit_occurred: since(SOFT_TEMP_LIMIT),
    }
}

impl PowerSources {
    pub fn discover(r: &mut ProcReader) -> Self {
        // `soc:firmware` sits under the SoC bus, whose name differs between boards
        // (`soc` on most, others on newer ones): look one level down.
        let throttled = r
            .list("sys/devices/platform")
            .into_iter()
            .map(|bus| format!("sys/devices/platform/{bus}/soc:firmware/get_throttled"))
            .find(|p| r.exists(p));
        let under_voltage_alarm = r
            .list("sys/class/hwmon")
            .into_iter()
            .map(|hw| format!("sys/class/hwmon/{hw}"))
            .find(|base| {
                r.read(&format!("{base}/name"))
                    .is_some_and(|n| n.trim() == "rpi_volt")
            })
            .map(|base| format!("{base}/in0_lcrit_alarm"))
            .filter(|p| r.exists(p));
        PowerSources {
            throttled,
            under_voltage_alarm,
        }
    }

    pub fn read(&self, r: &mut ProcReader) -> Option<Power> {
        if let Some(flags) = self
            .throttled
            .as_ref()
            .and_then(|p| r.read(p).and_then(parse_flags))
        {
            return Some(from_flags(flags));
        }
        // The hwmon driver polls the same word and raises this alarm on under-voltage.
        let alarm = r.read_value::<u8>(self.under_voltage_alarm.as_ref()?)?;
        Some(Power {
            under_voltage_now: Some(alarm != 0),
            ..Power::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::tests::Fixture;

    const FIRMWARE: &str = "sys/devices/platform/soc/soc:firmware/get_throttled";

    fn hwmon(f: &Fixture, alarm: &str) {
        f.put("sys/class/hwmon/hwmon0/name", "cpu_thermal\n");
        f.put("sys/class/hwmon/hwmon1/name", "rpi_volt\n");
        f.put("sys/class/hwmon/hwmon1/in0_lcrit_alarm", alarm);
    }

    #[test]
    fn decodes_the_firmware_word() {
        for (text, flags) in [("50005\n", 0x50005), ("0x50000\n", 0x50000), ("0\n", 0)] {
            assert_eq!(parse_flags(text), Some(flags), "{text:?}");
        }
        assert_eq!(parse_flags("throttled=zz"), None);
        // Under-voltage now and since boot, throttled now and since boot.
        let p = from_flags(0x50005);
        assert_eq!(p.under_voltage_now, Some(true));
        assert_eq!(p.under_voltage_occurred, Some(true));
        assert_eq!(p.freq_capped_now, Some(false));
        assert_eq!(p.throttled_now, Some(true));
        assert_eq!(p.throttled_occurred, Some(true));
        assert_eq!(p.soft_temp_limit_occurred, Some(false));
        // The soft temperature limit reached, nothing else.
        let p = from_flags(0x80008);
        assert_eq!(
            (p.soft_temp_limit_now, p.soft_temp_limit_occurred),
            (Some(true), Some(true))
        );
        assert_eq!(p.under_voltage_now, Some(false));
    }

    #[test]
    fn prefers_the_firmware_file_then_the_hwmon_alarm() {
        let f = Fixture::new();
        f.put(FIRMWARE, "50000\n");
        hwmon(&f, "1\n");
        let mut r = f.reader();
        let p = PowerSources::discover(&mut r).read(&mut r).expect("a Pi");
        assert_eq!(p.throttled_flags, Some(0x50000));
        assert_eq!(
            p.under_voltage_now,
            Some(false),
            "from the firmware, not hwmon"
        );
        assert_eq!(p.under_voltage_occurred, Some(true));

        let f = Fixture::new();
        hwmon(&f, "1\n");
        let mut r = f.reader();
        let p = PowerSources::discover(&mut r)
            .read(&mut r)
            .expect("hwmon only");
        assert_eq!(
            p,
            Power {
                under_voltage_now: Some(true),
                ..Power::default()
            }
        );
    }

    #[test]
    fn boards_without_either_source_have_no_power_reading() {
        let f = Fixture::new();
        f.put("sys/class/hwmon/hwmon0/name", "coretemp\n");
        f.put(
            "sys/devices/platform/serial8250/driver_override",
            "(null)\n",
        );
        let mut r = f.reader();
        assert_eq!(PowerSources::discover(&mut r).read(&mut r), None);
        // A firmware file that reads as garbage is absent too, not an error.
        let f = Fixture::new();
        f.put(FIRMWARE, "no\n");
        let mut r = f.reader();
        assert_eq!(PowerSources::discover(&mut r).read(&mut r), None);
    }
}
