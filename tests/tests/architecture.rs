//! The protocol crate stays pure: no async runtime, storage or network
//! crate anywhere in its dependency tree.

#[test]
fn protocol_does_no_io() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = std::process::Command::new(cargo)
        .args(["tree", "-p", "passerelle-protocol", "-e", "normal", "--prefix", "none", "--offline"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo tree runs");
    assert!(out.status.success(), "cargo tree failed: {}", String::from_utf8_lossy(&out.stderr));
    let tree = String::from_utf8_lossy(&out.stdout);
    assert!(tree.contains("automerge"), "the tree was read: {tree}");
    let forbidden = ["tokio", "sled", "libp2p", "axum", "hyper", "mio", "ureq"];
    for line in tree.lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        assert!(
            !forbidden.iter().any(|f| name == *f || name.starts_with(&format!("{f}-"))),
            "protocol pulls in {line}"
        );
    }
}
