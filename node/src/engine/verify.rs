//! `verify`: re-check every stored header and change as a receiver would,
//! naming each one that fails. Used after a suspected tampering or disk
//! fault, and by auditors.

use passerelle_protocol::automerge::Change;

use super::EngineError;
use super::worker::Worker;
use crate::store::{Store, StoreError};
use crate::views::{ApartDoc, ApartNote, VerifyFailure, VerifyReport};

impl<S: Store> Worker<S> {
    pub(crate) fn verify(&self) -> Result<VerifyReport, EngineError> {
        let apart = self
            .replica
            .peers()
            .flat_map(|p| {
                self.replica.kept_apart(&p.node).into_iter().map(|(doc, a)| ApartDoc {
                    peer: p.node,
                    doc,
                    note: ApartNote::from(&a),
                })
            })
            .collect();
        let mut report = VerifyReport {
            documents: 0,
            changes: 0,
            failures: Vec::new(),
            damaged: self.store.damaged_records()?,
            apart,
        };
        for id in self.store.doc_ids()? {
            report.documents += 1;
            let mut fail = |seq: Option<u64>, hash: Option<String>, reason: String| {
                report.failures.push(VerifyFailure { doc: id, seq, hash, reason });
            };
            let header = match self.store.header(&id) {
                Ok(Some(h)) => h,
                Ok(None) => continue,
                Err(StoreError::Corrupt { reason, .. }) => {
                    fail(None, None, format!("header: {reason}"));
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            if let Err(e) = header.verify_for(&id) {
                fail(None, None, format!("header: {e}"));
            }
            // Signatures are checked over the document's whole log, so a
            // change stored covered is checked with the run that covers it.
            let mut stored = Vec::new();
            for (seq, record) in self.store.changes(&id, 0)? {
                report.changes += 1;
                match record {
                    Ok(s) => stored.push((seq, s)),
                    Err(e) => fail(Some(seq), None, format!("undecodable record: {e}")),
                }
            }
            let envelopes: Vec<_> = stored.iter().map(|(_, s)| s.envelope.clone()).collect();
            let seals = passerelle_protocol::envelope::verify_signatures(&envelopes);
            let mut results = Vec::with_capacity(stored.len());
            for ((seq, stored), seal) in stored.into_iter().zip(seals) {
                let hash = Change::from_bytes(stored.envelope.change.clone()).ok().map(|c| c.hash().to_string());
                // Covered changes are judged below, with the whole log.
                let seal = if stored.envelope.signature.is_none() { Ok(()) } else { seal };
                let result = seal.and_then(|()| {
                    let v = stored.envelope.validate_signed(&id, &header.header, self.replica.book(), i64::MAX)?;
                    // A change accepted before a revocation reached this node
                    // but not kept by it is named too: history cannot be
                    // rewritten, so an auditor must see it.
                    match self.replica.roster() {
                        Some(roster) if !roster.change_allowed(&v.envelope.author, &v.commune, &v.change.hash().0) => {
                            Err(passerelle_protocol::envelope::ValidationFailure::Revoked(v.envelope.author.short()))
                        }
                        _ => Ok(()),
                    }
                });
                results.push((seq, hash, result));
            }
            // A covered change holds only if a cover that holds is stored
            // (the whole log, without the bound a peer's batch has).
            let holds: Vec<bool> =
                envelopes.iter().zip(&results).map(|(e, (_, _, r))| e.signature.is_some() && r.is_ok()).collect();
            let covered = passerelle_protocol::envelope::covered_within(&envelopes, &holds, usize::MAX);
            for (i, (seq, hash, result)) in results.into_iter().enumerate() {
                let result = match result {
                    Ok(()) if envelopes[i].signature.is_none() && covered.binary_search(&i).is_err() => {
                        Err(passerelle_protocol::envelope::ValidationFailure::Uncovered(envelopes[i].author.short()))
                    }
                    r => r,
                };
                if let Err(e) = result {
                    fail(Some(seq), hash, e.to_string());
                }
            }
        }
        if !report.damaged.is_empty() {
            tracing::warn!(
                damaged = report.damaged.len(),
                "verify: damaged records (run `passerelle repair` with the node stopped)"
            );
        }
        if report.failures.is_empty() {
            tracing::info!(documents = report.documents, changes = report.changes, "verify: every signature holds");
        } else {
            tracing::warn!(failures = report.failures.len(), "verify found failures");
        }
        Ok(report)
    }
}
