//! Membership in the core: statements added (from peers, or signed by the
//! node), sessions closed when the roster no longer admits a peer, links
//! made with the members the roster names, and the join handshake.

use crate::ids::NodeId;
use crate::network::{Invitation, Roster, SignedStatement};
use crate::sync::message::SyncMessage;
use crate::sync::session::Session;

use super::io::{Output, Persist};
use super::{DocSource, Joining, Millis, PeerRecord, Replica};

impl Replica {
    /// This node founded a network, or joined one: from now on it speaks
    /// in it. Sessions open with every connected peer, and hellos kept
    /// while joining are answered.
    pub fn set_roster(&mut self, now: Millis, roster: Roster, docs: &mut impl DocSource) {
        self.roster = Some(roster);
        self.watchers.replace(None);
        self.relink();
        let connected: Vec<NodeId> = self.links.keys().copied().collect();
        for node in connected {
            if self.session(&node).is_none() {
                self.open_session(now, node, docs);
                // The peer has a while from now to answer our hello.
                if let Some(link) = self.links.get_mut(&node) {
                    link.awaiting_hello = Some((now + super::HELLO_DEADLINE_MS, 0));
                }
            }
            if let Some(hello) = self.early_hellos.remove(&node) {
                self.message_received(now, node, hello, 0, docs);
            }
        }
    }

    /// Adds statements (from a peer, or signed here): the new ones are
    /// persisted and pushed to ready peers after the flush, sessions of
    /// peers the roster no longer admits are closed, and new links made.
    pub fn add_statements(
        &mut self,
        now: Millis,
        statements: Vec<SignedStatement>,
        from: Option<NodeId>,
        _docs: &mut impl DocSource,
    ) {
        let Some(roster) = self.roster.as_mut() else { return };
        let (new, refused) = roster.insert_all_at(statements, now.max(0) as u64);
        let dropped = roster.take_dropped();
        if !dropped.is_empty() {
            self.push(Output::Persist(Persist::ForgetStatements(dropped)));
        }
        for e in &refused {
            tracing::warn!(peer = ?from.map(|n| n.short()), error = %e, "statement refused");
            *self.counters.rejected.entry(e.code().to_owned()).or_default() += 1;
        }
        if let (Some(peer), false) = (from, refused.is_empty()) {
            let record = self.peer_mut(peer);
            record.rejected += refused.len() as u64;
            record.last_error = Some(format!("refused {} statement(s): {}", refused.len(), refused[0]));
        }
        if new.is_empty() {
            return;
        }
        for s in &new {
            tracing::info!(kind = s.body.kind(), signer = %s.signer.short(), "roster statement added");
        }
        self.watchers.replace(None);
        // A refusal's reason may no longer hold (a member admitted again…):
        // documents left apart are compared again.
        self.apart.clear();
        self.push(Output::Persist(Persist::Statements(new.clone())));
        self.roster_news.push((from, new));
        self.enforce_roster();
        self.relink();
    }

    /// Closes sessions with peers whose commune left the network or whose
    /// key was revoked.
    fn enforce_roster(&mut self) {
        let Some(roster) = &self.roster else { return };
        let expelled: Vec<(NodeId, String)> = self
            .links
            .iter()
            .filter_map(|(node, l)| {
                let commune = l.session.as_ref()?.commune()?;
                roster.node_admitted(node, &commune).err().map(|reason| (*node, reason))
            })
            .collect();
        for (node, reason) in expelled {
            if let Some(link) = self.links.get_mut(&node) {
                link.session = None;
            }
            self.push(Output::Disconnect { node, reason });
        }
    }

    /// Starts redeeming an invitation: the issuing node becomes a
    /// configured peer, and the invitation is presented as soon as a
    /// connection with it is up (now, if it is).
    pub fn begin_join(&mut self, invitation: Invitation, addrs: Vec<String>) {
        let issuer = invitation.issuer_node;
        // The issuing node becomes a peer the join made: redialled like the
        // links the roster chooses (and dropped like them).
        let record = self.peer_mut(issuer);
        record.configured = true;
        record.auto = true;
        for a in &invitation.addrs {
            if !record.addrs.contains(a) {
                record.addrs.push(a.clone());
            }
        }
        let connected = self.links.contains_key(&issuer);
        self.joining = Some(Joining { invitation: invitation.clone(), addrs: addrs.clone() });
        if connected {
            let msg =
                SyncMessage::Join { invitation: Box::new(invitation), certificate: self.me.certificate.clone(), addrs };
            self.send(issuer, &msg);
        }
    }

    /// Gives up a join (its caller went away).
    pub fn cancel_join(&mut self) {
        self.joining = None;
    }

    pub(super) fn is_joining_through(&self, node: &NodeId) -> bool {
        self.joining.as_ref().is_some_and(|j| &j.invitation.issuer_node == node)
    }

    /// The issuing node refused our invitation: stop dialling it.
    pub fn join_refused(&mut self, from: NodeId, reason: &str) {
        if let Some(record) = self.peers.get_mut(&from) {
            record.configured = false;
            record.last_error = Some(format!("join refused: {reason}"));
            self.dirty.insert(from);
        }
        self.push(Output::Forget { node: from });
    }

    /// The node refused something a peer presented (an invitation):
    /// counted in its record.
    pub fn note_refusal(&mut self, peer: NodeId, reason: String) {
        let record = self.peer_mut(peer);
        record.rejected += 1;
        record.last_error = Some(reason);
    }

    /// An operator adds a peer to dial at `addrs`.
    pub fn add_peer(&mut self, node: NodeId, addrs: Vec<String>) -> PeerRecord {
        self.unlinks_owed.remove(&node);
        let record = self.peer_mut(node);
        record.configured = true;
        for a in addrs {
            if !record.addrs.contains(&a) {
                record.addrs.push(a);
            }
        }
        record.clone()
    }

    /// An operator removes a peer: its record and transfer queue go (a
    /// peer added again is reconciled anew), the peer is told not to dial
    /// this node again (`Unlink`, now or at its next hello if its session
    /// is not ready), and once it heard (or could not) the connection
    /// closes. The roster rule does not bring it back while it keeps
    /// choosing it. Returns whether it was known.
    pub fn remove_peer(&mut self, node: NodeId, docs: &mut impl DocSource) -> bool {
        if self.is_ready(&node) {
            self.unlink(node);
        } else {
            if self.unlinks_owed.len() < super::MAX_UNLINKS_OWED {
                self.unlinks_owed.insert(node);
            }
            self.push(Output::Forget { node });
        }
        let known = self.peers.remove(&node).is_some();
        self.apart.remove(&node);
        self.differ_out.remove(&node);
        self.dirty.remove(&node);
        docs.drop_queue(&node);
        self.transfers.forget(&node);
        self.push(Output::Persist(Persist::RemovePeer(node)));
        known
    }

    /// Tells a ready peer this node's operator removed it; the connection
    /// closes once the message is delivered (or could not be).
    fn unlink(&mut self, node: NodeId) {
        let tag = self.transfers.new_tag();
        self.send_tagged(node, &SyncMessage::Unlink, Some(tag));
        self.unlinking.insert(tag, node);
    }

    /// A peer's session became ready: if the operator removed it before it
    /// could be told, it is told now. Returns whether it was.
    pub(super) fn unlink_if_owed(&mut self, node: NodeId) -> bool {
        if !self.unlinks_owed.remove(&node) {
            return false;
        }
        tracing::info!(peer = %node.short(), "a peer the operator removed came back: telling it");
        self.unlink(node);
        true
    }

    /// The peer's operator removed this node: links made automatically (by
    /// the roster's rule, or a join) stop being dialled from here.
    pub(super) fn on_unlink(&mut self, from: NodeId) {
        let Some(record) = self.peers.get_mut(&from) else { return };
        if !record.auto {
            return;
        }
        tracing::info!(peer = %from.short(), "the peer's operator removed this node: no longer dialling it");
        record.configured = false;
        record.auto = false;
        self.dirty.insert(from);
        self.push(Output::Forget { node: from });
    }

    /// The hello this node says to a peer that knows nothing of it yet
    /// (with the proof of its membership, without a summary).
    pub fn hello(&self) -> Option<SyncMessage> {
        self.roster.as_ref().map(|r| Session::hello(&self.me.certificate, r, true, None, vec![]))
    }
}
