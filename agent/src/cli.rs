//! The agent's command line, parsed by hand.
//!
//! Four subcommands and two flags do not justify clap on a 512 MB board: clap and its
//! derive code were about 250 KiB of the binary, and every page of text the agent
//! touches is resident memory (see docs/performance.md, footprint).

use std::ffi::OsString;
use std::path::PathBuf;

pub const DEFAULT_CONFIG_PATH: &str = "/etc/fog/agent.toml";

pub const USAGE: &str = "\
fog-agent: fog node agent: readings, liveness and tasks over MQTT

Usage: fog-agent <COMMAND>

Commands:
  run [-c PATH]                    Run the agent until SIGTERM or SIGINT
  check-config [-c PATH]           Validate a config file and exit (0 valid, 78 invalid)
  print-default-config             Print the default config with every key documented
  metrics [--once] [-c PATH]       Collect readings and print them as JSON
                                   (--once: print one reading, with rates, and exit)
  trust add LINE [-c PATH]         Trust a coordinator key (the line that
                                   `fog-coordinator keys show` prints)
  trust list [-c PATH]             List the trusted coordinator keys
  trust remove ID [-c PATH]        Stop trusting a key (its id or a prefix of it)
  help                             Print this help

Options:
  -c, --config PATH   Config file [default: /etc/fog/agent.toml; metrics: built-in defaults]
  -h, --help          Print help
  -V, --version       Print version

Environment: FOG_AGENT_LOG sets the log filter (e.g. \"info\", \"warn,fog_agent=debug\");
FOG_AGENT_* overrides config keys (see docs/configuration.md).
";

/// What the user asked for.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    Run {
        config: PathBuf,
    },
    CheckConfig {
        config: PathBuf,
    },
    PrintDefaultConfig,
    Metrics {
        once: bool,
        config: Option<PathBuf>,
    },
    Trust {
        action: TrustAction,
        config: PathBuf,
    },
    Help,
    Version,
}

/// What `fog-agent trust` does.
#[derive(Debug, PartialEq, Eq)]
pub enum TrustAction {
    Add(String),
    List,
    Remove(String),
}

/// A usage mistake, with the message to print (exit code 2, as clap and getopt do).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}\n\nRun 'fog-agent --help' for usage.")]
pub struct UsageError(pub String);

/// Parse the arguments after the program name.
pub fn parse<I: IntoIterator<Item = OsString>>(args: I) -> Result<Command, UsageError> {
    let mut args = args.into_iter();
    let Some(first) = args.next() else {
        return Err(UsageError("a command is required".into()));
    };
    let first = first.to_string_lossy().into_owned();
    let mut config: Option<PathBuf> = None;
    let mut once = false;
    let command = match first.as_str() {
        "-h" | "--help" | "help" => return Ok(Command::Help),
        "-V" | "--version" => return Ok(Command::Version),
        "run" | "check-config" | "print-default-config" | "metrics" => first,
        "trust" => return parse_trust(args),
        other => return Err(UsageError(format!("unknown command '{other}'"))),
    };
    while let Some(arg) = args.next() {
        let text = arg.to_string_lossy();
        match text.as_ref() {
            "-h" | "--help" => return Ok(Command::Help),
            "-c" | "--config" if command != "print-default-config" => {
                let Some(path) = args.next() else {
                    return Err(UsageError(format!("'{text}' needs a path")));
                };
                if config.replace(PathBuf::from(path)).is_some() {
                    return Err(UsageError("'--config' given twice".into()));
                }
            }
            "--once" if command == "metrics" => once = true,
            s if s.starts_with("--config=") && command != "print-default-config" => {
                let path = arg
                    .to_str()
                    .map(|s| PathBuf::from(&s["--config=".len()..]))
                    .ok_or_else(|| {
                        UsageError("'--config=' path is not UTF-8; use '--config PATH'".into())
                    })?;
                if config.replace(path).is_some() {
                    return Err(UsageError("'--config' given twice".into()));
                }
            }
            other => {
                return Err(UsageError(format!(
                    "unexpected argument '{other}' for '{command}'"
                )))
            }
        }
    }
    let or_default = |c: Option<PathBuf>| c.unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_PATH));
    Ok(match command.as_str() {
        "run" => Command::Run {
            config: or_default(config),
        },
        "check-config" => Command::CheckConfig {
            config: or_default(config),
        },
        "metrics" => Command::Metrics { once, config },
        _ => Command::PrintDefaultConfig,
    })
}

/// `trust add LINE | list | remove ID`, each with an optional `-c PATH`.
fn parse_trust(args: impl Iterator<Item = OsString>) -> Result<Command, UsageError> {
    let args: Vec<String> = args.map(|a| a.to_string_lossy().into_owned()).collect();
    let mut config = None;
    let mut rest = Vec::new();
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "-c" | "--config" => {
                let path = it
                    .next()
                    .ok_or_else(|| UsageError(format!("'{a}' needs a path")))?;
                if config.replace(PathBuf::from(path)).is_some() {
                    return Err(UsageError("'--config' given twice".into()));
                }
            }
            s if s.starts_with("--config=") => {
                if config
                    .replace(PathBuf::from(&s["--config=".len()..]))
                    .is_some()
                {
                    return Err(UsageError("'--config' given twice".into()));
                }
            }
            _ => rest.push(a),
        }
    }
    let action = match rest
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["add", line] => TrustAction::Add((*line).to_owned()),
        // A key line pasted without quotes arrives as two or three words.
        ["add", words @ ..] if !words.is_empty() => TrustAction::Add(words.join(" ")),
        ["list"] => TrustAction::List,
        ["remove", id] => TrustAction::Remove((*id).to_owned()),
        [] => {
            return Err(UsageError(
                "'trust' needs 'add LINE', 'list' or 'remove ID'".into(),
            ))
        }
        other => {
            return Err(UsageError(format!(
                "unexpected arguments for 'trust': {}",
                other.join(" ")
            )))
        }
    };
    Ok(Command::Trust {
        action,
        config: config.unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_PATH)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Command, UsageError> {
        parse(args.iter().map(OsString::from))
    }

    #[test]
    fn every_command_parses() {
        assert_eq!(
            p(&["run"]).unwrap(),
            Command::Run {
                config: DEFAULT_CONFIG_PATH.into()
            }
        );
        assert_eq!(
            p(&["run", "--config", "/tmp/a.toml"]).unwrap(),
            Command::Run {
                config: "/tmp/a.toml".into()
            }
        );
        assert_eq!(
            p(&["check-config", "-c", "x.toml"]).unwrap(),
            Command::CheckConfig {
                config: "x.toml".into()
            }
        );
        assert_eq!(
            p(&["check-config", "--config=y.toml"]).unwrap(),
            Command::CheckConfig {
                config: "y.toml".into()
            }
        );
        assert_eq!(
            p(&["print-default-config"]).unwrap(),
            Command::PrintDefaultConfig
        );
        assert_eq!(
            p(&["metrics", "--once"]).unwrap(),
            Command::Metrics {
                once: true,
                config: None
            }
        );
        assert_eq!(
            p(&["metrics", "-c", "m.toml"]).unwrap(),
            Command::Metrics {
                once: false,
                config: Some("m.toml".into())
            }
        );
        assert_eq!(
            p(&["trust", "add", "fog-ed25519 AAAA"]).unwrap(),
            Command::Trust {
                action: TrustAction::Add("fog-ed25519 AAAA".into()),
                config: DEFAULT_CONFIG_PATH.into()
            }
        );
        assert_eq!(
            p(&["trust", "-c", "a.toml", "add", "fog-ed25519", "AAAA"]).unwrap(),
            Command::Trust {
                action: TrustAction::Add("fog-ed25519 AAAA".into()),
                config: "a.toml".into()
            }
        );
        assert_eq!(
            p(&["trust", "remove", "ab12", "--config=b.toml"]).unwrap(),
            Command::Trust {
                action: TrustAction::Remove("ab12".into()),
                config: "b.toml".into()
            }
        );
        assert!(p(&["trust"])
            .unwrap_err()
            .to_string()
            .contains("'add LINE'"));
        assert!(p(&["trust", "list", "x"]).is_err());
        assert_eq!(p(&["--help"]).unwrap(), Command::Help);
        assert_eq!(p(&["run", "-h"]).unwrap(), Command::Help);
        assert_eq!(p(&["-V"]).unwrap(), Command::Version);
    }

    #[test]
    fn mistakes_name_what_is_wrong() {
        let e = |args: &[&str]| p(args).unwrap_err().to_string();
        assert!(e(&[]).contains("a command is required"));
        assert!(e(&["start"]).contains("unknown command 'start'"));
        assert!(e(&["run", "--config"]).contains("'--config' needs a path"));
        assert!(e(&["run", "--once"]).contains("unexpected argument '--once' for 'run'"));
        assert!(e(&["run", "-c", "a", "-c", "b"]).contains("given twice"));
        assert!(e(&["print-default-config", "-c", "a"]).contains("unexpected argument '-c'"));
        assert!(e(&["run", "extra"]).contains("--help"));
    }
}
