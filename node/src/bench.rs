//! The ingest benchmark (`passerelle bench ingest`): how many signed changes
//! per second one node verifies, applies and makes durable, beside the bare
//! ed25519 rates measured on the same machine in the same run.
//!
//! It prints figures and never fails on them: absolute times vary on shared
//! machines, so compare the ratios printed in one run.

use std::time::Instant;

use passerelle_protocol::certificate::NodeCertificate;
use passerelle_protocol::document::{self, Edit, Scalar};
use passerelle_protocol::envelope::{self, ChangeEnvelope};
use passerelle_protocol::header::{DocHeader, DocKind, Scope, SignedHeader};
use passerelle_protocol::keys::SecretKey;
use serde::Serialize;
use serde_json::json;

use crate::engine::{self, EngineError, IngestBatch};
use crate::home::Home;
use crate::identity;
use crate::store::SledStore;
use crate::views::{CreateDoc, UpdateDoc};

pub mod network;
pub mod scale;
pub mod sync;
pub mod workload;

/// Changes per ingest command: enough to batch signatures and flushes,
/// small enough to keep memory flat.
pub const INGEST_CHUNK: usize = 2_048;
/// Local writes kept in flight so the engine can batch their flushes.
pub const LOCAL_IN_FLIGHT: usize = 64;

/// One printed figure.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    /// Always "passerelle".
    pub system: &'static str,
    /// What was measured.
    pub scenario: String,
    /// Documents in the workload.
    pub n_docs: usize,
    /// Operations measured (signatures, changes).
    pub ops: usize,
    /// Wall time in seconds.
    pub wall_s: f64,
    /// Operations per second.
    pub per_s: f64,
    /// Peak resident memory of this process so far, MB.
    pub rss_mb: f64,
}

fn figure(scenario: &str, n_docs: usize, ops: usize, start: Instant) -> Figure {
    let wall_s = start.elapsed().as_secs_f64();
    Figure {
        system: "passerelle",
        scenario: scenario.to_owned(),
        n_docs,
        ops,
        wall_s,
        per_s: ops as f64 / wall_s.max(1e-9),
        rss_mb: peak_rss_mb(),
    }
}

/// Peak resident set size of this process in MB (Linux; 0 elsewhere).
pub fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// The workload as signed material: headers, certificate and envelopes of
/// `n_docs` documents of 11 changes each, by a fresh commune.
pub struct SignedWorkload {
    /// The author node's certificate.
    pub certificate: NodeCertificate,
    /// One header per document.
    pub headers: Vec<SignedHeader>,
    /// Every change, document by document.
    pub changes: Vec<ChangeEnvelope>,
}

impl std::fmt::Debug for SignedWorkload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SignedWorkload({} docs, {} changes)", self.headers.len(), self.changes.len())
    }
}

/// Builds and signs the workload.
///
/// # Panics
/// If Automerge refuses the workload's own edits (a bug).
pub fn signed_workload(n_docs: usize, seed: u8) -> SignedWorkload {
    let commune = SecretKey::from_seed([seed; 32]);
    let node = SecretKey::from_seed([seed.wrapping_add(1); 32]);
    let certificate = NodeCertificate::issue(&commune, node.node_id(), 0);
    signed_workload_by(n_docs, &commune, &node, certificate)
}

/// The workload signed by a given commune's node.
///
/// # Panics
/// If Automerge refuses the workload's own edits (a bug).
pub fn signed_workload_by(
    n_docs: usize,
    commune: &SecretKey,
    node: &SecretKey,
    certificate: NodeCertificate,
) -> SignedWorkload {
    let mut headers = Vec::with_capacity(n_docs);
    let mut changes = Vec::with_capacity(n_docs * 11);
    for i in 0..n_docs {
        let header = DocHeader::new(
            DocKind::Request,
            commune.commune_id(),
            Scope::Network,
            workload::created_at_ms(i) as u64,
            (i as u128).to_be_bytes(),
        );
        let signed = SignedHeader::sign(header, node, certificate.clone());
        let id = signed.id();
        let mut doc = document::new_document(&node.node_id());
        let t0 = workload::created_at_ms(i);
        let first = document::commit(&mut doc, &workload::initial(i), "create", t0)
            .expect("workload edits apply")
            .expect("changes");
        changes.push(ChangeEnvelope::sign(id, &first, node));
        for (k, edit) in workload::edits(i).into_iter().enumerate() {
            let c = document::commit(&mut doc, &[edit], "edit", t0 + 1_000 * (k as i64 + 1))
                .expect("workload edits apply")
                .expect("changes");
            changes.push(ChangeEnvelope::sign(id, &c, node));
        }
        headers.push(signed);
    }
    SignedWorkload { certificate, headers, changes }
}

fn temp_home(label: &str) -> std::io::Result<Home> {
    let dir = std::env::temp_dir()
        .join(format!("passerelle-bench-{label}-{}", hex::encode(crate::clock::random_bytes::<6>())));
    std::fs::create_dir_all(&dir)?;
    Ok(Home::new(dir))
}

/// Runs the ingest benchmark on `n_docs` documents and calls `emit` with
/// each figure as it is measured.
///
/// # Errors
/// When the temporary node cannot be set up or a write fails.
pub async fn ingest(n_docs: usize, mut emit: impl FnMut(&Figure)) -> Result<(), Box<dyn std::error::Error>> {
    let n_changes = n_docs * 11;

    // Bare ed25519 rates: the ceilings.
    let key = SecretKey::from_seed([42; 32]);
    let msgs: Vec<Vec<u8>> =
        (0..n_changes).map(|i| format!("passerelle bench message {i} {}", "x".repeat(200)).into_bytes()).collect();
    let start = Instant::now();
    let sigs: Vec<[u8; 64]> = msgs.iter().map(|m| key.sign(m)).collect();
    emit(&figure("ed25519-sign", n_docs, n_changes, start));
    let public = key.public();
    let start = Instant::now();
    for (m, s) in msgs.iter().zip(&sigs) {
        passerelle_protocol::keys::verify(&public, m, s)?;
    }
    emit(&figure("ed25519-verify", n_docs, n_changes, start));

    // Building and signing the workload (Automerge commit + sign).
    let start = Instant::now();
    let work = signed_workload(n_docs, 7);
    emit(&figure("workload-build-and-sign", n_docs, n_changes, start));
    let start = Instant::now();
    let results = envelope::verify_signatures(&work.changes);
    assert!(results.iter().all(Result::is_ok), "the workload's own signatures verify");
    emit(&figure("envelope-verify-batched", n_docs, n_changes, start));

    // Remote ingest: verify, apply, make durable, in chunks.
    let home = temp_home("ingest")?;
    identity::init(&home, "Bench", "BE", 0)?;
    let id = identity::load(&home)?;
    let (engine, thread) = engine::spawn(SledStore::open(&home.store())?, &id)?;
    let start = Instant::now();
    let applied = ingest_workload(&engine, &work).await?;
    emit(&figure("ingest-remote-verify-apply-durable", n_docs, applied, start));
    engine.shutdown().await;
    let _ = thread.join();

    // The same, as a peer sends it: one signature per document's run.
    let covered_home = temp_home("ingest-covered")?;
    identity::init(&covered_home, "Bench", "BE", 0)?;
    let covered_id = identity::load(&covered_home)?;
    let (engine, thread) = engine::spawn(SledStore::open(&covered_home.store())?, &covered_id)?;
    let start = Instant::now();
    let applied = ingest_chunks(&engine, &work, true).await?;
    emit(&figure("ingest-remote-covered-runs", n_docs, applied, start));
    engine.shutdown().await;
    let _ = thread.join();
    let _ = std::fs::remove_dir_all(covered_home.root());
    drop(work);

    // Local writes through the engine: schema checks, Automerge, sign,
    // durable. Like people at work, each writer creates a document then
    // edits it 10 times; LOCAL_IN_FLIGHT writers run at once.
    let local_docs = n_docs.min(2_000);

    // Their ceiling on one core: the same Automerge commits alone (no
    // schema, signature, store or view).
    let start = Instant::now();
    let mut commits = 0;
    for i in 0..local_docs {
        let mut doc = document::new_document(&id.node_id());
        let title = Edit::Text { field: "title".into(), lang: "fr".into(), text: workload::title(i) };
        let description = Edit::Text { field: "description".into(), lang: "fr".into(), text: workload::description(i) };
        let status = Edit::Status { code: "open".into(), at_ms: 0, by: String::new(), note: None };
        commits += usize::from(document::commit(&mut doc, &[title, description, status], "create", 0)?.is_some());
        for round in 0..10 {
            let deadline =
                Edit::Put { field: "deadline".into(), value: Scalar::Str(format!("2026-01-{:02}", round + 10)) };
            commits += usize::from(document::commit(&mut doc, &[deadline], "update", 0)?.is_some());
        }
    }
    emit(&figure("local-automerge-commit-alone", local_docs, commits, start));

    let (engine, thread) = engine::spawn(SledStore::open(&home.store())?, &id)?;
    let start = Instant::now();
    let mut local_changes = 0;
    for batch in (0..local_docs).collect::<Vec<_>>().chunks(LOCAL_IN_FLIGHT) {
        let futures = batch.iter().map(|&i| {
            let engine = engine.clone();
            async move {
                let mut fields = serde_json::Map::new();
                fields.insert("title".into(), json!(workload::title(i)));
                fields.insert("description".into(), json!(workload::description(i)));
                let doc = engine.create(CreateDoc { kind: "request".into(), fields, ..CreateDoc::default() }).await?;
                for round in 0..10 {
                    let mut fields = serde_json::Map::new();
                    fields.insert("deadline".into(), json!(format!("2026-01-{:02}", round + 10)));
                    engine.update(doc.id, UpdateDoc { fields, ..UpdateDoc::default() }).await?;
                }
                Ok::<_, EngineError>(11)
            }
        });
        for r in join_all(futures).await {
            local_changes += r?;
        }
    }
    emit(&figure("local-write-sign-durable", local_docs, local_changes, start));
    engine.shutdown().await;
    let _ = thread.join();
    let _ = std::fs::remove_dir_all(home.root());
    Ok(())
}

/// Feeds a signed workload to an engine in chunks of [`INGEST_CHUNK`]
/// changes (with the headers they need); returns the changes applied.
///
/// # Errors
/// When the engine fails or refuses part of the workload.
pub async fn ingest_workload(
    engine: &crate::engine::EngineHandle,
    work: &SignedWorkload,
) -> Result<usize, Box<dyn std::error::Error>> {
    ingest_chunks(engine, work, false).await
}

/// [`ingest_workload`], each chunk sent as the wire carries it when
/// `covered`: one signature per run of a document's changes in the chunk.
async fn ingest_chunks(
    engine: &crate::engine::EngineHandle,
    work: &SignedWorkload,
    covered: bool,
) -> Result<usize, Box<dyn std::error::Error>> {
    let mut applied = 0;
    let mut docs_done = 0;
    for chunk in work.changes.chunks(INGEST_CHUNK) {
        let last_doc = chunk.last().map(|c| c.doc);
        let mut headers = Vec::new();
        while docs_done < work.headers.len() {
            let h = &work.headers[docs_done];
            headers.push(h.clone());
            docs_done += 1;
            if Some(h.id()) == last_doc {
                break;
            }
        }
        let mut changes = chunk.to_vec();
        if covered {
            envelope::cover_runs(&mut changes);
        }
        let report = engine
            .ingest(IngestBatch { certificates: vec![work.certificate.clone()], headers, changes, from: None })
            .await?;
        if !report.rejected.is_empty() {
            return Err(
                format!("ingest refused {} changes: {:?}", report.rejected.len(), report.rejected.first()).into()
            );
        }
        applied += report.applied as usize;
    }
    Ok(applied)
}

async fn join_all<F, T>(futures: impl Iterator<Item = F>) -> Vec<Result<T, EngineError>>
where
    F: std::future::Future<Output = Result<T, EngineError>> + Send + 'static,
    T: Send + 'static,
{
    let handles: Vec<_> = futures.collect();
    let mut out = Vec::with_capacity(handles.len());
    // The engine batches whatever is queued; polling them concurrently keeps
    // LOCAL_IN_FLIGHT commands queued at once.
    let mut set = tokio::task::JoinSet::new();
    for (i, f) in handles.into_iter().enumerate() {
        set.spawn(async move { (i, f.await) });
    }
    let mut results: Vec<Option<Result<T, EngineError>>> = (0..set.len()).map(|_| None).collect();
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok((i, r)) => results[i] = Some(r),
            Err(_) => out.push(Err(EngineError::Stopped)),
        }
    }
    out.extend(results.into_iter().flatten());
    out
}
