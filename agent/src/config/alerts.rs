//! `[alerts]`: the thresholds of the alert engine, merged over default.toml's table.

use crate::alerts::AlertsConfig;
use fog_rt::config::invalid;

use super::ConfigError;

/// `[alerts]` has nested tables (`[alerts.cpu]`, ...), so rather than an all-`Option`
/// mirror of it, the file's table is merged key by key over the one in `default.toml`
/// (which has every key) and the result deserialized, unknown keys refused.
pub(super) fn resolve_alerts(
    raw: Option<toml::Table>,
    d: Option<toml::Table>,
    origin: &str,
) -> Result<AlertsConfig, ConfigError> {
    fn merge(base: &mut toml::Table, over: toml::Table) {
        for (k, v) in over {
            match (base.get_mut(&k), v) {
                (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
                (_, v) => {
                    base.insert(k, v);
                }
            }
        }
    }
    let mut table = d.unwrap_or_default();
    merge(&mut table, raw.unwrap_or_default());
    let alerts: AlertsConfig =
        table
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Parse {
                origin: origin.to_owned(),
                message: format!("[alerts]: {}", e.to_string().trim_end()),
            })?;
    alerts
        .validate()
        .map_err(|e| invalid(origin, e.key, e.message))?;
    Ok(alerts)
}
