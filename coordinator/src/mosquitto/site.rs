//! The files `fog-coordinator broker-config --mosquitto DIR` writes, and the write
//! itself: everything is built in memory first, written to temporary names beside
//! the targets and renamed into place only when every write succeeded, so a failure
//! leaves DIR as it was.
//!
//! ```text
//! DIR/fog.conf                     listener snippet (include it, or copy to conf.d)
//! DIR/acl                          the ACL ([`super::acl`])
//! DIR/passwd                       the password file ([`super::passwd`]), mode 0600
//! DIR/roles.toml                   who was configured, read back on the next run
//! DIR/credentials/<user>.password  the user's password, mode 0600, for that machine
//! DIR/credentials/<user>.toml      the `[broker]` keys for that user's config
//! ```
//!
//! A re-run keeps the users of `roles.toml` and the lines of `passwd` as they are
//! (adding a node does not change anyone's password); `rotate` makes new passwords
//! for everyone, `remove` drops users.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use fog_proto::NodeId;
use serde::Deserialize;

use super::{acl, passwd, RoleError, Roles};

/// Where the generated files will live on the broker host, and how to listen.
#[derive(Debug, Clone)]
pub struct Listener {
    pub port: u16,
    /// Address to bind; `None` for every interface.
    pub bind: Option<String>,
    /// The directory `fog.conf` names for `acl` and `passwd` (DIR itself by default).
    pub install_dir: PathBuf,
    /// Mutual TLS with `use_identity_as_username`: the certificate's CN is the
    /// username, no password file. The three paths are the broker's TLS files.
    pub mtls: Option<MtlsFiles>,
}

#[derive(Debug, Clone)]
pub struct MtlsFiles {
    pub cafile: PathBuf,
    pub certfile: PathBuf,
    pub keyfile: PathBuf,
}

/// What to do with the users already configured in DIR.
#[derive(Debug, Clone, Default)]
pub struct Changes {
    pub rotate: bool,
    pub remove: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum SiteError {
    #[error(transparent)]
    Role(#[from] RoleError),
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a roles file this command wrote: {source}")]
    Manifest {
        path: PathBuf,
        source: toml::de::Error,
    },
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Random(#[from] passwd::RandomError),
}

/// `roles.toml`: what the last run configured.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    prefix: String,
    coordinator: String,
    #[serde(default)]
    nodes: Vec<String>,
    #[serde(default)]
    clients: Vec<String>,
}

/// The roles asked for on the command line (merged over DIR's `roles.toml`).
#[derive(Debug, Clone, Default)]
pub struct Wanted {
    pub prefix: Option<String>,
    pub coordinator: Option<String>,
    pub nodes: Vec<String>,
    pub clients: Vec<String>,
}

/// One file to write.
#[derive(Debug)]
pub struct File {
    pub path: PathBuf,
    pub text: String,
    /// Owner read/write only.
    pub private: bool,
}

/// What a run produced: the files, and per user whether it got a new password.
#[derive(Debug)]
pub struct Plan {
    pub roles: Roles,
    pub files: Vec<File>,
    pub new_passwords: Vec<String>,
    pub kept: Vec<String>,
    pub removed: Vec<String>,
}

fn read_optional(path: &Path) -> Result<Option<String>, SiteError> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(SiteError::Read {
            path: path.to_owned(),
            source,
        }),
    }
}

fn merged(old: Vec<String>, new: &[String], remove: &[String]) -> Vec<String> {
    let mut out = old;
    for n in new {
        if !out.contains(n) {
            out.push(n.clone());
        }
    }
    out.retain(|n| !remove.contains(n));
    out
}

/// Build every file for DIR from what is there and what was asked, writing nothing.
pub fn plan(
    dir: &Path,
    wanted: &Wanted,
    changes: &Changes,
    listener: &Listener,
) -> Result<Plan, SiteError> {
    let manifest_path = dir.join("roles.toml");
    let old = match read_optional(&manifest_path)? {
        Some(text) => toml::from_str::<Manifest>(&text).map_err(|source| SiteError::Manifest {
            path: manifest_path.clone(),
            source,
        })?,
        None => Manifest::default(),
    };
    let pick = |new: &Option<String>, old: &str, default: &str| match new {
        Some(v) => v.clone(),
        None if !old.is_empty() => old.to_owned(),
        None => default.to_owned(),
    };
    let prefix = pick(&wanted.prefix, &old.prefix, "fog");
    let coordinator = pick(&wanted.coordinator, &old.coordinator, "fog-coordinator");
    let nodes = merged(old.nodes.clone(), &wanted.nodes, &changes.remove);
    let clients = merged(old.clients.clone(), &wanted.clients, &changes.remove);
    let roles = Roles::new(&prefix, &coordinator, &nodes, &clients)?;
    let mut removed: Vec<String> = old.nodes.iter().chain(&old.clients).cloned().collect();
    removed.retain(|u| changes.remove.contains(u));
    if !old.coordinator.is_empty() && old.coordinator != coordinator {
        removed.push(old.coordinator.clone());
    }

    let mut files = vec![
        File {
            path: dir.join("acl"),
            text: acl::render(&roles),
            private: false,
        },
        File {
            path: dir.join("fog.conf"),
            text: listener_conf(listener),
            private: false,
        },
        File {
            path: manifest_path,
            text: manifest(&roles),
            private: false,
        },
    ];
    let (mut new_passwords, mut kept) = (Vec::new(), Vec::new());
    if listener.mtls.is_none() {
        let existing = existing_lines(&dir.join("passwd"))?;
        let mut lines = String::new();
        for user in roles.users() {
            match existing.get(user.as_str()) {
                Some(line) if !changes.rotate => {
                    kept.push(user.to_string());
                    let _ = writeln!(lines, "{line}");
                }
                _ => {
                    let pw = passwd::new_password()?;
                    let _ = writeln!(lines, "{}", passwd::line(user.as_str(), &pw)?);
                    files.extend(credentials(dir, user, &pw));
                    new_passwords.push(user.to_string());
                }
            }
        }
        files.push(File {
            path: dir.join("passwd"),
            text: lines,
            private: true,
        });
    }
    Ok(Plan {
        roles,
        files,
        new_passwords,
        kept,
        removed,
    })
}

/// `passwd`'s lines by user (none if there is no file yet).
fn existing_lines(path: &Path) -> Result<BTreeMap<String, String>, SiteError> {
    let text = read_optional(path)?.unwrap_or_default();
    Ok(text
        .lines()
        .filter_map(|l| passwd::user_of(l).map(|u| (u.to_owned(), l.to_owned())))
        .collect())
}

/// Where the password file goes on the user's machine.
pub const PASSWORD_FILE_ON_HOST: &str = "/etc/fog/broker.password";

fn credentials(dir: &Path, user: &NodeId, password: &str) -> [File; 2] {
    let creds = dir.join("credentials");
    [
        File {
            path: creds.join(format!("{user}.password")),
            text: format!("{password}\n"),
            private: true,
        },
        File {
            path: creds.join(format!("{user}.toml")),
            text: broker_snippet(user),
            private: false,
        },
    ]
}

/// The `[broker]` keys for a user's agent or coordinator config.
pub fn broker_snippet(user: &NodeId) -> String {
    format!(
        "# [broker] keys for {user}: merge into its config (agent.toml / coordinator.toml),\n\
         # and copy credentials/{user}.password to {PASSWORD_FILE_ON_HOST} (mode 0600, owned by\n\
         # the service user). Over plain mqtt:// a password needs\n\
         # allow_plaintext_password = true; use mqtts:// with ca_file off the local host.\n\
         [broker]\nusername = \"{user}\"\npassword_file = \"{PASSWORD_FILE_ON_HOST}\"\n"
    )
}

fn manifest(roles: &Roles) -> String {
    let list = |set: &std::collections::BTreeSet<NodeId>| {
        set.iter()
            .map(|n| format!("{:?}", n.as_str()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "# Written by `fog-coordinator broker-config`; read back by its next run.\n\
         prefix = {:?}\ncoordinator = {:?}\nnodes = [{}]\nclients = [{}]\n",
        roles.topics.prefix().as_str(),
        roles.coordinator.as_str(),
        list(&roles.nodes),
        list(&roles.clients)
    )
}

/// `fog.conf`: the listener, authentication, the ACL and the packet ceiling.
pub fn listener_conf(l: &Listener) -> String {
    let dir = l.install_dir.display();
    let bind = l
        .bind
        .as_deref()
        .map(|b| format!(" {b}"))
        .unwrap_or_default();
    let auth = match &l.mtls {
        None => format!(
            "password_file {dir}/passwd\n\
             # TLS, so the passwords do not cross the network in the clear (fog sends one over\n\
             # plain mqtt:// only with allow_plaintext_password = true): uncomment and point\n\
             # at the broker's files, and use url = \"mqtts://...\" with ca_file in [broker].\n\
             # cafile /etc/mosquitto/ca_certificates/ca.pem\n\
             # certfile /etc/mosquitto/certs/broker.pem\n\
             # keyfile /etc/mosquitto/certs/broker.key\n"
        ),
        Some(t) => format!(
            "# Mutual TLS: the client certificate's CN is the username the ACL sees.\n\
             cafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate true\nuse_identity_as_username true\n",
            t.cafile.display(),
            t.certfile.display(),
            t.keyfile.display()
        ),
    };
    format!(
        "# Mosquitto 2.0 listener for fog, generated by `fog-coordinator broker-config`.\n\
         # Include it from mosquitto.conf (`include_dir`) or copy it there.\n\
         listener {port}{bind}\n\
         allow_anonymous false\n\
         {auth}\
         acl_file {dir}/acl\n\
         # fog's largest message (the coordinator status snapshot) plus MQTT framing:\n\
         # the ceiling fog's own clients accept. A larger publish disconnects its\n\
         # sender and reaches no one, so it cannot knock a fog program off the broker.\n\
         max_packet_size {max}\n\
         # QoS 1 messages queued per client before Mosquitto drops them (default 1000):\n\
         # the coordinator reads every node's readings, so a fleet of N nodes bursting\n\
         # after an outage needs room for about N x (backlog replay rate). Lost ones are\n\
         # recovered end to end (acks and timeouts), but each costs a retry.\n\
         max_queued_messages 10000\n\
         # Send small messages (an ack, one result) at once instead of holding each for\n\
         # the receiver's delayed ACK, up to 40 ms per hop of a task's round trip. A\n\
         # global option: it applies to every listener of this Mosquitto.\n\
         set_tcp_nodelay true\n",
        port = l.port,
        max = fog_rt::limits::MAX_PACKET_BYTES,
    )
}

/// Temporary name beside `path`.
fn staging(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp-{}", std::process::id()));
    path.with_file_name(name)
}

fn write_one(f: &File, to: &Path) -> Result<(), SiteError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let err = |source| SiteError::Write {
        path: f.path.clone(),
        source,
    };
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create(true).truncate(true);
    o.mode(if f.private { 0o600 } else { 0o644 });
    let mut file = o.open(to).map_err(err)?;
    file.write_all(f.text.as_bytes()).map_err(err)?;
    file.sync_all().map_err(err)
}

/// Write every file of the plan (and delete the removed users' credentials), all or
/// nothing: on any failure the temporary files are removed and DIR is unchanged.
pub fn write(dir: &Path, plan: &Plan) -> Result<(), SiteError> {
    let creds = dir.join("credentials");
    for d in [dir, creds.as_path()] {
        std::fs::create_dir_all(d).map_err(|source| SiteError::Write {
            path: d.to_owned(),
            source,
        })?;
    }
    let mut staged = Vec::new();
    for f in &plan.files {
        let tmp = staging(&f.path);
        staged.push(tmp.clone());
        if let Err(e) = write_one(f, &tmp) {
            for t in &staged {
                let _ = std::fs::remove_file(t);
            }
            return Err(e);
        }
    }
    for (f, tmp) in plan.files.iter().zip(&staged) {
        std::fs::rename(tmp, &f.path).map_err(|source| SiteError::Write {
            path: f.path.clone(),
            source,
        })?;
    }
    for user in &plan.removed {
        for ext in ["password", "toml"] {
            let _ = std::fs::remove_file(creds.join(format!("{user}.{ext}")));
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "site_tests.rs"]
mod tests;
