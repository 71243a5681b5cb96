//! Nothing acknowledged is ever lost: a node is killed with SIGKILL in the
//! middle of a burst of concurrent writes, restarted, and every write it
//! acknowledged is there; the store opens and every signature verifies.
//!
//! ```text
//!   4 writer threads ──HTTP──▶ [node]  ✕ SIGKILL mid-burst
//!                               [node] restarted on the same home
//! ```

use std::collections::HashMap;
use std::sync::mpsc;
use std::time::Duration;

use passerelle_node::api::types::{CreateDoc, UpdateDoc};
use passerelle_protocol::ids::DocId;
use passerelle_tests::TestNode;
use serde_json::json;

/// What one writer had acknowledged when the node died.
#[derive(Debug, Default)]
struct Acked {
    /// Documents created, with the last description value acknowledged.
    docs: HashMap<DocId, u64>,
    /// The value attempted after the last acknowledged one, per document.
    attempted: HashMap<DocId, u64>,
}

#[test]
fn acknowledged_writes_survive_kill_9() -> anyhow::Result<()> {
    let mut node = TestNode::init("Hautrieu", "BE")?;
    for round in 0..3 {
        node.start()?;
        let (tx, rx) = mpsc::channel::<Acked>();
        let mut writers = Vec::new();
        for w in 0..4 {
            let client = node.client()?;
            let tx = tx.clone();
            writers.push(std::thread::spawn(move || {
                let mut acked = Acked::default();
                let mut my_docs: Vec<DocId> = Vec::new();
                for n in 0u64.. {
                    if n % 3 == 0 || my_docs.is_empty() {
                        let fields = json!({"title": format!("r{round} w{w} n{n}"), "description": "v0"});
                        let req = CreateDoc {
                            kind: "request".into(),
                            fields: fields.as_object().unwrap().clone(),
                            ..Default::default()
                        };
                        match client.create(&req) {
                            Ok(doc) => {
                                acked.docs.insert(doc.id, 0);
                                my_docs.push(doc.id);
                            }
                            Err(_) => break,
                        }
                    } else {
                        let doc = my_docs[(n as usize) % my_docs.len()];
                        let value = acked.docs[&doc] + 1;
                        acked.attempted.insert(doc, value);
                        let fields = json!({"description": format!("v{value}")});
                        let req = UpdateDoc { fields: fields.as_object().unwrap().clone(), ..Default::default() };
                        match client.update(&doc, &req) {
                            Ok(_) => {
                                acked.docs.insert(doc, value);
                            }
                            Err(_) => break,
                        }
                    }
                }
                let _ = tx.send(acked);
            }));
        }
        drop(tx);
        // Let the burst run, then kill without warning.
        passerelle_tests::wait_until(
            "a burst of writes",
            Duration::from_secs(30),
            || Ok(node.client()?.list(Some("request"), None, None)?.len()),
            |n| *n >= 100 * (round + 1),
        )?;
        node.kill9();
        let results: Vec<Acked> = rx.iter().collect();
        for w in writers {
            w.join().expect("writer thread");
        }

        node.start()?;
        let client = node.client()?;
        let mut checked = 0;
        for acked in &results {
            for (doc, value) in &acked.docs {
                let view =
                    client.show(doc, None).map_err(|e| anyhow::anyhow!("acknowledged document {doc} lost: {e}"))?;
                let stored =
                    view.fields["description"]["fr"].as_str().unwrap().trim_start_matches('v').parse::<u64>()?;
                let attempted = acked.attempted.get(doc).copied().unwrap_or(*value);
                assert!(
                    stored == *value || stored == attempted,
                    "document {doc}: acknowledged v{value}, found v{stored} (attempted v{attempted})"
                );
                checked += 1;
            }
        }
        assert!(checked > 0);
        let report = client.verify()?;
        assert!(report.failures.is_empty(), "round {round}: {:?}", report.failures);
        node.terminate()?;
    }
    Ok(())
}
