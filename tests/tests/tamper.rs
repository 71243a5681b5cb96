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
