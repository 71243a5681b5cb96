//! The command line's contract without a node: help, version, usage errors
//! and exit codes (docs/cli.md).

use std::process::Command;

fn passerelle(args: &[&str], home: &std::path::Path) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_passerelle"))
        .args(args)
        .arg("--home")
        .arg(home)
        .env_remove("PASSERELLE_HOME")
        .output()
        .expect("the binary runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn help_lists_the_commands() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out, _) = passerelle(&["--help"], dir.path());
    assert_eq!(code, 0);
    for cmd in ["init", "run", "status", "request", "offer", "project", "practice", "history", "verify"] {
        assert!(out.contains(cmd), "--help mentions {cmd}:\n{out}");
    }
    let (code, out, _) = passerelle(&["request", "create", "--help"], dir.path());
    assert_eq!(code, 0);
    assert!(out.contains("--title") && out.contains("--theme"), "{out}");
}

#[test]
fn usage_errors_exit_2_and_missing_nodes_exit_3() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, err) = passerelle(&["nonsense"], dir.path());
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = passerelle(&["init", "--country", "BE"], dir.path());
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = passerelle(&["id"], dir.path());
    assert_eq!(code, 1);
    assert!(err.contains("passerelle init"), "{err}");
    let (code, _, err) = passerelle(&["status"], dir.path());
    assert_eq!(code, 3);
    assert!(err.contains("passerelle run"), "{err}");
    let (code, _, err) = passerelle(&["init", "--name", "Senneval", "--country", "Belgique"], dir.path());
    assert_eq!(code, 1);
    assert!(err.contains("ISO 3166-1"), "{err}");
}

#[test]
fn init_prints_ids_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("senneval");
    let (code, out, err) =
        passerelle(&["init", "--name", "Senneval", "--country", "be", "--api-port", "0", "--json"], &home);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["country"], "BE");
    assert_eq!(v["commune_id"].as_str().unwrap().len(), 64);
}
