//! Log setup shared by both binaries: a level filter from an environment variable, to
//! stderr, without timestamps under journald (it stamps every line itself).
//!
//! The filter uses tracing-subscriber's `Targets` syntax (`info`, `warn,fog_agent=debug`)
//! rather than `EnvFilter`: `EnvFilter` pulls in the regex engine, about 0.5 MiB of the
//! agent's binary and resident memory for a feature nobody uses on a node.

use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Parse a filter such as `info` or `warn,fog_agent::tasks=debug`.
pub fn parse_filter(spec: &str) -> Result<Targets, String> {
    spec.parse::<Targets>().map_err(|e| {
        format!("log filter {spec:?}: {e} (expected e.g. \"info\" or \"warn,fog_agent=debug\")")
    })
}

/// Install the global subscriber. `var` names the environment variable holding the
/// filter; a bad value is reported on stderr and `default` is used instead, so a typo
/// in a unit file never stops the program.
pub fn init(var: &str, default: &str) {
    let filter = match std::env::var(var) {
        Ok(spec) => parse_filter(&spec).unwrap_or_else(|e| {
            eprintln!("{var}: {e}; using {default:?}");
            default.parse().unwrap_or_default()
        }),
        Err(_) => default.parse().unwrap_or_default(),
    };
    let journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let registry = tracing_subscriber::registry().with(filter);
    if journald {
        registry.with(fmt.without_time().with_ansi(false)).init();
    } else {
        registry.with(fmt).init();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_parse_and_bad_ones_say_what_was_expected() {
        assert!(parse_filter("info").is_ok());
        assert!(parse_filter("warn,fog_agent::tasks=debug").is_ok());
        let e = parse_filter("fog_agent=loud").unwrap_err();
        assert!(
            e.contains("fog_agent=loud") && e.contains("expected"),
            "{e}"
        );
    }
}
