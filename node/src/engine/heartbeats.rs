//! Heartbeats as the API shows them: the latest of every node the
//! replica core keeps, with names from the roster. The core checks, keeps
//! and passes them on (`passerelle_protocol::replica`).

use passerelle_protocol::heartbeat::StoredHeartbeat;
use passerelle_protocol::ids::NodeId;

use super::worker::Worker;
use crate::store::Store;
use crate::views::{DocCount, HeartbeatView, PeerBeatView};

impl<S: Store> Worker<S> {
    /// The commune name of a node, as far as this node knows.
    fn name_of_node(&self, node: &NodeId) -> Option<String> {
        let commune = self
            .replica
            .book()
            .get(node)
            .map(|c| c.commune)
            .or_else(|| self.replica.beats().latest.get(node).map(|h| h.beat.heartbeat.certificate.commune))?;
        self.replica.roster()?.member(&commune).map(|m| m.name.clone())
    }

    /// The latest heartbeat of every node, newest first.
    pub(crate) fn heartbeat_views(&self) -> Vec<HeartbeatView> {
        let mut list: Vec<&StoredHeartbeat> = self.replica.beats().latest.values().collect();
        list.sort_by_key(|h| std::cmp::Reverse(h.beat.heartbeat.time_ms));
        list.into_iter()
            .map(|h| {
                let hb = &h.beat.heartbeat;
                let commune = hb.certificate.commune;
                HeartbeatView {
                    node: hb.node(),
                    commune,
                    name: self.replica.roster().and_then(|r| r.member(&commune)).map(|m| m.name.clone()),
                    time_ms: hb.time_ms,
                    heard_ms: self.replica.beats().last_heard(&hb.node()).unwrap_or(hb.time_ms),
                    received_ms: h.received_ms,
                    via: h.via,
                    via_name: h.via.as_ref().and_then(|v| self.name_of_node(v)),
                    version: hb.version.clone(),
                    uptime_s: hb.uptime_s,
                    peers: hb
                        .peers
                        .iter()
                        .map(|p| PeerBeatView {
                            node: p.node,
                            name: self.name_of_node(&p.node),
                            connected: p.connected,
                            last_contact_ms: (p.last_contact_ms > 0).then_some(p.last_contact_ms),
                            last_sync_ms: (p.last_sync_ms > 0).then_some(p.last_sync_ms),
                            unacknowledged: p.unacknowledged,
                            queued: p.queued,
                        })
                        .collect(),
                    documents: hb
                        .documents
                        .iter()
                        .map(|(kind, status, count)| DocCount {
                            kind: kind.clone(),
                            status: status.clone(),
                            count: *count,
                        })
                        .collect(),
                    disk_bytes: hb.disk_bytes,
                    rejected: hb.rejected.iter().cloned().collect(),
                }
            })
            .collect()
    }
}
