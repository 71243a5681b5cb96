//! Offline bundles between real nodes: what a partner lacks goes in a
//! signed file; importing applies it like a sync, twice is harmless, and a
//! bundle for someone else, tampered or truncated, is refused with a reason.
//!
//! ```text
//!   Senneval ══ (no link at all) ══ Tala-n-Asif        a file instead
//! ```

use passerelle_tests::{disconnect_all, federation, make_partners};

fn ids(v: &serde_json::Value) -> Vec<String> {
    v.as_array().unwrap().iter().map(|d| d["id"].as_str().unwrap().to_owned()).collect()
}

#[test]
fn bundles_carry_what_a_partner_lacks_and_refuse_the_wrong_ones() -> anyhow::Result<()> {
    let [senneval, tala, verbois] = federation([("Senneval", "BE"), ("Tala-n-Asif", "MA"), ("Verbois", "BE")])?;
    make_partners(&senneval, &tala)?;
    // No link at all between the partners any more.
    for n in [&senneval, &tala] {
        disconnect_all(n)?;
    }
    let dir = tempfile::tempdir()?;
    let request = senneval.cli_json(&["request", "create", "--title", "Pour Tala-n-Asif seulement"])?;
    let practice = senneval.cli_json(&["practice", "create", "--title", "Fiche pour tout le réseau"])?;
    let (req, prac) = (request["id"].as_str().unwrap().to_owned(), practice["id"].as_str().unwrap().to_owned());

    let for_tala = dir.path().join("tala.pbundle");
    let summary = senneval.cli_json(&["bundle", "export", "--for", "Tala-n-Asif", "-o", for_tala.to_str().unwrap()])?;
    assert!(summary["changes"].as_u64().unwrap() >= 2, "{summary}");
    let first = tala.cli_json(&["bundle", "import", for_tala.to_str().unwrap()])?;
    let applied = first["ingest"]["applied"].as_u64().unwrap();
    assert!(applied >= 2 && first["ingest"]["rejected"].as_array().unwrap().is_empty(), "{first}");
    let held = ids(&tala.cli_json(&["request", "list"])?);
    assert!(held.contains(&req));
    assert_eq!(tala.cli_json(&["practice", "show", &prac])?["title"], "Fiche pour tout le réseau");
    // Twice: nothing new.
    let again = tala.cli_json(&["bundle", "import", for_tala.to_str().unwrap()])?;
    assert_eq!(again["ingest"]["applied"], 0);
    let seen_before = applied + first["ingest"]["duplicates"].as_u64().unwrap();
    assert_eq!(again["ingest"]["duplicates"].as_u64().unwrap(), seen_before);

    // Tampered and truncated copies are refused before anything is applied.
    let bytes = std::fs::read(&for_tala)?;
    let tampered = dir.path().join("tampered.pbundle");
    let mut bad = bytes.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x20;
    std::fs::write(&tampered, &bad)?;
    let r = tala.cli(&["bundle", "import", tampered.to_str().unwrap()]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("signature") || r.stderr.contains("not a readable bundle"), "{}", r.stderr);
    let truncated = dir.path().join("truncated.pbundle");
    std::fs::write(&truncated, &bytes[..bytes.len() / 3])?;
    let r = tala.cli(&["bundle", "import", truncated.to_str().unwrap()]);
    assert!(r.code == 1 && r.stderr.contains("truncated"), "{}", r.stderr);

    // A bundle for Verbois leaves the partnership request out, and Tala-n-Asif refuses it.
    let for_verbois = dir.path().join("verbois.pbundle");
    senneval.cli_json(&["bundle", "export", "--for", "Verbois", "--all", "-o", for_verbois.to_str().unwrap()])?;
    let r = tala.cli(&["bundle", "import", for_verbois.to_str().unwrap()]);
    assert!(r.code == 1 && r.stderr.contains("for Verbois"), "{}", r.stderr);
    let v = verbois.cli_json(&["bundle", "import", for_verbois.to_str().unwrap()])?;
    assert!(v["ingest"]["rejected"].as_array().unwrap().is_empty(), "{v}");
    assert_eq!(verbois.cli(&["practice", "show", &prac]).code, 0);
    assert_eq!(verbois.cli(&["request", "show", &req]).code, 1, "the partnership request stays between partners");
    let contents = std::fs::read(&for_verbois)?;
    let id = hex_bytes(&req);
    assert!(!contents.windows(id.len()).any(|w| w == id.as_slice()), "no byte of the bundle names the request");

    // Usage and missing files get clear errors.
    assert_eq!(tala.cli(&["bundle", "import", "/nonexistent/file"]).code, 1);
    let r = senneval.cli(&["bundle", "export", "--for", "Nobody", "-o", "x.pbundle"]);
    assert!(r.code == 1 && r.stderr.contains("no member"), "{}", r.stderr);
    Ok(())
}

fn hex_bytes(hex: &str) -> Vec<u8> {
    (0..hex.len() / 2).map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap()).collect()
}
