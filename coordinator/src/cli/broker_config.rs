//! `fog-coordinator broker-config --mosquitto DIR`: write a Mosquitto ACL, password
//! file, per-user credentials and a listener snippet for the site's roles
//! (`fog_coordinator::mosquitto`). Bad input exits 2 and writes nothing.

use std::path::PathBuf;
use std::process::ExitCode;

use fog_coordinator::mosquitto::site::{self, Changes, Listener, MtlsFiles, Wanted};

use super::{usage, EXIT_USAGE};

#[derive(clap::Args)]
pub struct Args {
    /// Directory to write fog.conf, acl, passwd, roles.toml and credentials/ into
    /// (created if missing; users already in its roles.toml are kept).
    #[arg(long, value_name = "DIR")]
    mosquitto: PathBuf,
    /// A node id (its broker username); repeat for each node.
    #[arg(long = "node", value_name = "ID")]
    nodes: Vec<String>,
    /// A client name (its broker username, for `submit`, `bench`, `status`); repeat.
    #[arg(long = "client", value_name = "NAME")]
    clients: Vec<String>,
    /// The coordinator's broker username (default fog-coordinator, or the one DIR has).
    #[arg(long, value_name = "NAME")]
    coordinator_user: Option<String>,
    /// Topic prefix, as the site's `prefix` key (default fog, or the one DIR has).
    #[arg(long)]
    prefix: Option<String>,
    /// New passwords for every user (by default existing ones are kept).
    #[arg(long)]
    rotate: bool,
    /// Drop a user (node or client) and its credentials; repeat.
    #[arg(long, value_name = "NAME")]
    remove: Vec<String>,
    /// Listener port written into fog.conf.
    #[arg(long, default_value_t = 8883)]
    port: u16,
    /// Address the listener binds (default: every interface).
    #[arg(long)]
    bind: Option<String>,
    /// Directory fog.conf names for acl and passwd on the broker host (default: DIR).
    #[arg(long, value_name = "DIR")]
    install_dir: Option<PathBuf>,
    /// Mutual TLS with use_identity_as_username (certificate CN = username) instead of
    /// passwords; the paths are the broker's CA, certificate and key.
    #[arg(long, num_args = 3, value_names = ["CAFILE", "CERTFILE", "KEYFILE"])]
    mtls: Option<Vec<PathBuf>>,
}

pub fn run(a: &Args) -> Result<ExitCode, ExitCode> {
    let mtls = match a.mtls.as_deref() {
        Some([cafile, certfile, keyfile]) => Some(MtlsFiles {
            cafile: cafile.clone(),
            certfile: certfile.clone(),
            keyfile: keyfile.clone(),
        }),
        Some(_) => return Err(usage("--mtls takes CAFILE CERTFILE KEYFILE")),
        None => None,
    };
    let install_dir = match &a.install_dir {
        Some(d) => d.clone(),
        None => std::path::absolute(&a.mosquitto)
            .map_err(|e| usage(&format!("resolving {}: {e}", a.mosquitto.display())))?,
    };
    let listener = Listener {
        port: a.port,
        bind: a.bind.clone(),
        install_dir,
        mtls,
    };
    let wanted = Wanted {
        prefix: a.prefix.clone(),
        coordinator: a.coordinator_user.clone(),
        nodes: a.nodes.clone(),
        clients: a.clients.clone(),
    };
    let changes = Changes {
        rotate: a.rotate,
        remove: a.remove.clone(),
    };
    let bad = |e: site::SiteError| {
        eprintln!("fog-coordinator: broker-config: {e}");
        ExitCode::from(EXIT_USAGE)
    };
    let plan = site::plan(&a.mosquitto, &wanted, &changes, &listener).map_err(bad)?;
    site::write(&a.mosquitto, &plan).map_err(bad)?;
    print!("{}", report(a, &plan));
    Ok(ExitCode::SUCCESS)
}

fn report(a: &Args, plan: &site::Plan) -> String {
    let dir = a.mosquitto.display();
    let r = &plan.roles;
    let mut out = format!(
        "wrote {dir}/fog.conf, {dir}/acl, {dir}/roles.toml{}\n\
         users: coordinator {}, {} node(s), {} client(s)\n",
        if a.mtls.is_some() {
            String::new()
        } else {
            format!(", {dir}/passwd")
        },
        r.coordinator,
        r.nodes.len(),
        r.clients.len()
    );
    if !plan.new_passwords.is_empty() {
        out.push_str(&format!(
            "new passwords: {} (in {dir}/credentials/<user>.password, with a [broker] snippet in <user>.toml)\n",
            plan.new_passwords.join(", ")
        ));
    }
    if !plan.kept.is_empty() {
        out.push_str(&format!(
            "passwords kept: {} (--rotate to replace them)\n",
            plan.kept.join(", ")
        ));
    }
    if !plan.removed.is_empty() {
        out.push_str(&format!("removed: {}\n", plan.removed.join(", ")));
    }
    out.push_str(
        "next: copy each credentials/<user>.password to /etc/fog/broker.password on that machine (mode 0600),\n\
         merge credentials/<user>.toml into its [broker] table, include fog.conf from mosquitto.conf,\n\
         and restart mosquitto (docs/security.md)\n",
    );
    out
}
