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
            for (seq, record) in self.store.changes(&id, 0)? {
                report.changes += 1;
                let stored = match record {
                    Ok(s) => s,
                    Err(e) => {
                        fail(Some(seq), None, format!("undecodable record: {e}"));
                        continue;
                    }
                };
                let hash = Change::from_bytes(stored.envelope.change.clone()).ok().map(|c| c.hash().to_string());
                let result = stored.envelope.check_signature().and_then(|()| {
                    let v =
                        stored.envelope.clone().validate_signed(&id, &header.header, self.replica.book(), i64::MAX)?;
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
