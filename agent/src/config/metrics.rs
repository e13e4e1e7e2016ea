//! `[metrics]`: what readings leave out.

use serde::Deserialize;

use super::{value, ConfigError};

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMetrics {
    pub(super) exclude_interfaces: Option<Vec<String>>,
    pub(super) exclude_fs_types: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MetricsConfig {
    pub exclude_interfaces: Vec<String>,
    pub exclude_fs_types: Vec<String>,
}

pub(super) fn resolve_metrics(
    raw: RawMetrics,
    d: RawMetrics,
    origin: &str,
) -> Result<MetricsConfig, ConfigError> {
    Ok(MetricsConfig {
        exclude_interfaces: value(
            origin,
            "metrics.exclude_interfaces",
            raw.exclude_interfaces,
            d.exclude_interfaces,
        )?,
        exclude_fs_types: value(
            origin,
            "metrics.exclude_fs_types",
            raw.exclude_fs_types,
            d.exclude_fs_types,
        )?,
    })
}
