use std::os::unix::fs::PermissionsExt as _;

use super::*;

fn listener(dir: &Path) -> Listener {
    Listener {
        port: 1883,
        bind: Some("127.0.0.1".into()),
        install_dir: dir.to_owned(),
        mtls: None,
    }
}

fn wanted(nodes: &[&str], clients: &[&str]) -> Wanted {
    Wanted {
        nodes: nodes.iter().map(|s| s.to_string()).collect(),
        clients: clients.iter().map(|s| s.to_string()).collect(),
        ..Wanted::default()
    }
}

fn run(dir: &Path, w: &Wanted, c: &Changes) -> Result<Plan, SiteError> {
    let p = plan(dir, w, c, &listener(dir))?;
    write(dir, &p)?;
    Ok(p)
}

fn read(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn line_of(dir: &Path, user: &str) -> String {
    read(dir, "passwd")
        .lines()
        .find(|l| passwd::user_of(l) == Some(user))
        .unwrap_or_else(|| panic!("no line for {user}"))
        .to_owned()
}

#[test]
fn every_user_gets_a_password_that_its_line_accepts_and_private_files() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let p = run(
        dir,
        &wanted(&["pi-1", "pi-2"], &["ops"]),
        &Changes::default(),
    )
    .expect("run");
    assert_eq!(p.new_passwords, ["fog-coordinator", "pi-1", "pi-2", "ops"]);
    for user in &p.new_passwords {
        let pw = read(dir, &format!("credentials/{user}.password"));
        assert!(passwd::verify(&line_of(dir, user), pw.trim_end()), "{user}");
        let mode = std::fs::metadata(dir.join(format!("credentials/{user}.password")))
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{user}");
        let snippet = read(dir, &format!("credentials/{user}.toml"));
        assert!(
            snippet.contains(&format!("username = \"{user}\"")),
            "{snippet}"
        );
    }
    let mode = std::fs::metadata(dir.join("passwd"))
        .expect("stat")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let conf = read(dir, "fog.conf");
    assert!(conf.contains("allow_anonymous false\n"), "{conf}");
    assert!(
        conf.contains(&format!("acl_file {}/acl\n", dir.display())),
        "{conf}"
    );
    assert!(conf.contains(&format!("password_file {}/passwd\n", dir.display())));
    assert!(conf.contains(&format!(
        "max_packet_size {}\n",
        fog_rt::limits::MAX_PACKET_BYTES
    )));
    assert!(conf.contains("listener 1883 127.0.0.1\n"), "{conf}");
}

#[test]
fn a_rerun_adding_a_node_keeps_everyone_elses_password_and_rotate_replaces_them() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    run(dir, &wanted(&["pi-1"], &["ops"]), &Changes::default()).expect("first");
    let before = read(dir, "passwd");
    let pw1 = read(dir, "credentials/pi-1.password");
    let p = run(dir, &wanted(&["pi-2"], &[]), &Changes::default()).expect("second");
    assert_eq!(p.new_passwords, ["pi-2"]);
    assert_eq!(p.kept, ["fog-coordinator", "pi-1", "ops"]);
    for user in ["fog-coordinator", "pi-1", "ops"] {
        assert!(before.contains(&line_of(dir, user)), "{user} changed");
    }
    assert_eq!(read(dir, "credentials/pi-1.password"), pw1);
    assert!(read(dir, "acl").contains("user pi-1\n") && read(dir, "acl").contains("user pi-2\n"));

    let rotate = Changes {
        rotate: true,
        remove: Vec::new(),
    };
    let p = run(dir, &wanted(&[], &[]), &rotate).expect("rotate");
    assert_eq!(p.new_passwords.len(), 4);
    assert_ne!(read(dir, "credentials/pi-1.password"), pw1);
    assert!(!passwd::verify(&line_of(dir, "pi-1"), pw1.trim_end()));
}

#[test]
fn remove_drops_the_user_its_acl_block_and_its_credentials() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    run(dir, &wanted(&["pi-1", "pi-2"], &[]), &Changes::default()).expect("first");
    let remove = Changes {
        rotate: false,
        remove: vec!["pi-2".into()],
    };
    let p = run(dir, &wanted(&[], &[]), &remove).expect("remove");
    assert_eq!(p.removed, ["pi-2"]);
    assert!(!read(dir, "acl").contains("pi-2"));
    assert!(!read(dir, "passwd").contains("pi-2:"));
    assert!(!dir.join("credentials/pi-2.password").exists());
    assert!(dir.join("credentials/pi-1.password").exists());
}

#[test]
fn bad_input_writes_nothing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("site");
    for bad in ["a/b", "pi+", "#", "x:y"] {
        let e = plan(
            &dir,
            &wanted(&[bad], &[]),
            &Changes::default(),
            &listener(&dir),
        )
        .expect_err(bad);
        assert!(matches!(e, SiteError::Role(_)), "{e}");
    }
    assert!(!dir.exists(), "nothing created");
    // A failure half-way through the writes: every staged file is removed and no
    // target appears.
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::create_dir(dir.join(format!("passwd.tmp-{}", std::process::id()))).expect("mkdir");
    let e = run(&dir, &wanted(&["pi-1"], &[]), &Changes::default()).expect_err("blocked");
    assert!(e.to_string().contains("passwd"), "{e}");
    let left: Vec<_> = std::fs::read_dir(&dir)
        .expect("readdir")
        .chain(std::fs::read_dir(dir.join("credentials")).expect("readdir"))
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with("passwd.tmp-") && n != "credentials")
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn mtls_writes_no_passwords_and_names_the_identity_as_username() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let mut l = listener(dir);
    l.mtls = Some(MtlsFiles {
        cafile: "/etc/mosquitto/ca.pem".into(),
        certfile: "/etc/mosquitto/server.pem".into(),
        keyfile: "/etc/mosquitto/server.key".into(),
    });
    let p = plan(dir, &wanted(&["pi-1"], &[]), &Changes::default(), &l).expect("plan");
    write(dir, &p).expect("write");
    assert!(p.new_passwords.is_empty());
    assert!(!dir.join("passwd").exists());
    let conf = read(dir, "fog.conf");
    assert!(
        conf.contains("use_identity_as_username true\nrequire_certificate")
            || conf.contains("require_certificate true\nuse_identity_as_username true\n"),
        "{conf}"
    );
    assert!(!conf.contains("password_file"), "{conf}");
}

#[test]
fn a_roles_file_that_is_not_ours_is_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    std::fs::write(tmp.path().join("roles.toml"), "nodes = 3\n").expect("write");
    let e = plan(
        tmp.path(),
        &wanted(&[], &[]),
        &Changes::default(),
        &listener(tmp.path()),
    )
    .expect_err("refused");
    assert!(matches!(e, SiteError::Manifest { .. }), "{e}");
}
