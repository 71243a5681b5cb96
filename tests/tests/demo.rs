//! `passerelle demo --once` plays the whole story with real nodes and every
//! step succeeds.

use std::process::Command;

#[test]
fn the_demo_story_plays_to_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(passerelle_tests::passerelle_bin())
        .args(["demo", "--once", "--dir"])
        .arg(dir.path().join("demo"))
        .env("RUST_LOG", "warn")
        .output()
        .expect("the binary runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains('✗'), "a step failed:\n{stderr}");
    assert_eq!(stderr.matches('✓').count(), 19, "{stderr}");
    assert!(stderr.contains("10. The coordinator sees the request answered"), "{stderr}");
    assert!(!dir.path().join("demo").exists(), "the demo removes its homes unless --keep");
}
