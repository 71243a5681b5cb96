//! The loaded documents: a bounded, least-recently-used set of Automerge
//! documents with their headers and metadata.

use std::collections::HashMap;

use passerelle_protocol::automerge::{Automerge, Change};
use passerelle_protocol::document::{actor_of, new_document};
use passerelle_protocol::header::SignedHeader;
use passerelle_protocol::ids::{DocId, NodeId};

use super::EngineError;
use crate::store::{DocMeta, Store};

/// A document in memory.
#[derive(Debug)]
pub(crate) struct LoadedDoc {
    pub header: SignedHeader,
    pub meta: DocMeta,
    pub doc: Automerge,
    last_used: u64,
}

/// Loaded documents, at most `capacity` of them.
#[derive(Debug)]
pub(crate) struct DocCache {
    docs: HashMap<DocId, LoadedDoc>,
    capacity: usize,
    clock: u64,
}

impl DocCache {
    pub fn new(capacity: usize) -> Self {
        Self { docs: HashMap::new(), capacity: capacity.max(1), clock: 0 }
    }

    /// Keeps a document, evicting the least recently used beyond capacity.
    pub fn insert(&mut self, id: DocId, header: SignedHeader, meta: DocMeta, doc: Automerge) -> &mut LoadedDoc {
        if self.docs.len() >= self.capacity
            && !self.docs.contains_key(&id)
            && let Some(oldest) = self.docs.iter().min_by_key(|(_, d)| d.last_used).map(|(k, _)| *k)
        {
            self.docs.remove(&oldest);
        }
        self.clock += 1;
        let entry = LoadedDoc { header, meta, doc, last_used: self.clock };
        self.docs.insert(id, entry);
        self.docs.get_mut(&id).expect("just inserted")
    }

    /// Forgets a document (after a failed write, so memory never runs ahead of disk).
    pub fn evict(&mut self, id: &DocId) {
        self.docs.remove(id);
    }

    /// Forgets every document.
    pub fn clear(&mut self) {
        self.docs.clear();
    }

    /// Takes a document out of the cache (loading it if needed) to change
    /// it; [`DocCache::insert`] puts it back once the change is stored.
    pub fn take<S: Store>(&mut self, store: &S, node: &NodeId, id: &DocId) -> Result<Option<LoadedDoc>, EngineError> {
        if self.get_or_load(store, node, id)?.is_none() {
            return Ok(None);
        }
        Ok(self.docs.remove(id))
    }

    /// A document, loaded from the store if needed; `None` if it does not exist.
    pub fn get_or_load<S: Store>(
        &mut self,
        store: &S,
        node: &NodeId,
        id: &DocId,
    ) -> Result<Option<&mut LoadedDoc>, EngineError> {
        self.clock += 1;
        if self.docs.contains_key(id) {
            let d = self.docs.get_mut(id).expect("checked");
            d.last_used = self.clock;
            return Ok(Some(d));
        }
        let Some(header) = store.header(id)? else {
            return Ok(None);
        };
        let damaged = |reason: String| EngineError::Damaged { doc: *id, reason };
        let meta = store.meta(id)?.ok_or_else(|| damaged("its metadata is missing".into()))?;
        let (mut doc, from) = match store.snapshot(id)? {
            Some(snap) => {
                let mut doc = Automerge::load(&snap.bytes).map_err(|e| damaged(format!("snapshot: {e}")))?;
                doc.set_actor(actor_of(node));
                (doc, snap.changes)
            }
            None => (new_document(node), 0),
        };
        let mut changes = Vec::new();
        for (seq, record) in store.changes(id, from)? {
            let stored = record.map_err(|e| damaged(format!("change #{seq}: {e}")))?;
            changes
                .push(Change::from_bytes(stored.envelope.change).map_err(|e| damaged(format!("change #{seq}: {e}")))?);
        }
        doc.apply_changes(changes).map_err(|e| damaged(e.to_string()))?;
        Ok(Some(self.insert(*id, header, meta, doc)))
    }
}
