//! Ingesting signed material from elsewhere (a peer, a bundle, a benchmark):
//! verify everything first, in batches, then apply each document's new
//! changes in one Automerge call and store them in one atomic write.

use std::collections::{BTreeMap, HashMap, HashSet};

use passerelle_protocol::envelope::{self, ChangeEnvelope, VerifiedChange};
use passerelle_protocol::header::SignedHeader;
use passerelle_protocol::ids::DocId;
use passerelle_protocol::sync::audience::Audience;
use serde::{Deserialize, Serialize};

use super::docs::{refreshed_meta, snapshot_due};
use super::refusals;
use super::worker::Worker;
use super::{EngineError, IngestBatch};
use crate::clock;
use crate::store::{DocMeta, Store, StoredChange, WriteOp};
use passerelle_protocol::replica::Announcement;

/// An item that was refused, and why.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Rejection {
    /// The document concerned.
    pub doc: String,
    /// A stable reason code (see `ValidationFailure::code`).
    pub code: String,
    /// The reason in words.
    pub reason: String,
}

/// What an ingest did.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct IngestReport {
    /// Changes verified and stored.
    pub applied: u64,
    /// Changes already held.
    pub duplicates: u64,
    /// Documents seen here for the first time.
    pub new_documents: u64,
    /// What was refused.
    pub rejected: Vec<Rejection>,
}

impl<S: Store> Worker<S> {
    /// Why the network refuses a document's header, if it does: its owner
    /// is not a member, or the owner's role may not own that kind.
    fn header_refusal(&self, header: &SignedHeader) -> Option<(&'static str, String)> {
        let roster = self.replica.roster()?;
        let owner = &header.header.owner;
        let Some(role) = roster.role(owner) else {
            return Some(("not_a_member", format!("owner commune {} is not a member of the network", owner.short())));
        };
        if roster.commune_of_node(&header.certificate.node) != Some(*owner) {
            return Some((
                "not_registered",
                format!("the header's node key {} is not registered to its owner", header.certificate.node.short()),
            ));
        }
        if !role.may_own(&header.header.kind) {
            return Some((
                "role_forbids_kind",
                format!("a member with role {role} may not own a {} document", header.header.kind),
            ));
        }
        None
    }

    pub(crate) fn ingest(&mut self, batch: IngestBatch) -> Result<IngestReport, EngineError> {
        let now = clock::now_ms();
        let from = batch.from.map(|n| n.to_string());
        let mut report = IngestReport::default();
        // Stable refusals (for what the item is, not for what this node
        // knows yet) are remembered by signature: sent again, they cost a lookup.
        // (A covered change has no signature of its own: it is judged again.)
        let mut refused_sigs: Vec<(Option<[u8; 64]>, String)> = Vec::new();
        let mut reject = |doc: String, code: &str, reason: String| {
            report.rejected.push(Rejection { doc, code: code.to_owned(), reason });
        };

        // Certificates that came with the batch (a bundle, a benchmark);
        // those of a peer's messages are in the core's book already.
        for cert in batch.certificates {
            if let Err(e) = cert.verify() {
                reject(String::new(), "bad_certificate", format!("certificate of node {}: {e}", cert.node.short()));
                continue;
            }
            self.replica.learn_certificate(cert);
        }

        let mut new_headers: HashMap<DocId, SignedHeader> = HashMap::new();
        for header in batch.headers {
            let id = header.id();
            if new_headers.contains_key(&id) || self.store.header(&id)?.is_some() {
                continue;
            }
            match header.verify_with(self.replica.book()) {
                Ok(()) if let Some(reason) = self.header_refusal(&header) => {
                    reject(id.to_string(), reason.0, reason.1);
                }
                Ok(()) => {
                    // The header's own certificate is a valid certificate too.
                    self.replica.learn_certificate(header.certificate.clone());
                    new_headers.insert(id, header);
                }
                Err(e) => reject(id.to_string(), "bad_header", e.to_string()),
            }
        }

        let (fresh, seen): (Vec<ChangeEnvelope>, Vec<ChangeEnvelope>) = batch
            .changes
            .into_iter()
            .partition(|e| e.signature.as_ref().is_none_or(|s| self.refusals.known(s).is_none()));
        for env in seen {
            let code = env.signature.as_ref().and_then(|s| self.refusals.known(s)).unwrap_or("refused").to_owned();
            reject(env.doc.to_string(), &code, "refused before (the same item again)".into());
        }
        let signatures = envelope::verify_signatures(&fresh);
        let mut by_doc: BTreeMap<DocId, Vec<ChangeEnvelope>> = BTreeMap::new();
        for (env, sig) in fresh.into_iter().zip(signatures) {
            match sig {
                Ok(()) => by_doc.entry(env.doc).or_default().push(env),
                Err(e) => {
                    refused_sigs.push((env.signature, e.code().to_owned()));
                    reject(env.doc.to_string(), e.code(), e.to_string());
                }
            }
        }

        let node_id = self.node_id;
        for (id, envelopes) in by_doc {
            let new_header = new_headers.remove(&id);
            let header = match &new_header {
                Some(h) => h.clone(),
                None => match self.store.header(&id)? {
                    Some(h) => h,
                    None => {
                        reject(id.to_string(), "unknown_document", "no header known for this document".into());
                        continue;
                    }
                },
            };
            // Stored in causal order, so that a cover always follows what it
            // covers (where a frame cut looks for it when this node serves them).
            let order = envelope::causal_order(&envelopes);
            let envelopes: Vec<ChangeEnvelope> = if order.iter().enumerate().all(|(k, i)| k == *i) {
                envelopes
            } else {
                let mut slots: Vec<Option<ChangeEnvelope>> = envelopes.into_iter().map(Some).collect();
                order.into_iter().filter_map(|i| slots[i].take()).collect()
            };
            // A covered change stands only if its cover is accepted too.
            let run = envelopes.iter().any(|e| e.signature.is_none()).then(|| envelopes.clone());
            let mut accepted = vec![false; envelopes.len()];
            let mut verified_at: Vec<usize> = Vec::new();
            let mut seen = HashSet::new();
            let mut verified: Vec<VerifiedChange> = Vec::new();
            for (at, env) in envelopes.into_iter().enumerate() {
                let signature = env.signature;
                let checked =
                    env.validate_signed(&id, &header.header, self.replica.book(), now).and_then(|v| {
                        match self.replica.roster() {
                            Some(roster) => ChangeEnvelope::check_membership(&v, roster).map(|()| v),
                            None => Ok(v),
                        }
                    });
                match checked {
                    Ok(v) => {
                        accepted[at] = true;
                        let hash = v.change.hash().0;
                        // A document new here has no stored change to compare with.
                        let stored = new_header.is_none() && self.store.has_change(&hash)?;
                        if !seen.insert(hash) || stored {
                            report.duplicates += 1;
                        } else {
                            verified.push(v);
                            verified_at.push(at);
                        }
                    }
                    Err(e) => {
                        refused_sigs.push((signature, e.code().to_owned()));
                        reject(id.to_string(), e.code(), e.to_string());
                    }
                }
            }
            if let Some(run) = run {
                let holds: Vec<bool> = run.iter().zip(&accepted).map(|(e, ok)| *ok && e.signature.is_some()).collect();
                let covered = envelope::covered(&run, &holds);
                let orphans: HashSet<usize> = (0..run.len())
                    .filter(|&i| accepted[i] && run[i].signature.is_none() && covered.binary_search(&i).is_err())
                    .collect();
                if !orphans.is_empty() {
                    let before = verified.len();
                    let mut k = 0;
                    verified.retain(|_| {
                        k += 1;
                        !orphans.contains(&verified_at[k - 1])
                    });
                    for _ in verified.len()..before {
                        reject(id.to_string(), "cover_refused", "the change that covers it was refused".into());
                    }
                }
            }
            // A document is only kept once one of its changes verified:
            // a header alone would be an empty shell nobody can fill.
            if verified.is_empty() {
                continue;
            }
            let mut ops = Vec::with_capacity(verified.len() + 3);
            // An existing document is taken out of the cache while changes are
            // applied: if anything fails it stays out, and the next read
            // reloads it from the store, so memory never runs ahead of disk.
            let (mut doc, meta) = match &new_header {
                Some(h) => {
                    ops.push(WriteOp::Header(h.clone()));
                    report.new_documents += 1;
                    (passerelle_protocol::document::new_document(&node_id), DocMeta::new(id, &h.header))
                }
                None => {
                    let loaded = self.cache.take(&self.store, &node_id, &id)?.ok_or(EngineError::NotFound(id))?;
                    (loaded.doc, loaded.meta)
                }
            };
            let latest = verified.iter().map(|v| v.change.timestamp()).max().unwrap_or(meta.updated_ms);
            let changes: Vec<_> = verified.iter().map(|v| v.change.clone()).collect();
            if let Err(e) = doc.apply_changes(changes) {
                reject(id.to_string(), "bad_change", format!("automerge refused the changes: {e}"));
                continue;
            }
            let fresh: Vec<ChangeEnvelope> = verified.iter().map(|v| v.envelope.clone()).collect();
            let added = fresh.len() as u64;
            for (i, v) in verified.into_iter().enumerate() {
                ops.push(WriteOp::Change {
                    doc: id,
                    seq: meta.changes + i as u64,
                    hash: v.change.hash().0,
                    change: StoredChange { envelope: v.envelope, received_ms: now, from: from.clone() },
                });
            }
            let mut meta = refreshed_meta(&meta, &header.header, &doc, added, latest);
            ops.extend(snapshot_due(id, &mut meta, &doc));
            ops.push(WriteOp::Meta(meta.clone()));
            // One write per document: a frame's documents in one sled batch
            // were measured slower (3.3k against 4.1k changes/s in `bench
            // ingest`) and held more memory (374 against 218 MB).
            self.store.write(ops)?;
            report.applied += added;
            self.replica.doc_changed(meta.id, Audience::of(&header.header), meta.head_bytes(), meta.stored_ms);
            // Relay: what is new here goes on to the other peers once durable.
            self.announcements.push(Announcement {
                from: batch.from,
                new_docs: new_header.into_iter().collect(),
                changes: fresh,
            });
            self.cache.insert(id, header, meta, doc);
        }
        self.metrics.changes_remote += report.applied;
        self.metrics.changes_duplicate += report.duplicates;
        for (signature, code) in refused_sigs {
            if let Some(signature) = signature
                && refusals::is_stable(&code)
            {
                self.refusals.remember(signature, &code);
            }
        }
        for r in &report.rejected {
            *self.metrics.rejected.entry(r.code.clone()).or_default() += 1;
            self.refusals.log(now, &r.doc, &r.code, &r.reason);
        }
        Ok(report)
    }
}
