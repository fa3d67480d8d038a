//! What `cargo xtask dist` packs beside the binary (docs/deploy.md): the systemd unit passes
//! `systemd-analyze verify` with nothing to say, and the example config is valid.

use std::path::PathBuf;
use std::process::Command;

use crate::support::Home;

/// The repository's `packaging` folder.
fn packaging() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../packaging")
}

#[test]
fn the_systemd_unit_verifies_with_nothing_to_say() {
    let unit = std::fs::read_to_string(packaging().join("netproxy.service")).unwrap();
    for needle in [
        "ExecStart=/usr/local/bin/netproxy serve",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "StateDirectory=netproxy",
        "Environment=NETPROXY_HOME=%S/netproxy",
    ] {
        assert!(unit.contains(needle), "no {needle:?} in the unit");
    }
    // The binary this test runs stands in for the installed one (verify checks that the
    // command exists); the man pages are checked by the `man` tests, not by `man` here.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("netproxy.service");
    std::fs::write(
        &path,
        unit.replace("/usr/local/bin/netproxy", env!("CARGO_BIN_EXE_netproxy")),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .expect("systemd-analyze (systemd) is needed to verify the unit");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // verify exits 0 on a value it ignores: any word from it is a fault.
    assert_eq!(stderr, "", "systemd-analyze verify has something to say");
}

#[test]
fn the_example_config_is_valid() {
    let home = Home::new();
    let config = packaging().join("config.toml");
    home.run(&["config", "validate", config.to_str().unwrap()])
        .assert_out(0, &["ok"]);
}
