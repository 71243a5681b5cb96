//! Peer records: added by operators, updated by sync, persisted.

use passerelle_protocol::ids::{CommuneId, NodeId};

use crate::views::{ApartNote, PeerView, PendingDoc, Receipts};

use super::worker::Worker;
use super::{EngineError, FieldError};
use crate::store::{PeerRecord, Store, WriteOp};

fn view(record: &PeerRecord, connected: bool) -> PeerView {
    PeerView { record: record.clone(), connected, receipts: None, queued: 0, apart: 0 }
}

impl<S: Store> Worker<S> {
    /// The documents shared with `record`'s commune that it has not
    /// acknowledged: stored here after its last in-sync round. `metas` are
    /// every document's metadata, read once for all peers.
    fn unacknowledged(
        &self,
        record: &PeerRecord,
        metas: &[crate::store::DocMeta],
    ) -> Result<Option<(u64, Vec<PendingDoc>)>, EngineError> {
        let (Some(roster), Some(commune)) =
            (self.replica.roster(), record.commune.as_deref().and_then(|c| c.parse::<CommuneId>().ok()))
        else {
            return Ok(None);
        };
        let synced = record.last_sync_ms.unwrap_or(i64::MIN);
        let mut shared = 0;
        let mut pending = Vec::new();
        for meta in metas {
            if !self.replica.index().may_share(&meta.id, &commune, roster) {
                continue;
            }
            shared += 1;
            if meta.stored_ms > synced || record.last_sync_ms.is_none() {
                pending.push(PendingDoc {
                    id: meta.id,
                    kind: meta.kind.clone(),
                    title: meta.title.clone(),
                    stored_ms: meta.stored_ms,
                    apart: None,
                });
            }
        }
        pending.sort_by_key(|p| std::cmp::Reverse(p.stored_ms));
        Ok(Some((shared, pending)))
    }

    /// Documents a peer has not acknowledged, most recent first.
    pub(crate) fn pending_for(&self, node: NodeId) -> Result<Vec<PendingDoc>, EngineError> {
        let record = self.replica.peer(&node).ok_or_else(|| {
            EngineError::Invalid(FieldError::Invalid { field: "node".into(), reason: format!("no peer {node}") })
        })?;
        let metas = self.store.metas()?;
        let mut pending = self.unacknowledged(record, &metas)?.map(|(_, p)| p).unwrap_or_default();
        // Documents the two agree to differ on are said so, pending or not.
        for (doc, apart) in self.replica.kept_apart(&node) {
            let note = ApartNote::from(&apart);
            if let Some(p) = pending.iter_mut().find(|p| p.id == doc) {
                p.apart = Some(note);
                continue;
            }
            let meta = metas.iter().find(|m| m.id == doc);
            pending.push(PendingDoc {
                id: doc,
                kind: meta.map(|m| m.kind.clone()).unwrap_or_else(|| "?".into()),
                title: meta.and_then(|m| m.title.clone()),
                stored_ms: meta.map_or(0, |m| m.stored_ms),
                apart: Some(note),
            });
        }
        Ok(pending)
    }

    pub(crate) fn peer_views(&self) -> Vec<PeerView> {
        // Read once for every peer's receipts (none if unreadable).
        let metas = self.store.metas().inspect_err(|e| tracing::warn!(error = %e, "no receipts")).ok();
        let mut out: Vec<PeerView> = self
            .replica
            .peers()
            .map(|r| {
                let connected = self.replica.is_ready(&r.node);
                let mut v = view(r, connected);
                v.queued = self.store.queue_len(&r.node).unwrap_or(0);
                v.apart = self.replica.kept_apart_count(&r.node) as u64;
                v.receipts = match metas.as_deref().map(|m| self.unacknowledged(r, m)) {
                    Some(Ok(Some((shared, pending)))) => Some(Receipts {
                        shared,
                        acknowledged: shared - pending.len() as u64,
                        pending: pending.len() as u64,
                    }),
                    _ => None,
                };
                v
            })
            .collect();
        out.sort_by(|a, b| b.record.configured.cmp(&a.record.configured).then(a.record.node.cmp(&b.record.node)));
        out
    }

    pub(crate) fn add_peer(&mut self, node: NodeId, addrs: Vec<String>) -> Result<PeerView, EngineError> {
        if node == self.node_id {
            return Err(EngineError::Invalid(FieldError::Invalid {
                field: "node".into(),
                reason: "that is this node's own id".into(),
            }));
        }
        for a in &addrs {
            a.parse::<libp2p::Multiaddr>().map_err(|e| {
                EngineError::Invalid(FieldError::Invalid { field: "addr".into(), reason: format!("{a:?}: {e}") })
            })?;
        }
        let record = self.replica.add_peer(node, addrs);
        self.store.write(vec![WriteOp::Peer(record.clone())])?;
        Ok(view(&record, false))
    }

    pub(crate) fn remove_peer(&mut self, node: NodeId) -> Result<bool, EngineError> {
        // Its transfer queue goes too: a peer added again is reconciled anew.
        let known = self.replicate(|r, docs| r.remove_peer(node, docs));
        self.drive()?;
        Ok(known)
    }
}
