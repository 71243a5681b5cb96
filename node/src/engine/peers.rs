//! Peer records: added by operators, updated by sync, persisted.

use passerelle_protocol::ids::NodeId;

use crate::api::types::PeerView;

use super::worker::Worker;
use super::{EngineError, FieldError};
use crate::store::{PeerRecord, Store, WriteOp};

fn view(record: &PeerRecord, connected: bool) -> PeerView {
    PeerView { record: record.clone(), connected }
}

impl<S: Store> Worker<S> {
    pub(crate) fn peer_views(&self) -> Vec<PeerView> {
        let mut out: Vec<PeerView> = self
            .sync
            .peers
            .values()
            .map(|r| {
                let connected = self
                    .sync
                    .sessions
                    .get(&r.node)
                    .is_some_and(|s| s.phase() == passerelle_protocol::sync::session::Phase::Ready);
                view(r, connected)
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
        let record = self.sync.peers.entry(node).or_insert_with(|| PeerRecord::new(node));
        record.configured = true;
        for a in addrs {
            if !record.addrs.contains(&a) {
                record.addrs.push(a);
            }
        }
        let record = record.clone();
        self.store.write(vec![WriteOp::Peer(record.clone())])?;
        Ok(view(&record, false))
    }

    pub(crate) fn remove_peer(&mut self, node: NodeId) -> Result<bool, EngineError> {
        let known = self.sync.peers.remove(&node).is_some();
        self.sync.dirty_peers.remove(&node);
        self.store.write(vec![WriteOp::RemovePeer(node)])?;
        Ok(known)
    }
}
