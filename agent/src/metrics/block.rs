//! Whole block devices: bytes read and written since boot (all partitions together,
//! what wears an SD card out) and the wear report an eMMC gives
//! (`/sys/block/*/device/life_time`, `pre_eol_info`).

use fog_proto::{BlockDevice, FlashHealth, PreEol};

use super::ProcReader;

/// Devices backed by hardware: `/sys/block/NAME/device` exists (loop, ram, zram, dm
/// and md devices have none). An eMMC's boot and RPMB areas are left out: they are
/// the same chip, and nothing writes to them.
fn hardware(r: &ProcReader) -> Vec<String> {
    r.list("sys/block")
        .into_iter()
        .filter(|n| {
            let mmc_area = n.starts_with("mmcblk") && (n.contains("boot") || n.ends_with("rpmb"));
            !mmc_area && r.exists(&format!("sys/block/{n}/device"))
        })
        .collect()
}

fn hex_u8(word: &str) -> Option<u8> {
    let w = word.trim();
    u8::from_str_radix(w.strip_prefix("0x").unwrap_or(w), 16).ok()
}

/// JEDEC life-time estimate: 0x01 is 0-10 % used, ..., 0x0A 90-100 %, 0x0B exceeded;
/// 0x00 is "not defined".
fn life_used_pct(v: u8) -> Option<u8> {
    match v {
        1..=10 => Some(v * 10),
        11 => Some(110),
        _ => None,
    }
}

pub(crate) fn parse_flash(life_time: Option<&str>, pre_eol: Option<&str>) -> Option<FlashHealth> {
    let mut life = life_time
        .unwrap_or_default()
        .split_ascii_whitespace()
        .map(|w| hex_u8(w).and_then(life_used_pct));
    let (a, b) = (life.next().flatten(), life.next().flatten());
    let pre_eol = pre_eol.and_then(hex_u8).and_then(|v| match v {
        1 => Some(PreEol::Normal),
        2 => Some(PreEol::Warning),
        3 => Some(PreEol::Urgent),
        _ => None,
    });
    (a.is_some() || b.is_some() || pre_eol.is_some()).then_some(FlashHealth {
        life_used_a_pct: a,
        life_used_b_pct: b,
        pre_eol,
    })
}

/// `io` is `/proc/diskstats` as (name, read bytes, written bytes).
pub(crate) fn read(r: &mut ProcReader, io: &[(String, u64, u64)]) -> Vec<BlockDevice> {
    hardware(r)
        .into_iter()
        .filter_map(|name| {
            let &(_, rd, wr) = io.iter().find(|(n, _, _)| *n == name)?;
            let base = format!("sys/block/{name}/device");
            let life = r.read(&format!("{base}/life_time")).map(str::to_owned);
            let pre_eol = r.read(&format!("{base}/pre_eol_info")).map(str::to_owned);
            Some(BlockDevice {
                flash: parse_flash(life.as_deref(), pre_eol.as_deref()),
                name,
                read_bytes_total: rd,
                write_bytes_total: wr,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::tests::Fixture;

    #[test]
    fn decodes_emmc_wear() {
        assert_eq!(
            parse_flash(Some("0x01 0x02\n"), Some("0x01\n")),
            Some(FlashHealth {
                life_used_a_pct: Some(10),
                life_used_b_pct: Some(20),
                pre_eol: Some(PreEol::Normal),
            })
        );
        let worn = parse_flash(Some("0x0b 0x0a\n"), Some("0x03\n")).expect("reported");
        assert_eq!(worn.life_used_a_pct, Some(110), "exceeded");
        assert_eq!(worn.life_used_b_pct, Some(100));
        assert_eq!(worn.pre_eol, Some(PreEol::Urgent));
        // "Not defined" everywhere, or garbage: no report.
        assert_eq!(parse_flash(Some("0x00 0x00\n"), Some("0x00\n")), None);
        assert_eq!(parse_flash(Some("zz"), None), None);
        assert_eq!(parse_flash(None, None), None);
    }

    /// A Pi's SD card, an eMMC (with its boot areas), a USB disk and a loop device, as
    /// sysfs lays them out.
    #[test]
    fn lists_hardware_devices_with_totals_and_wear() {
        let f = Fixture::new();
        f.put("sys/block/mmcblk0/device/type", "SD\n");
        f.put("sys/block/mmcblk1/device/life_time", "0x02 0x01\n");
        f.put("sys/block/mmcblk1/device/pre_eol_info", "0x02\n");
        f.put("sys/block/mmcblk1boot0/device/type", "MMC\n");
        f.put("sys/block/mmcblk1rpmb/device/type", "MMC\n");
        f.put("sys/block/sda/device/model", "USB disk\n");
        f.put("sys/block/loop0/loop/backing_file", "/x.img\n");
        let io = vec![
            ("mmcblk0".to_owned(), 100, 200),
            ("mmcblk0p2".to_owned(), 90, 190),
            ("mmcblk1".to_owned(), 1, 2),
            ("mmcblk1boot0".to_owned(), 0, 0),
            ("loop0".to_owned(), 5, 0),
        ];
        let mut r = f.reader();
        let got = read(&mut r, &io);
        let names: Vec<_> = got.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(
            names,
            ["mmcblk0", "mmcblk1"],
            "sda has no diskstats line: skipped"
        );
        assert_eq!(
            (got[0].read_bytes_total, got[0].write_bytes_total),
            (100, 200)
        );
        assert_eq!(got[0].flash, None, "an SD card reports no wear");
        let wear = got[1].flash.clone().expect("eMMC wear");
        assert_eq!(wear.life_used_a_pct, Some(20));
        assert_eq!(wear.pre_eol, Some(PreEol::Warning));
    }
}
