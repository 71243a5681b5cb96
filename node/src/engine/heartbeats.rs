//! Heartbeats: this node signs its status every `network.heartbeat_secs`
//! and pushes it to its ready peers; heartbeats of other nodes are checked
//! (certificate, signature, network, admission, date), the latest of each
//! node is kept (`b` records) and the new ones are passed on to the other
//! peers, so a coordinator hears of nodes it cannot reach. A peer that
//! connects gets the ones it was not sent yet.

use std::collections::HashMap;

use passerelle_protocol::heartbeat::{Heartbeat, HeartbeatError, MAX_COUNTS, MAX_PEERS, PeerBeat, SignedHeartbeat};
use passerelle_protocol::ids::NodeId;
use passerelle_protocol::sync::message::{MAX_HEARTBEATS, SyncMessage};
use passerelle_protocol::sync::session::Phase;

use super::EngineError;
use super::worker::Worker;
use crate::clock;
use crate::store::{Store, StoredHeartbeat, WriteOp};
use crate::views::{DocCount, HeartbeatView, PeerBeatView};

/// Heartbeats known here and what each peer was sent.
#[derive(Debug, Default)]
pub(crate) struct Heartbeats {
    /// The latest heartbeat of each node.
    pub latest: HashMap<NodeId, StoredHeartbeat>,
    /// Per peer: the time of the latest heartbeat of each node it was sent
    /// (or sent us), so nothing goes twice.
    sent: HashMap<NodeId, HashMap<NodeId, u64>>,
}

impl Heartbeats {
    fn note_sent(&mut self, peer: NodeId, beat: &SignedHeartbeat) {
        let t = beat.heartbeat.time_ms;
        let e = self.sent.entry(peer).or_default().entry(beat.heartbeat.node()).or_insert(0);
        *e = (*e).max(t);
    }

    /// The heartbeats `peer` was not sent yet, newest first.
    fn unsent(&self, peer: &NodeId) -> Vec<SignedHeartbeat> {
        let sent = self.sent.get(peer);
        let mut out: Vec<&StoredHeartbeat> = self
            .latest
            .values()
            .filter(|h| h.beat.heartbeat.node() != *peer)
            .filter(|h| {
                sent.and_then(|s| s.get(&h.beat.heartbeat.node())).is_none_or(|t| *t < h.beat.heartbeat.time_ms)
            })
            .collect();
        out.sort_by_key(|h| std::cmp::Reverse(h.beat.heartbeat.time_ms));
        out.into_iter().take(MAX_HEARTBEATS).map(|h| h.beat.clone()).collect()
    }
}

impl<S: Store> Worker<S> {
    fn ready_peers(&self) -> Vec<NodeId> {
        self.sync.sessions.iter().filter(|(_, s)| s.phase() == Phase::Ready).map(|(n, _)| *n).collect()
    }

    /// Sends `peer` the heartbeats it was not sent yet.
    pub(crate) fn send_heartbeats(&mut self, peer: NodeId) {
        let beats = self.heartbeats.unsent(&peer);
        if beats.is_empty() {
            return;
        }
        for b in &beats {
            self.heartbeats.note_sent(peer, b);
        }
        self.send(peer, &SyncMessage::Heartbeats { beats });
    }

    /// This node's status now, signed.
    fn own_heartbeat(&mut self) -> Result<Option<SignedHeartbeat>, EngineError> {
        let Some(roster) = &self.roster else { return Ok(None) };
        let network = roster.network();
        let mut peers: Vec<PeerBeat> = self
            .peer_views()
            .into_iter()
            .map(|v| PeerBeat {
                node: v.record.node,
                connected: v.connected,
                last_contact_ms: v.record.last_connected_ms.unwrap_or(0).max(0) as u64,
                last_sync_ms: v.record.last_sync_ms.unwrap_or(0).max(0) as u64,
                unacknowledged: v.receipts.map_or(0, |r| r.pending),
                queued: v.queued,
            })
            .collect();
        // The most recently in touch first, if there are more than a heartbeat lists.
        peers.sort_by_key(|p| std::cmp::Reverse(p.last_contact_ms));
        peers.truncate(MAX_PEERS);
        let (by_kind, by_status) = self.counts()?;
        let mut documents = Vec::new();
        for (kind, n) in by_kind {
            match by_status.get(&kind).filter(|s| !s.is_empty()) {
                Some(statuses) => documents.extend(statuses.iter().map(|(s, n)| (kind.clone(), s.clone(), *n))),
                None => documents.push((kind, String::new(), n)),
            }
        }
        documents.truncate(MAX_COUNTS);
        let rejected: Vec<(String, u64)> =
            self.metrics.rejected.iter().take(MAX_COUNTS).map(|(k, v)| (k.clone(), *v)).collect();
        let heartbeat = Heartbeat {
            network,
            certificate: self.certificate.clone(),
            time_ms: clock::now_ms().max(0) as u64,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            uptime_s: self.started.elapsed().as_secs(),
            peers,
            documents,
            disk_bytes: self.store.disk_bytes().unwrap_or(0),
            rejected,
        };
        Ok(Some(SignedHeartbeat::sign(heartbeat, &self.node_key)))
    }

    /// Time for this node's heartbeat: sign it, keep it, push it.
    pub(crate) fn heartbeat_due(&mut self) -> Result<(), EngineError> {
        let Some(beat) = self.own_heartbeat()? else { return Ok(()) };
        self.keep(StoredHeartbeat { beat, received_ms: clock::now_ms(), via: None })?;
        for peer in self.ready_peers() {
            self.send_heartbeats(peer);
        }
        Ok(())
    }

    fn keep(&mut self, stored: StoredHeartbeat) -> Result<(), EngineError> {
        self.store.write(vec![WriteOp::Heartbeat(stored.clone())])?;
        self.sync.wrote = true;
        self.live("heartbeat", stored.beat.heartbeat.node().to_string());
        self.heartbeats.latest.insert(stored.beat.heartbeat.node(), stored);
        Ok(())
    }

    /// Heartbeats from `from`: each is checked; the newer ones are kept and
    /// passed on. Forged ones count as faults of the sender; the others
    /// (a node not admitted yet here, a clock ahead) are only refused.
    pub(crate) fn on_heartbeats(&mut self, from: NodeId, beats: Vec<SignedHeartbeat>) -> Result<(), EngineError> {
        let Some(roster) = self.roster.clone() else { return Ok(()) };
        let now = clock::now_ms().max(0) as u64;
        let mut fresh = false;
        for beat in beats {
            self.heartbeats.note_sent(from, &beat);
            if let Err(e) = beat.check(&roster, now) {
                self.refuse_heartbeat(from, &beat, &e)?;
                continue;
            }
            let node = beat.heartbeat.node();
            if node == self.node_id {
                continue;
            }
            let newer =
                self.heartbeats.latest.get(&node).is_none_or(|h| h.beat.heartbeat.time_ms < beat.heartbeat.time_ms);
            if newer {
                self.keep(StoredHeartbeat { beat, received_ms: clock::now_ms(), via: Some(from) })?;
                fresh = true;
            }
        }
        if fresh {
            for peer in self.ready_peers().into_iter().filter(|p| *p != from) {
                self.send_heartbeats(peer);
            }
        }
        Ok(())
    }

    fn refuse_heartbeat(
        &mut self,
        from: NodeId,
        beat: &SignedHeartbeat,
        e: &HeartbeatError,
    ) -> Result<(), EngineError> {
        tracing::warn!(peer = %from.short(), node = %beat.heartbeat.node().short(), reason = %e, "heartbeat refused");
        *self.metrics.rejected.entry(e.code().to_owned()).or_default() += 1;
        if matches!(e, HeartbeatError::BadSignature | HeartbeatError::OtherNetwork) {
            let effects = match self.sync.sessions.get_mut(&from) {
                Some(session) => session.penalise(e.to_string()),
                None => return Ok(()),
            };
            self.run_effects(from, effects)?;
        }
        Ok(())
    }

    /// The commune name of a node, as far as this node knows.
    fn name_of_node(&self, node: &NodeId) -> Option<String> {
        let commune = self
            .book
            .get(node)
            .map(|c| c.commune)
            .or_else(|| self.heartbeats.latest.get(node).map(|h| h.beat.heartbeat.certificate.commune))?;
        self.roster.as_ref()?.member(&commune).map(|m| m.name.clone())
    }

    /// The latest heartbeat of every node, newest first.
    pub(crate) fn heartbeat_views(&self) -> Vec<HeartbeatView> {
        let mut list: Vec<&StoredHeartbeat> = self.heartbeats.latest.values().collect();
        list.sort_by_key(|h| std::cmp::Reverse(h.beat.heartbeat.time_ms));
        list.into_iter()
            .map(|h| {
                let hb = &h.beat.heartbeat;
                let commune = hb.certificate.commune;
                HeartbeatView {
                    node: hb.node(),
                    commune,
                    name: self.roster.as_ref().and_then(|r| r.member(&commune)).map(|m| m.name.clone()),
                    time_ms: hb.time_ms,
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
