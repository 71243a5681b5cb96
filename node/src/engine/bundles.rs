//! Offline bundles: export what a member lacks as far as this node knows,
//! import a bundle like a sync.
//!
//! "As far as this node knows": the last time one of the recipient's nodes
//! was in sync with this node, it held every document both may hold; a
//! bundle carries the changes this node stored after that (all of them if
//! they never synced, or with `--all`), of the documents the recipient may
//! receive (scopes apply exactly as on the wire), with their headers, their
//! authors' certificates and the network's statements. Importing verifies
//! the bundle's signature and recipient, adds the statements first, then
//! ingests the rest like changes from a peer; importing twice only finds
//! duplicates.

use std::collections::{BTreeMap, BTreeSet};

use passerelle_protocol::bundle::{Bundle, BundleContents};
use passerelle_protocol::ids::{CommuneId, DocId, NodeId};
use serde::{Deserialize, Serialize};

use super::ingest::IngestReport;
use super::worker::Worker;
use super::{EngineError, FieldError, IngestBatch};
use crate::clock;
use crate::store::Store;

/// What an export put in a bundle.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BundleSummary {
    /// The commune it is for.
    pub recipient: CommuneId,
    /// Its name.
    pub recipient_name: String,
    /// Changes stored here after this time are in it (0: everything).
    pub since_ms: u64,
    /// Documents it touches.
    pub documents: usize,
    /// Signed changes in it.
    pub changes: usize,
    /// Its size in bytes.
    pub bytes: usize,
}

/// What an import did.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ImportReport {
    /// The node that made the bundle.
    pub signer: NodeId,
    /// When it was made (ms).
    pub created_ms: u64,
    /// Statements new to this node.
    pub statements: usize,
    /// What ingesting its documents did.
    pub ingest: IngestReport,
}

fn refused(reason: impl Into<String>) -> EngineError {
    EngineError::Invalid(FieldError::Invalid { field: "bundle".into(), reason: reason.into() })
}

impl<S: Store> Worker<S> {
    /// Builds a signed bundle of what `recipient` lacks (everything it may
    /// hold when `all`).
    pub(crate) fn export_bundle(
        &mut self,
        recipient: &str,
        all: bool,
    ) -> Result<(Vec<u8>, BundleSummary), EngineError> {
        let recipient = self.find_member(recipient)?;
        let roster = self.replica.roster().ok_or(EngineError::NoNetwork)?;
        if recipient == self.commune {
            return Err(refused("a bundle is for another commune"));
        }
        let recipient_hex = recipient.to_string();
        let since_ms = if all {
            0
        } else {
            self.replica
                .peers()
                .filter(|p| p.commune.as_deref() == Some(recipient_hex.as_str()))
                .filter_map(|p| p.last_sync_ms)
                .max()
                .unwrap_or(0)
                .max(0) as u64
        };
        let mut headers = Vec::new();
        let mut changes = Vec::new();
        let mut authors = BTreeSet::new();
        let mut documents = BTreeMap::<DocId, usize>::new();
        for id in self.store.doc_ids()? {
            if !self.replica.index().may_share(&id, &recipient, roster) {
                continue;
            }
            let mut picked = Vec::new();
            for (_, record) in self.store.changes(&id, 0)? {
                match record {
                    Ok(stored) if stored.received_ms.max(0) as u64 > since_ms => picked.push(stored.envelope),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(doc = %id.short(), error = %e, "damaged change left out of the bundle"),
                }
            }
            if picked.is_empty() {
                continue;
            }
            // A run's changes were stored together: one signature covers it.
            passerelle_protocol::envelope::cover_runs(&mut picked);
            let Some(header) = self.store.header(&id)? else { continue };
            authors.extend(picked.iter().map(|c| c.author));
            documents.insert(id, picked.len());
            headers.push(header);
            changes.extend(picked);
        }
        let certificates = authors.iter().filter_map(|a| self.replica.book().get(a).cloned()).collect();
        let contents = BundleContents {
            network: roster.network(),
            recipient,
            created_ms: clock::now_ms() as u64,
            since_ms,
            statements: roster.statements().cloned().collect(),
            certificates,
            headers,
            changes,
        };
        let summary_changes = contents.changes.len();
        let bytes = Bundle::sign(contents, &self.node_key, self.certificate.clone()).encode();
        let summary = BundleSummary {
            recipient,
            recipient_name: roster.member(&recipient).map(|m| m.name.clone()).unwrap_or_default(),
            since_ms,
            documents: documents.len(),
            changes: summary_changes,
            bytes: bytes.len(),
        };
        tracing::info!(recipient = %recipient.short(), changes = summary.changes, bytes = summary.bytes, "bundle exported");
        Ok((bytes, summary))
    }

    /// Verifies a bundle and applies it like a sync.
    pub(crate) fn import_bundle(&mut self, bytes: &[u8]) -> Result<ImportReport, EngineError> {
        let bundle = Bundle::decode_verified(bytes).map_err(|e| refused(e.to_string()))?;
        let roster = self.replica.roster().ok_or(EngineError::NoNetwork)?;
        let c = bundle.contents;
        if c.network != roster.network() {
            return Err(refused(format!(
                "this bundle is for network {}, this node is in network {}",
                c.network.short(),
                roster.network().short()
            )));
        }
        if c.recipient != self.commune {
            let name = roster.member(&c.recipient).map_or_else(|| c.recipient.short(), |m| m.name.clone());
            return Err(refused(format!("this bundle is for {name}, not for this commune")));
        }
        // The signer must be a member's node that nobody revoked, judged with
        // the bundle's statements added, before any of them is kept.
        let mut with_bundle = roster.clone();
        with_bundle.insert_all(c.statements.clone());
        if let Err(reason) = with_bundle.node_admitted(&bundle.signer.node, &bundle.signer.commune) {
            return Err(refused(format!("the bundle was made by a node that may not speak here: {reason}")));
        }
        let before = roster.len();
        let now = clock::now_ms();
        self.replicate(|r, docs| r.add_statements(now, c.statements, None, docs));
        let statements = self.replica.roster().map_or(0, |r| r.len() - before);
        let mut certificates = c.certificates;
        certificates.push(bundle.signer.clone());
        let ingest = self.ingest(IngestBatch { certificates, headers: c.headers, changes: c.changes, from: None })?;
        self.drive()?;
        self.wrote = true;
        tracing::info!(
            signer = %bundle.signer.node.short(),
            applied = ingest.applied,
            duplicates = ingest.duplicates,
            refused = ingest.rejected.len(),
            "bundle imported"
        );
        Ok(ImportReport { signer: bundle.signer.node, created_ms: c.created_ms, statements, ingest })
    }
}
