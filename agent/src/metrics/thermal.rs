//! Temperatures from `/sys/class/thermal` (the Pi's SoC sensor) and `/sys/class/hwmon`
//! (x86 boards). Sensor files are found once at start; each reading reads only those.

use fog_proto::Temperature;

use super::ProcReader;

pub(crate) struct Sensors {
    /// (label, path relative to the root)
    files: Vec<(String, String)>,
}

impl Sensors {
    pub fn discover(r: &mut ProcReader) -> Self {
        let mut files = Vec::new();
        for zone in r
            .list("sys/class/thermal")
            .into_iter()
            .filter(|z| z.starts_with("thermal_zone"))
        {
            let kind = r
                .read(&format!("sys/class/thermal/{zone}/type"))
                .map(|t| t.trim().to_owned())
                .unwrap_or_default();
            files.push((
                format!("{zone}/{kind}"),
                format!("sys/class/thermal/{zone}/temp"),
            ));
        }
        for hw in r.list("sys/class/hwmon") {
            let base = format!("sys/class/hwmon/{hw}");
            let name = r
                .read(&format!("{base}/name"))
                .map(|t| t.trim().to_owned())
                .unwrap_or_default();
            for input in r
                .list(&base)
                .into_iter()
                .filter(|f| f.starts_with("temp") && f.ends_with("_input"))
            {
                let stem = input.trim_end_matches("_input");
                let label = r
                    .read(&format!("{base}/{stem}_label"))
                    .map(|t| t.trim().to_owned())
                    .unwrap_or_else(|| stem.to_owned());
                files.push((format!("{hw}/{name}/{label}"), format!("{base}/{input}")));
            }
        }
        Sensors { files }
    }

    pub fn read(&self, r: &mut ProcReader) -> Vec<Temperature> {
        self.files
            .iter()
            .filter_map(|(label, path)| {
                let milli: i64 = r.read(path)?.trim().parse().ok()?;
                let celsius = milli as f32 / 1000.0;
                // Disconnected sensors report nonsense like -273 °C or 127 °C+.
                (-60.0..=200.0).contains(&celsius).then(|| Temperature {
                    sensor: label.clone(),
                    celsius,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovers_thermal_zones_and_hwmon_from_a_fixture_tree() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        let w = |rel: &str, text: &str| {
            let p = root.join(rel);
            std::fs::create_dir_all(p.parent().expect("has parent")).expect("mkdir");
            std::fs::write(p, text).expect("write");
        };
        w("sys/class/thermal/thermal_zone0/type", "cpu-thermal\n");
        w("sys/class/thermal/thermal_zone0/temp", "48312\n");
        w("sys/class/thermal/cooling_device0/type", "fan\n");
        w("sys/class/hwmon/hwmon1/name", "coretemp\n");
        w("sys/class/hwmon/hwmon1/temp1_input", "51000\n");
        w("sys/class/hwmon/hwmon1/temp1_label", "Package id 0\n");
        w("sys/class/hwmon/hwmon1/temp2_input", "-273000\n");
        let mut r = ProcReader::new(root);
        let s = Sensors::discover(&mut r);
        let t = s.read(&mut r);
        assert_eq!(t.len(), 2, "{t:?}");
        assert_eq!(t[0].sensor, "thermal_zone0/cpu-thermal");
        assert!((t[0].celsius - 48.312).abs() < 1e-3);
        assert_eq!(t[1].sensor, "hwmon1/coretemp/Package id 0");
    }
}
