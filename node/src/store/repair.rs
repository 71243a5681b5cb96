//! Damaged records: finding them (`audit`, what `verify` reports) and
//! setting them aside (`repair`, on a stopped node).
//!
//! A disk fault or a bug can leave a record that does not decode. The node
//! still starts: lists of records skip what does not decode, with a
//! warning. `repair` then moves every damaged record into the `quarantine`
//! tree (kept for inspection, never read by the node), rebuilds a
//! document's metadata from its header and changes when only the metadata
//! was damaged, and drops a document whose header, snapshot or changes
//! were damaged as a whole (into the quarantine too), so that the next
//! reconciliation fetches it again from the peers.

use std::collections::{BTreeMap, BTreeSet};

use passerelle_protocol::certificate::NodeCertificate;
use passerelle_protocol::header::SignedHeader;
use passerelle_protocol::heartbeat::PulseChain;
use passerelle_protocol::ids::DocId;
use passerelle_protocol::network::SignedStatement;
use serde::{Deserialize, Serialize};

use super::sled_store::{SledStore, prefix};
use super::{DocMeta, InvitationRecord, PeerRecord, StoreError, StoredChange, StoredHeartbeat};

/// A record that does not decode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DamagedRecord {
    /// What it should hold (`header`, `metadata`, `change`, `peer`, ...).
    pub kind: String,
    /// Its key, hex.
    pub key: String,
    /// Why it does not decode.
    pub reason: String,
}

/// What `repair` did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepairReport {
    /// The damaged records found.
    pub damaged: Vec<DamagedRecord>,
    /// Documents whose metadata was rebuilt from their header and changes.
    pub rebuilt: Vec<DocId>,
    /// Documents set aside whole, to be fetched again from the peers.
    pub dropped: Vec<DocId>,
    /// Records moved into the quarantine by this repair.
    pub quarantined: u64,
}

/// What a record under `p` holds, and whether `value` decodes as one.
fn check(p: u8, key: &[u8], value: &[u8]) -> Result<(), (&'static str, String)> {
    let doc_key = |kind: &'static str, len: usize| {
        if key.len() == len { Ok(()) } else { Err((kind, format!("key of {} bytes, not {len}", key.len()))) }
    };
    let r = |kind: &'static str, res: Result<(), String>| res.map_err(|e| (kind, e));
    match p {
        prefix::HEADER => {
            doc_key("header", 33)?;
            r("header", SignedHeader::decode(value).map(drop).map_err(|e| e.to_string()))
        }
        prefix::META => {
            doc_key("metadata", 33)?;
            r("metadata", serde_json::from_slice::<DocMeta>(value).map(drop).map_err(|e| e.to_string()))
        }
        prefix::CHANGE => {
            doc_key("change", 41)?;
            r("change", StoredChange::decode(value).map(drop).map_err(|e| e.to_string()))
        }
        prefix::SNAPSHOT => {
            doc_key("snapshot", 33)?;
            let Some(saved) = value.get(8..) else { return Err(("snapshot", "short snapshot".into())) };
            r("snapshot", passerelle_protocol::automerge::Automerge::load(saved).map(drop).map_err(|e| e.to_string()))
        }
        prefix::INDEX => r("index", if value.len() == 40 { Ok(()) } else { Err("bad index entry".into()) }),
        prefix::CERT => r("certificate", NodeCertificate::decode(value).map(drop).map_err(|e| e.to_string())),
        prefix::PEER => r("peer", serde_json::from_slice::<PeerRecord>(value).map(drop).map_err(|e| e.to_string())),
        prefix::STATEMENT => r("statement", SignedStatement::decode(value).map(drop).map_err(|e| e.to_string())),
        prefix::INVITATION => {
            r("invitation", serde_json::from_slice::<InvitationRecord>(value).map(drop).map_err(|e| e.to_string()))
        }
        prefix::QUEUE => r("queued", super::sled_store::decode_queued(key, value).map(drop).map_err(|e| e.to_string())),
        prefix::QUEUE_INDEX => r("queue index", if value.len() == 8 { Ok(()) } else { Err("not a priority".into()) }),
        prefix::HEARTBEAT => r("heartbeat", StoredHeartbeat::decode(value).map(drop).map_err(|e| e.to_string())),
        prefix::CHAIN => r("pulse chain", PulseChain::decode(value).map(drop).map_err(|e| e.to_string())),
        other => Err(("unknown", format!("no record type {:?}", other as char))),
    }
}

/// The document a header, metadata, snapshot or change key belongs to (a
/// key of the wrong length belongs to none: it is set aside alone).
fn doc_of(key: &[u8]) -> Option<DocId> {
    let len = match *key.first()? {
        prefix::HEADER | prefix::META | prefix::SNAPSHOT => 33,
        prefix::CHANGE => 41,
        _ => return None,
    };
    let bytes: [u8; 32] = key.get(1..33)?.try_into().ok()?;
    (key.len() == len).then(|| DocId::from_bytes(bytes))
}

impl SledStore {
    /// Every record that does not decode, in key order (what
    /// [`super::Store::damaged_records`] answers).
    ///
    /// # Errors
    /// [`StoreError::Backend`] when the database cannot be read.
    pub(super) fn audit(&self) -> Result<Vec<DamagedRecord>, StoreError> {
        let mut damaged = Vec::new();
        for item in self.raw_tree().iter() {
            let (k, v) = item.map_err(|e| StoreError::Backend(e.to_string()))?;
            let Some(&p) = k.first() else {
                damaged.push(DamagedRecord { kind: "unknown".into(), key: String::new(), reason: "empty key".into() });
                continue;
            };
            if let Err((kind, reason)) = check(p, &k, &v) {
                damaged.push(DamagedRecord { kind: kind.into(), key: hex::encode(&k), reason });
            }
        }
        Ok(damaged)
    }

    /// Sets every damaged record aside (see the module's documentation) and
    /// flushes. Run it on a stopped node: the store is locked by a running one.
    ///
    /// # Errors
    /// [`StoreError`] when the database cannot be read or written.
    pub fn repair(&self) -> Result<RepairReport, StoreError> {
        let backend = |e: sled::Error| StoreError::Backend(e.to_string());
        let quarantine = self.db().open_tree("quarantine").map_err(backend)?;
        let tree = self.raw_tree();
        let mut report = RepairReport { damaged: self.audit()?, ..RepairReport::default() };
        let mut docs_hit: BTreeMap<DocId, BTreeSet<u8>> = BTreeMap::new();
        for d in &report.damaged {
            let key = hex::decode(&d.key).unwrap_or_default();
            match doc_of(&key) {
                Some(doc) => {
                    docs_hit.entry(doc).or_default().insert(key[0]);
                }
                None => {
                    // Into the quarantine first: a crash in between loses nothing.
                    if let Some(v) = tree.get(&key).map_err(backend)? {
                        quarantine.insert(&key, v).map_err(backend)?;
                        tree.remove(&key).map_err(backend)?;
                        report.quarantined += 1;
                    }
                }
            }
        }
        for (doc, prefixes) in docs_hit {
            let meta_key = super::sled_store::keys::prefixed(prefix::META, doc.as_bytes());
            let snapshot_key = super::sled_store::keys::prefixed(prefix::SNAPSHOT, doc.as_bytes());
            let only = |p: u8| prefixes.iter().all(|q| *q == p);
            if only(prefix::SNAPSHOT) {
                // A snapshot is a cache of the changes, all kept: drop it alone.
                if let Some(v) = tree.get(&snapshot_key).map_err(backend)? {
                    quarantine.insert(&snapshot_key, v).map_err(backend)?;
                    tree.remove(&snapshot_key).map_err(backend)?;
                    report.quarantined += 1;
                }
                if self.rebuild_meta(&doc)? {
                    report.rebuilt.push(doc);
                }
                continue;
            }
            let damaged_meta = tree.get(&meta_key).map_err(backend)?;
            if let Some(v) = damaged_meta.filter(|_| only(prefix::META)) {
                quarantine.insert(&meta_key, v).map_err(backend)?;
            }
            if only(prefix::META) && self.rebuild_meta(&doc)? {
                report.quarantined += 1;
                report.rebuilt.push(doc);
            } else {
                report.quarantined += self.set_aside(&doc, &quarantine)?;
                report.dropped.push(doc);
            }
        }
        self.db().flush().map_err(backend)?;
        Ok(report)
    }

    /// Rebuilds a document's metadata from its header and changes; false
    /// when those do not decode or apply either.
    fn rebuild_meta(&self, doc: &DocId) -> Result<bool, StoreError> {
        use super::Store;
        let Ok(Some(header)) = self.header(doc) else { return Ok(false) };
        let records = self.changes(doc, 0)?;
        let mut automerge = passerelle_protocol::automerge::Automerge::new();
        let mut latest = header.header.created_ms as i64;
        let mut changes = Vec::with_capacity(records.len());
        let mut next_seq = 0;
        for (seq, record) in records {
            let Ok(stored) = record else { return Ok(false) };
            let Ok(change) = passerelle_protocol::automerge::Change::from_bytes(stored.envelope.change.clone()) else {
                return Ok(false);
            };
            latest = latest.max(change.timestamp());
            changes.push(change);
            next_seq = seq + 1;
        }
        if automerge.apply_changes(changes).is_err() {
            return Ok(false);
        }
        let base = DocMeta::new(*doc, &header.header);
        // `changes` becomes the position after the last stored change: new
        // changes go there, whatever the count.
        let mut meta = crate::engine::docs::refreshed_meta(&base, &header.header, &automerge, next_seq, latest);
        meta.snapshot_changes = self.snapshot(doc).ok().flatten().map_or(0, |s| s.changes);
        self.write(vec![super::WriteOp::Meta(meta)])?;
        Ok(true)
    }

    /// Moves every record of a document (header, metadata, snapshot,
    /// changes, their index entries, its places in transfer queues) into
    /// the quarantine; returns how many.
    fn set_aside(&self, doc: &DocId, quarantine: &sled::Tree) -> Result<u64, StoreError> {
        let backend = |e: sled::Error| StoreError::Backend(e.to_string());
        let tree = self.raw_tree();
        let mut keys: Vec<sled::IVec> = Vec::new();
        for p in [prefix::HEADER, prefix::META, prefix::SNAPSHOT, prefix::CHANGE] {
            let start = super::sled_store::keys::prefixed(p, doc.as_bytes());
            for item in tree.scan_prefix(&start) {
                keys.push(item.map_err(backend)?.0);
            }
        }
        for p in [prefix::INDEX, prefix::QUEUE, prefix::QUEUE_INDEX] {
            for item in tree.scan_prefix([p]) {
                let (k, v) = item.map_err(backend)?;
                let belongs = match p {
                    prefix::INDEX => v.get(..32) == Some(doc.as_bytes().as_slice()),
                    _ => k.ends_with(doc.as_bytes()),
                };
                if belongs {
                    keys.push(k);
                }
            }
        }
        let mut moved = 0;
        for k in keys {
            // Into the quarantine first: a crash in between loses nothing.
            if let Some(v) = tree.get(&k).map_err(backend)? {
                quarantine.insert(&k, v).map_err(backend)?;
                tree.remove(&k).map_err(backend)?;
                moved += 1;
            }
        }
        Ok(moved)
    }
}
