//! Engine tests over a real sled store in a temporary directory.

use passerelle_protocol::certificate::NodeCertificate;
use passerelle_protocol::document;
use passerelle_protocol::envelope::ChangeEnvelope;
use passerelle_protocol::header::{DocHeader, DocKind, Scope, SignedHeader};
use passerelle_protocol::keys::SecretKey;
use serde_json::json;

use super::*;
use crate::home::Home;
use crate::store::SledStore;
use crate::views::{CreateDoc, UpdateDoc};

struct Fixture {
    _dir: tempfile::TempDir,
    home: Home,
    identity: Identity,
}

fn fixture(cache: usize) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let home = Home::new(dir.path());
    let mut identity = crate::identity::init(&home, "Senneval", "BE", 0).unwrap();
    identity.config.store.cached_documents = cache;
    Fixture { _dir: dir, home, identity }
}

fn start(f: &Fixture) -> (EngineHandle, std::thread::JoinHandle<()>) {
    spawn(SledStore::open(&f.home.store()).unwrap(), &f.identity).unwrap()
}

fn fields(v: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
    v.as_object().unwrap().clone()
}

/// A remote commune's signed request with `n` edits.
fn remote_doc(seed: u8, n: usize) -> (NodeCertificate, SignedHeader, Vec<ChangeEnvelope>, SecretKey) {
    let commune = SecretKey::from_seed([seed; 32]);
    let node = SecretKey::from_seed([seed + 1; 32]);
    let cert = NodeCertificate::issue(&commune, node.node_id(), 0);
    let header = DocHeader::new(DocKind::Request, commune.commune_id(), Scope::Network, 1_000, [seed; 16]);
    let signed = SignedHeader::sign(header, &node, cert.clone());
    let id = signed.id();
    let mut doc = document::new_document(&node.node_id());
    let mut envs = Vec::new();
    for i in 0..n {
        let edit = document::Edit::Text { field: "title".into(), lang: "fr".into(), text: format!("Demande v{i}") };
        let change = document::commit(&mut doc, &[edit], "edit", 2_000 + i as i64).unwrap().unwrap();
        envs.push(ChangeEnvelope::sign(id, &change, &node));
    }
    (cert, signed, envs, node)
}

#[tokio::test]
async fn documents_load_on_demand_beyond_the_cache() {
    let f = fixture(2);
    let (engine, thread) = start(&f);
    let mut ids = Vec::new();
    for i in 0..6 {
        let doc = engine
            .create(CreateDoc {
                kind: "request".into(),
                fields: fields(json!({"title": format!("Demande {i}")})),
                ..Default::default()
            })
            .await
            .unwrap();
        ids.push(doc.id);
    }
    // Enough updates to pass a snapshot, on a document long evicted.
    for v in 0..(crate::engine::docs::SNAPSHOT_EVERY + 5) {
        engine
            .update(ids[0], UpdateDoc { fields: fields(json!({"description": format!("v{v}")})), ..Default::default() })
            .await
            .unwrap();
        let other = ids[1 + (v as usize % 5)];
        engine.get(other, None).await.unwrap();
    }
    for (i, id) in ids.iter().enumerate() {
        let doc = engine.get(*id, None).await.unwrap();
        assert_eq!(doc.title.as_deref(), Some(format!("Demande {i}").as_str()));
    }
    engine.shutdown().await;
    thread.join().unwrap();

    // After a restart, the snapshot plus later changes give the same document.
    let (engine, thread) = start(&f);
    let doc = engine.get(ids[0], None).await.unwrap();
    assert_eq!(doc.fields["description"]["fr"], format!("v{}", crate::engine::docs::SNAPSHOT_EVERY + 4));
    assert_eq!(doc.changes, crate::engine::docs::SNAPSHOT_EVERY + 6);
    assert!(engine.verify().await.unwrap().failures.is_empty());
    engine.shutdown().await;
    thread.join().unwrap();
}

#[tokio::test]
async fn ingest_accepts_signed_changes_and_refuses_the_rest() {
    let f = fixture(8);
    let (engine, thread) = start(&f);
    let (cert, header, envs, node) = remote_doc(10, 5);
    let id = header.id();

    // Unknown author: no certificate for the signing node.
    let stranger = SecretKey::from_seed([99; 32]);
    let mut foreign = document::new_document(&stranger.node_id());
    let change = document::commit(
        &mut foreign,
        &[
            document::Edit::Delete { field: "x".into() },
            document::Edit::Put { field: "x".into(), value: document::Scalar::Int(1) },
        ],
        "x",
        3_000,
    )
    .unwrap()
    .unwrap();
    let unknown = ChangeEnvelope::sign(id, &change, &stranger);
    // Forged: a valid envelope with one signature bit flipped.
    let mut forged = envs[4].clone();
    forged.signature.as_mut().unwrap()[3] ^= 1;

    let report = engine
        .ingest(IngestBatch {
            certificates: vec![cert.clone()],
            headers: vec![header.clone()],
            changes: envs[..4].iter().cloned().chain([unknown.clone(), forged.clone()]).collect(),
            from: Some(node.node_id()),
        })
        .await
        .unwrap();
    assert_eq!(report.applied, 4);
    assert_eq!(report.new_documents, 1);
    let mut codes: Vec<_> = report.rejected.iter().map(|r| r.code.as_str()).collect();
    codes.sort();
    assert_eq!(codes, ["bad_signature", "unknown_author"]);

    // Sent again, the forgery is refused from memory; the unknown author is
    // checked afresh (its certificate may have arrived since).
    let report = engine
        .ingest(IngestBatch { changes: vec![forged, unknown], from: Some(node.node_id()), ..Default::default() })
        .await
        .unwrap();
    let again: Vec<_> = report.rejected.iter().map(|r| (r.code.as_str(), r.reason.as_str())).collect();
    assert_eq!(again.len(), 2);
    assert!(again.contains(&("bad_signature", "refused before (the same item again)")), "{again:?}");
    assert!(again.iter().any(|(code, reason)| *code == "unknown_author" && !reason.contains("refused before")));

    // Replayed changes are duplicates, the honest fifth change applies.
    let report = engine
        .ingest(IngestBatch { changes: envs.clone(), from: Some(node.node_id()), ..Default::default() })
        .await
        .unwrap();
    assert_eq!((report.applied, report.duplicates), (1, 4));
    let doc = engine.get(id, None).await.unwrap();
    assert_eq!(doc.title.as_deref(), Some("Demande v4"));
    let history = engine.history(id).await.unwrap();
    assert_eq!(history.len(), 5);
    assert_eq!(history[0].received_from, Some(node.node_id().to_string()));
    assert_eq!(history[0].author_commune, Some(cert.commune));

    // This commune is not a writer of the remote document.
    let err = engine
        .update(id, UpdateDoc { fields: fields(json!({"title": "pris"})), ..Default::default() })
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::NotAWriter(_)), "{err}");
    assert!(engine.verify().await.unwrap().failures.is_empty());
    engine.shutdown().await;
    thread.join().unwrap();
}

#[tokio::test]
async fn a_covered_run_is_taken_whole_or_not_at_all_and_verifies_in_the_store() {
    let f = fixture(8);
    let (engine, thread) = start(&f);
    let (cert, header, envs, node) = remote_doc(20, 6);
    let id = header.id();
    let mut run = envs.clone();
    assert_eq!(passerelle_protocol::envelope::cover_runs(&mut run), 5);

    // Its cover forged: the covered changes are refused with it, nothing stored.
    let mut forged = run.clone();
    forged[5].signature.as_mut().unwrap()[7] ^= 1;
    let batch = |changes: Vec<ChangeEnvelope>| IngestBatch {
        certificates: vec![cert.clone()],
        headers: vec![header.clone()],
        changes,
        from: Some(node.node_id()),
    };
    let report = engine.ingest(batch(forged)).await.unwrap();
    assert_eq!(report.applied, 0);
    let mut codes: Vec<_> = report.rejected.iter().map(|r| r.code.as_str()).collect();
    codes.sort();
    assert_eq!(codes, ["bad_signature", "uncovered", "uncovered", "uncovered", "uncovered", "uncovered"]);
    assert!(matches!(engine.get(id, None).await, Err(EngineError::NotFound(_))));

    // Without its cover: refused.
    let report = engine.ingest(batch(run[..5].to_vec())).await.unwrap();
    assert_eq!((report.applied, report.rejected.len()), (0, 5));

    // Its cover refused for a reason that is no forgery (a clock far
    // ahead): the changes it covers are not taken alone either.
    {
        let (cert2, header2, _, node2) = remote_doc(30, 0);
        let mut doc = document::new_document(&node2.node_id());
        let mut ahead = Vec::new();
        for (i, t) in [2_000, 3_000, crate::clock::now_ms() + 3_600_000].into_iter().enumerate() {
            let edit = document::Edit::Text { field: "title".into(), lang: "fr".into(), text: format!("v{i}") };
            let change = document::commit(&mut doc, &[edit], "edit", t).unwrap().unwrap();
            ahead.push(ChangeEnvelope::sign(header2.id(), &change, &node2));
        }
        passerelle_protocol::envelope::cover_runs(&mut ahead);
        let report = engine
            .ingest(IngestBatch {
                certificates: vec![cert2],
                headers: vec![header2],
                changes: ahead,
                from: Some(node2.node_id()),
            })
            .await
            .unwrap();
        let mut codes: Vec<_> = report.rejected.iter().map(|r| r.code.as_str()).collect();
        codes.sort();
        assert_eq!((report.applied, codes), (0, vec!["cover_refused", "cover_refused", "from_the_future"]));
    }

    // Whole: one signature, six changes stored, the store verifies them.
    let report = engine.ingest(batch(run)).await.unwrap();
    assert_eq!((report.applied, report.rejected.len()), (6, 0));
    assert_eq!(engine.get(id, None).await.unwrap().title.as_deref(), Some("Demande v5"));
    assert!(engine.verify().await.unwrap().failures.is_empty());
    engine.shutdown().await;
    thread.join().unwrap();
}

#[tokio::test]
async fn a_certified_member_that_is_not_a_writer_is_refused() {
    let f = fixture(8);
    let (engine, thread) = start(&f);
    let (cert, header, envs, _) = remote_doc(20, 1);
    // Another commune, properly certified, edits the document.
    let (other_cert, _, _, other_node) = remote_doc(30, 0);
    let mut doc = document::new_document(&other_node.node_id());
    doc.apply_changes(vec![passerelle_protocol::automerge::Change::from_bytes(envs[0].change.clone()).unwrap()])
        .unwrap();
    let edit = document::Edit::Text { field: "title".into(), lang: "fr".into(), text: "détourné".into() };
    let change = document::commit(&mut doc, &[edit], "hijack", 5_000).unwrap().unwrap();
    let hijack = ChangeEnvelope::sign(header.id(), &change, &other_node);
    let report = engine
        .ingest(IngestBatch {
            certificates: vec![cert, other_cert],
            headers: vec![header.clone()],
            changes: vec![envs[0].clone(), hijack],
            from: None,
        })
        .await
        .unwrap();
    assert_eq!(report.applied, 1);
    assert_eq!(report.rejected.len(), 1);
    assert_eq!(report.rejected[0].code, "not_a_writer");
    assert_eq!(engine.get(header.id(), None).await.unwrap().title.as_deref(), Some("Demande v0"));
    engine.shutdown().await;
    thread.join().unwrap();
}
