//! Tampered bytes in the store: `verify` names the change that fails, the
//! node keeps serving the other documents, and nothing else is lost.

use passerelle_node::store::{SledStore, Store};
use passerelle_protocol::ids::DocId;
use passerelle_tests::TestNode;

#[test]
fn verify_names_a_tampered_change() -> anyhow::Result<()> {
    let mut node = TestNode::init("Tala-n-Asif", "MA")?;
    node.start()?;
    let victim = node.cli_json(&["request", "create", "--title", "Compostage"])?;
    let victim: DocId = victim["id"].as_str().unwrap().parse()?;
    node.cli_json(&["request", "update", &victim.to_string(), "--deadline", "2026-06-30"])?;
    let other = node.cli_json(&["project", "create", "--title", "Quartier propre"])?;
    node.terminate()?;

    // Flip one byte inside the signature of the victim's second change.
    {
        let store = SledStore::open(&node.home().store())?;
        let key = passerelle_node::store::sled_keys::change(&victim, 1);
        let mut value = store.raw_tree().get(&key)?.expect("the change is stored").to_vec();
        let last = value.len() - 10;
        value[last] ^= 0x40;
        store.raw_tree().insert(&key, value)?;
        store.flush()?;
    }

    node.start()?;
    let r = node.cli(&["verify", "--json"]);
    assert_eq!(r.code, 1, "verify fails when a signature does not hold: {}", r.stderr);
    let report = r.json();
    let failures = report["failures"].as_array().unwrap();
    assert_eq!(failures.len(), 1, "{report}");
    assert_eq!(failures[0]["doc"], victim.to_string());
    assert_eq!(failures[0]["seq"], 1);
    assert!(failures[0]["reason"].as_str().unwrap().contains("bad signature"), "{report}");
    let human = node.cli(&["verify"]);
    assert!(human.stdout.contains(&format!("FAILED document {victim} change #1")), "{}", human.stdout);

    // The other documents are intact and the node keeps serving.
    let project = node.cli_json(&["project", "show", other["id"].as_str().unwrap()])?;
    assert_eq!(project["title"], "Quartier propre");
    assert_eq!(node.cli_json(&["status"])?["documents"]["request"], 1);
    node.terminate()?;
    Ok(())
}

/// Damaged records (a document's metadata, another's change, a peer record,
/// a heartbeat) never stop a node: it starts and serves, `verify` names
/// them (on a stopped node too), `repair` sets them aside, rebuilds the
/// metadata, and the document it had to drop comes back from the peer.
#[test]
fn a_node_starts_over_damaged_records_and_repair_sets_them_aside() -> anyhow::Result<()> {
    let [mut a, b] = passerelle_tests::federation([("Senneval", "BE"), ("Tala-n-Asif", "MA")])?;
    let kept = a.cli_json(&["project", "create", "--title", "Métadonnées abîmées", "--scope", "network"])?;
    let kept: DocId = kept["id"].as_str().unwrap().parse()?;
    let lost = a.cli_json(&["project", "create", "--title", "Changement abîmé", "--scope", "network"])?;
    let lost: DocId = lost["id"].as_str().unwrap().parse()?;
    let me = a.node_id()?;
    passerelle_tests::wait_until(
        "Tala-n-Asif to hold both projects, and its heartbeat to reach Senneval",
        std::time::Duration::from_secs(60),
        || {
            Ok((
                b.cli(&["project", "show", &lost.to_string()]).code,
                b.cli(&["project", "show", &kept.to_string()]).code,
                a.client()?.heartbeats()?.iter().filter(|h| h.node.to_string() != me).count(),
            ))
        },
        |(l, k, beats)| *l == 0 && *k == 0 && *beats >= 1,
    )?;
    a.terminate()?;
    {
        let store = SledStore::open(&a.home().store())?;
        let tree = store.raw_tree();
        let garbage = b"\x00not a record".to_vec();
        tree.insert(passerelle_node::store::sled_keys::prefixed(b'm', kept.as_bytes()), garbage.clone())?;
        tree.insert(passerelle_node::store::sled_keys::change(&lost, 0), garbage.clone())?;
        for p in [b'p', b'b'] {
            let (key, _) = tree.scan_prefix([p]).next().expect("a record of that kind")?;
            tree.insert(key, garbage.clone())?;
        }
        store.flush()?;
    }

    // Verify on the stopped node names the four.
    let r = a.cli(&["verify", "--json"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let report = r.json();
    let kinds: Vec<&str> = report["damaged"].as_array().unwrap().iter().map(|d| d["kind"].as_str().unwrap()).collect();
    for kind in ["metadata", "change", "peer", "heartbeat"] {
        assert!(kinds.contains(&kind), "{kind} missing from {report}");
    }
    assert!(a.cli(&["verify"]).stdout.contains("no node runs on this home"));

    // The node starts and serves anyway.
    a.start()?;
    let damaged = a.cli(&["project", "show", &lost.to_string()]);
    assert_eq!(damaged.code, 1);
    assert!(damaged.stderr.contains("damaged in the store"), "{}", damaged.stderr);
    a.cli_json(&["practice", "create", "--title", "Écrite malgré les dégâts"])?;
    assert_eq!(a.cli_json(&["status"])?["documents"]["practice"], 1);
    let running = a.cli(&["repair"]);
    assert_ne!(running.code, 0);
    assert!(running.stderr.contains("stop the node first"), "{}", running.stderr);
    a.terminate()?;

    let r = a.cli(&["repair", "--json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let repaired = r.json();
    assert_eq!(repaired["rebuilt"], serde_json::json!([kept.to_string()]), "{repaired}");
    assert_eq!(repaired["dropped"], serde_json::json!([lost.to_string()]), "{repaired}");
    assert!(repaired["quarantined"].as_u64().unwrap() >= 4, "{repaired}");
    let clean = a.cli(&["verify", "--json"]);
    assert_eq!(clean.code, 0, "{}", clean.stdout);

    a.start()?;
    assert_eq!(a.cli_json(&["project", "show", &kept.to_string()])?["title"], "Métadonnées abîmées");
    // Its peer record was set aside (and its port is new): dial the peer again.
    a.connect_to(&b)?;
    passerelle_tests::wait_until(
        "the dropped project to come back from Tala-n-Asif",
        std::time::Duration::from_secs(90),
        || Ok(a.cli_json(&["project", "show", &lost.to_string()]).map(|d| d["title"].clone()).unwrap_or_default()),
        |t| t == "Changement abîmé",
    )?;
    assert_eq!(a.cli(&["verify"]).code, 0);
    a.terminate()?;
    Ok(())
}
