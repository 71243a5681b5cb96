//! Connections and sessions: a connection opens a sync session (once this
//! node is in a network), messages go through it, and its effects are
//! carried out here — pushes queued, rosters and documents handed on,
//! faults counted, peers dropped.

use crate::sync::message::SyncMessage;
use crate::sync::session::{Effect, Phase, Session, refusal_is_fault};

use super::io::{IngestBatch, IngestOutcome, Output};
use super::{DocSource, Event, HELLO_DEADLINE_MS, Link, MAX_PRE_HELLO_BYTES, Millis, Replica};
use std::collections::HashSet;

use crate::ids::{DocId, NodeId};

impl Replica {
    /// A first connection with a peer came up (at `addr`).
    pub fn peer_connected(&mut self, now: Millis, node: NodeId, addr: String, docs: &mut impl DocSource) {
        // Whatever was on its way over an earlier connection is not.
        self.transfers.connection_lost(&node);
        self.push(Output::Event(Event::Peer(node)));
        let record = self.peer_mut(node);
        record.last_connected_ms = Some(now);
        record.last_addr = Some(addr);
        record.last_error = None;
        self.unreachable.remove(&node);
        let base = self.config.anti_entropy_ms as Millis;
        self.links.insert(
            node,
            Link {
                session: None,
                next_round: now + base,
                interval: base,
                last_summary: 0,
                eager: true,
                awaiting_hello: Some((now + HELLO_DEADLINE_MS, 0)),
                asks: super::AskBudget::new(now),
                hello_routes: None,
            },
        );
        if let Some(join) = self.joining.as_ref().filter(|j| j.invitation.issuer_node == node) {
            let msg = SyncMessage::Join {
                invitation: Box::new(join.invitation.clone()),
                certificate: self.me.certificate.clone(),
                addrs: join.addrs.clone(),
            };
            self.send(node, &msg);
        }
        self.open_session(now, node, docs);
    }

    /// The last connection with a peer closed.
    pub fn peer_disconnected(&mut self, _now: Millis, node: NodeId, error: Option<String>) {
        self.push(Output::Event(Event::Peer(node)));
        self.links.remove(&node);
        self.transfers.connection_lost(&node);
        self.early_hellos.remove(&node);
        self.beats_on_gone(_now, &node);
        if self.is_known_peer(&node) {
            // Only a record still kept: one the operator just removed stays gone.
            if let (Some(e), Some(record)) = (error, self.peers.get_mut(&node)) {
                record.last_error = Some(e);
                self.dirty.insert(node);
            }
        } else {
            // A stranger: nothing of it stays.
            self.peers.remove(&node);
            self.dirty.remove(&node);
        }
        self.keep_on_tree();
    }

    /// Disconnects peers that did not say hello in time
    /// ([`HELLO_DEADLINE_MS`]); the node a join goes through is spared.
    pub(super) fn hello_deadlines(&mut self, now: Millis) {
        let late: Vec<NodeId> = self
            .links
            .iter()
            .filter(|(node, l)| l.awaiting_hello.is_some_and(|(by, _)| by <= now) && !self.is_joining_through(node))
            .map(|(n, _)| *n)
            .collect();
        for node in late {
            if let Some(link) = self.links.get_mut(&node) {
                link.awaiting_hello = None;
            }
            self.counters.faults += 1;
            let reason = format!("no hello within {} s", HELLO_DEADLINE_MS / 1000);
            self.push(Output::Disconnect { node, reason });
        }
    }

    /// Counts what a peer sends before its hello; too much is a fault
    /// that ends the connection. Returns whether the message may be read.
    fn within_pre_hello_budget(&mut self, from: NodeId, bytes: usize) -> bool {
        let Some(link) = self.links.get_mut(&from) else { return true };
        let Some((_, sent)) = link.awaiting_hello.as_mut() else { return true };
        *sent += bytes;
        if *sent <= MAX_PRE_HELLO_BYTES {
            return true;
        }
        link.awaiting_hello = None;
        link.session = None;
        self.counters.faults += 1;
        let reason = format!("more than {} KiB before its hello", MAX_PRE_HELLO_BYTES / 1024);
        self.push(Output::Disconnect { node: from, reason });
        false
    }

    /// Opens a sync session with a connected peer and says hello, if this
    /// node is in a network (a node outside any can only join).
    pub(super) fn open_session(&mut self, now: Millis, node: NodeId, docs: &mut impl DocSource) {
        if self.roster.is_none() {
            return;
        }
        let Some(link) = self.links.get_mut(&node) else { return };
        // The session starts its first round when the peer's hello arrives.
        link.session = Some(Session::new(node));
        self.counters.sessions_opened += 1;
        self.say_hello(now, node, true, docs);
    }

    /// Sends our hello to a connected peer. The membership proof is left
    /// out only of the first hello on a connection (`first`) to a peer that
    /// holds it (said a roster equal to ours): a hello said again (lost,
    /// or asked for the proof) always carries it, so crossing messages
    /// never get an honest node refused. Our first round's summary and our
    /// routes go along only to a peer our roster admits (nothing about the
    /// network to a stranger).
    fn say_hello(&mut self, now: Millis, node: NodeId, first: bool, docs: &mut impl DocSource) {
        let proof = !first || self.peers.get(&node).is_none_or(|r| !r.placed_us);
        let pending = self.transfers.queue_len(&node, docs);
        let Some(roster) = self.roster.as_ref() else { return };
        let member = self.commune_of_node(&node).filter(|c| roster.node_admitted(&node, c).is_ok());
        let summary = member.and_then(|commune| {
            let local = self.index.view(self.me.commune(), roster).without(self.apart.get(&node));
            Session::hello_summary(&local, Some(&commune), pending)
        });
        let routes = if member.is_some() { self.hello_routes(node) } else { Vec::new() };
        let Some(roster) = self.roster.as_ref() else { return };
        let hello = Session::hello(&self.me.certificate, roster, proof, summary, routes);
        let Some(link) = self.links.get_mut(&node) else { return };
        if summary.is_some() {
            link.last_summary = now;
        }
        if let Some(session) = link.session.as_mut() {
            session.hello_sent(&hello);
        }
        self.send(node, &hello);
    }

    /// A frame from a peer could not be read (malformed, oversized): a
    /// fault of the peer.
    pub fn frame_refused(&mut self, now: Millis, from: NodeId, reason: String, docs: &mut impl DocSource) {
        self.counters.faults += 1;
        let record = self.peer_mut(from);
        record.rejected += 1;
        record.last_error = Some(reason.clone());
        match self.links.get_mut(&from).and_then(|l| l.session.as_mut()) {
            Some(session) => {
                let effects: Vec<Effect> =
                    session.penalise(reason).into_iter().filter(|e| matches!(e, Effect::Disconnect(_))).collect();
                self.run_effects(now, from, effects, docs);
            }
            None => self.push(Output::Disconnect { node: from, reason }),
        }
    }

    /// A sync message arrived from a peer (`bytes` long on the wire).
    pub fn message_received(
        &mut self,
        now: Millis,
        from: NodeId,
        msg: SyncMessage,
        bytes: usize,
        docs: &mut impl DocSource,
    ) {
        if !self.within_pre_hello_budget(from, bytes) {
            return;
        }
        self.peer_mut(from).bytes_in += bytes as u64;
        let t = self.counters.traffic.entry(msg.kind()).or_default();
        t.messages_in += 1;
        t.bytes_in += bytes as u64;
        match msg {
            SyncMessage::Welcome { statements } if self.is_joining_through(&from) => {
                if let Some(j) = self.joining.take() {
                    let network = j.invitation.network;
                    self.push(Output::JoinAnswered { from, network, answer: Ok(statements) });
                }
                return;
            }
            SyncMessage::JoinRefused { reason } if self.is_joining_through(&from) => {
                if let Some(j) = self.joining.take() {
                    let network = j.invitation.network;
                    self.push(Output::JoinAnswered { from, network, answer: Err(reason) });
                }
                return;
            }
            hello @ SyncMessage::Hello { .. } if self.roster.is_none() => {
                // Not in a network yet: keep it for when this node has joined.
                self.early_hellos.insert(from, hello);
                return;
            }
            _ => {}
        }
        if matches!(
            msg,
            SyncMessage::Summary { .. }
                | SyncMessage::Buckets { .. }
                | SyncMessage::Items { .. }
                | SyncMessage::RosterHave { .. }
                | SyncMessage::BeatsWanted { .. }
                | SyncMessage::Differ { .. }
        ) && let Some(link) = self.links.get_mut(&from)
            && !link.asks.take(now)
        {
            let dropped = link.asks.dropped;
            self.peer_mut(from).rounds_refused += 1;
            if dropped == 1 {
                tracing::warn!(peer = %from.short(), kind = msg.kind(), "asks for work faster than {} a minute: dropped", super::ASKS_PER_MINUTE);
            }
            if dropped >= super::MAX_ASKS_DROPPED {
                let reason = format!("kept asking for rounds faster than {} a minute", super::ASKS_PER_MINUTE);
                self.peer_mut(from).last_error = Some(reason.clone());
                self.push(Output::Disconnect { node: from, reason });
            }
            return;
        }
        self.note_placed(from, &msg);
        if let SyncMessage::Items { buckets } = &msg {
            self.peer_lists(&from, buckets.iter().flat_map(|(_, items)| items.iter().map(|(doc, _)| doc)));
        }
        let Some(roster) = self.roster.as_ref() else { return };
        let pending = self.transfers.queue_len(&from, docs);
        let Some(session) = self.links.get_mut(&from).and_then(|l| l.session.as_mut()) else {
            tracing::debug!(peer = %from.short(), kind = msg.kind(), "message outside a session: ignored");
            return;
        };
        let hello_routes = match &msg {
            SyncMessage::Hello { routes, .. } => Some(routes.clone()),
            _ => None,
        };
        let was_ready = session.phase() == Phase::Ready;
        session.set_pending(pending);
        let local = self.index.view(self.me.commune(), roster).without(self.apart.get(&from));
        let effects = session.on_message(msg, &local, roster);
        let now_ready = session.phase() == Phase::Ready;
        let said_hello = session.phase() != Phase::AwaitingHello;
        if said_hello && let Some(link) = self.links.get_mut(&from) {
            link.awaiting_hello = None;
            // The routes of a hello accepted, taken in once the session is
            // ready (a refused one, or one answered `ProofWanted`, says nothing).
            if let Some(routes) = hello_routes
                && !effects.iter().any(|e| matches!(e, Effect::Fault(_) | Effect::Disconnect(_)))
            {
                link.hello_routes = Some(routes);
            }
        }
        if now_ready && !was_ready && self.unlink_if_owed(from) {
            // Removed by the operator: told, and nothing else happens.
            return;
        }
        // Before the effects: `Routes` that came early (kept by the session
        // while it reconciled rosters) are newer and must win.
        if now_ready && let Some(routes) = self.links.get_mut(&from).and_then(|l| l.hello_routes.take()) {
            self.on_routes(now, from, routes);
        }
        self.run_effects(now, from, effects, docs);
        if now_ready && !was_ready {
            // A transfer cut by the last disconnection resumes now.
            self.fill(from, docs);
            self.beats_on_ready(now, from);
        }
    }

    /// Remembers whether the peer holds our membership statements: it
    /// does when it says its roster equals ours (ours admits us); one
    /// asking for our proof lost them.
    fn note_placed(&mut self, from: NodeId, msg: &SyncMessage) {
        let placed = match msg {
            SyncMessage::Hello { roster_count, roster_fingerprint, .. }
            | SyncMessage::Summary { roster_count, roster_fingerprint, .. } => {
                let Some(roster) = self.roster.as_ref() else { return };
                let fp = roster.fingerprint();
                (fp.count, fp.xor) == (*roster_count, *roster_fingerprint)
            }
            SyncMessage::ProofWanted => false,
            _ => return,
        };
        // Only a change is written.
        if self.peers.get(&from).is_some_and(|r| r.placed_us != placed) {
            self.peer_mut(from).placed_us = placed;
        }
    }

    /// Whether a peer's claim that it lacks `n` documents may make this
    /// node queue them: at most [`super::PUSH_ALLOWANCE_PER_DAY`] times what
    /// the two share, plus [`super::PUSH_ALLOWANCE_EXTRA`], a day. Beyond,
    /// the claim is not acted on (counted); the next day it is again.
    fn within_push_allowance(&mut self, now: Millis, peer: NodeId, n: usize) -> bool {
        const DAY_MS: Millis = 24 * 60 * 60 * 1000;
        let shared = match (self.session(&peer).and_then(Session::commune), &self.roster) {
            (Some(commune), Some(roster)) => {
                let local = self.index.view(self.me.commune(), roster).without(self.apart.get(&peer));
                crate::sync::session::LocalSet::fingerprints(&local, &commune).total().count
            }
            _ => 0,
        };
        let allowance = super::PUSH_ALLOWANCE_PER_DAY * shared + super::PUSH_ALLOWANCE_EXTRA;
        let record = self.peer_mut(peer);
        if now.saturating_sub(record.pushed_since_ms) >= DAY_MS {
            record.pushed_since_ms = now;
            record.pushed = 0;
        }
        if record.pushed + n as u64 > allowance {
            record.pushes_refused += n as u64;
            if record.pushes_refused == n as u64 {
                tracing::warn!(peer = %peer.short(), asked = n, allowance, "asks for more documents than its daily allowance: not queued");
            }
            return false;
        }
        record.pushed += n as u64;
        true
    }

    /// Starts a reconciliation round with a connected peer.
    pub(super) fn start_round(&mut self, now: Millis, peer: NodeId, docs: &mut impl DocSource) {
        let pending = self.transfers.queue_len(&peer, docs);
        let Some(roster) = self.roster.as_ref() else { return };
        let Some(link) = self.links.get_mut(&peer) else { return };
        let Some(session) = link.session.as_mut() else { return };
        session.set_pending(pending);
        let local = self.index.view(self.me.commune(), roster).without(self.apart.get(&peer));
        let effects = session.start_round(&local, roster);
        if effects.iter().any(|e| matches!(e, Effect::Send(SyncMessage::Summary { .. }))) {
            link.last_summary = now;
        }
        self.run_effects(now, peer, effects, docs);
    }

    pub(super) fn run_effects(&mut self, now: Millis, peer: NodeId, effects: Vec<Effect>, docs: &mut impl DocSource) {
        for effect in effects {
            match effect {
                Effect::Send(msg) => {
                    if matches!(msg, SyncMessage::Buckets { .. } | SyncMessage::Items { .. }) {
                        // The sets differ: rounds with this peer start over from the base.
                        self.reset_round(now, &peer);
                    }
                    self.send(peer, &msg);
                }
                Effect::Gossip(msg) => self.on_gossip(now, peer, msg, docs),
                Effect::PushBuckets(buckets) => {
                    let (Some(commune), Some(roster)) = (self.session(&peer).and_then(Session::commune), &self.roster)
                    else {
                        continue;
                    };
                    let mut ids = self.index.ids_in(&buckets, &self.me.commune(), &commune, roster);
                    // Documents the two leave apart stay out of whole buckets too.
                    let apart: HashSet<DocId> = self.holding_apart(&peer).map(|(d, _)| *d).collect();
                    ids.retain(|id| !apart.contains(id));
                    if self.within_push_allowance(now, peer, ids.len()) {
                        self.enqueue(peer, ids.into_iter().map(|id| (id, None)).collect(), docs);
                    }
                }
                Effect::IngestRoster(statements) => self.add_statements(now, statements, Some(peer), docs),
                Effect::SendHello { .. } => self.say_hello(now, peer, false, docs),
                Effect::Redeem { invitation, certificate, addrs } => {
                    self.push(Output::Redeem { from: peer, invitation, certificate, addrs });
                }
                Effect::PushDocs(ids) => {
                    if self.within_push_allowance(now, peer, ids.len()) {
                        self.enqueue(peer, ids.into_iter().map(|id| (id, None)).collect(), docs);
                    }
                }
                Effect::PushMissing(list) => {
                    if self.within_push_allowance(now, peer, list.len()) {
                        self.enqueue(peer, list.into_iter().map(|(id, heads)| (id, Some(heads))).collect(), docs);
                    }
                }
                Effect::Ingest { certificates, headers, changes } => {
                    // Certificates first: the changes that follow are checked against them.
                    for cert in certificates.iter().chain(headers.iter().map(|h| &h.certificate)) {
                        self.learn_certificate(cert.clone());
                    }
                    if headers.is_empty() && changes.is_empty() {
                        // A hello's certificate: the peer's commune.
                        if let Some(cert) = certificates.first() {
                            self.peer_mut(peer).commune = Some(cert.commune.to_string());
                        }
                        continue;
                    }
                    self.push(Output::Ingest { from: peer, batch: IngestBatch { headers, changes, live: false } });
                }
                Effect::Heartbeats(beats) => self.on_heartbeats(now, peer, beats, docs),
                Effect::InSync => {
                    self.counters.rounds_in_sync += 1;
                    self.peer_mut(peer).last_sync_ms = Some(now);
                    tracing::debug!(peer = %peer.short(), "in sync");
                    if self.stretch_round(now, &peer) {
                        self.start_round(now, peer, docs);
                    }
                }
                Effect::Fault(reason) => {
                    self.counters.faults += 1;
                    tracing::warn!(peer = %peer.short(), %reason, "sync protocol fault: message dropped");
                    let record = self.peer_mut(peer);
                    record.rejected += 1;
                    record.last_error = Some(reason);
                }
                Effect::Disconnect(reason) => self.push(Output::Disconnect { node: peer, reason }),
            }
        }
    }

    /// What came of an [`Output::Ingest`]: counted in the peer's record;
    /// forged or unauthorised material is a fault of the peer that sent it.
    pub fn ingested(&mut self, now: Millis, from: NodeId, outcome: IngestOutcome, docs: &mut impl DocSource) {
        self.maybe_prune(from, outcome.live, outcome.applied, outcome.duplicates, outcome.refused.len());
        if !outcome.apart.is_empty() {
            self.keep_apart(now, from, outcome.apart);
        }
        let record = self.peer_mut(from);
        record.changes_in += outcome.applied;
        record.rejected += outcome.refused.len() as u64;
        let Some((code, reason)) = outcome.refused.iter().rev().find(|(code, _)| refusal_is_fault(code)) else {
            return;
        };
        let reason = format!("refused {} item(s), last {code}: {reason}", outcome.refused.len());
        record.last_error = Some(reason.clone());
        // Sending what does not verify is a fault of the sender.
        self.counters.faults += 1;
        if let Some(session) = self.links.get_mut(&from).and_then(|l| l.session.as_mut()) {
            let disconnect: Vec<Effect> =
                session.penalise(reason).into_iter().filter(|e| matches!(e, Effect::Disconnect(_))).collect();
            self.run_effects(now, from, disconnect, docs);
        }
    }
}
