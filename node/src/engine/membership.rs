//! The engine's side of membership: founding a network, issuing and
//! redeeming invitations, joining, partnerships, revocations and removals.
//! Every decision is a statement signed with the commune key, stored, added
//! to the roster and pushed to ready peers after the flush; the roster then
//! decides who may connect, write and receive what.

use std::collections::BTreeMap;

use libp2p::Multiaddr;
use passerelle_protocol::certificate::NodeCertificate;
use passerelle_protocol::ids::{CommuneId, NodeId};
use passerelle_protocol::network::statement::MAX_ADDRS;
use passerelle_protocol::network::{
    Invitation, InvitationTerms, Role, Roster, SignedStatement, Statement, invitation::InvitationError,
};
use passerelle_protocol::sync::message::SyncMessage;

use super::worker::{Worker, defer};
use super::{EngineError, Reply};
use crate::clock;
use crate::store::{InvitationRecord, PeerRecord, Store, WriteOp};
use crate::views::{InviteRequest, InviteView, MemberView, NetworkView, NodeKeyView, PartnershipView};

/// Default lifetime of an invitation.
pub const DEFAULT_INVITATION_HOURS: u64 = 7 * 24;
/// Longest lifetime of an invitation.
pub const MAX_INVITATION_HOURS: u64 = 90 * 24;

/// A join in progress: the invitation, and the caller waiting for the answer.
#[derive(Debug)]
pub(crate) struct Joining {
    pub invitation: Invitation,
    pub addrs: Vec<String>,
    pub reply: Reply<NetworkView>,
}

fn forbidden(msg: impl Into<String>) -> EngineError {
    EngineError::Forbidden(msg.into())
}

fn conflict(msg: impl Into<String>) -> EngineError {
    EngineError::Conflict(msg.into())
}

fn invalid(field: &str, reason: impl Into<String>) -> EngineError {
    EngineError::Invalid(passerelle_protocol::schema::FieldError::Invalid {
        field: field.to_owned(),
        reason: reason.into(),
    })
}

/// Loads the roster from stored statements (`None` outside any network).
pub(crate) fn load_roster<S: Store>(store: &S) -> Result<Option<Roster>, EngineError> {
    let statements = store.statements()?;
    let Some(found) = statements.iter().find(|s| matches!(s.body, Statement::Found { .. })) else {
        return Ok(None);
    };
    let mut roster = Roster::new(found.network);
    let (_, refused) = roster.insert_all(statements);
    for e in refused {
        tracing::warn!(error = %e, "ignoring a stored statement");
    }
    Ok(Some(roster))
}

impl<S: Store> Worker<S> {
    fn roster(&self) -> Result<&Roster, EngineError> {
        self.roster.as_ref().ok_or(EngineError::NoNetwork)
    }

    fn sign(&self, body: Statement) -> Result<SignedStatement, EngineError> {
        let roster = self.roster()?;
        Ok(SignedStatement::sign(&self.commune_key, roster.network(), clock::now_ms() as u64, body))
    }

    /// Adds statements (from a peer, or signed here): stores the new ones,
    /// pushes them to ready peers after the flush, and drops sessions of
    /// peers the roster no longer admits.
    pub(crate) fn add_statements(
        &mut self,
        statements: Vec<SignedStatement>,
        from: Option<NodeId>,
    ) -> Result<(), EngineError> {
        let before = self.desired_links();
        let Some(roster) = self.roster.as_mut() else { return Ok(()) };
        let (new, refused) = roster.insert_all(statements);
        for e in &refused {
            tracing::warn!(peer = ?from.map(|n| n.short()), error = %e, "statement refused");
        }
        if let (Some(peer), false) = (from, refused.is_empty()) {
            let record = self.sync.peers.entry(peer).or_insert_with(|| PeerRecord::new(peer));
            record.rejected += refused.len() as u64;
            record.last_error = Some(format!("refused {} statement(s): {}", refused.len(), refused[0]));
            self.sync.dirty_peers.insert(peer);
        }
        if new.is_empty() {
            return Ok(());
        }
        for s in &new {
            tracing::info!(kind = s.body.kind(), signer = %s.signer.short(), "roster statement added");
        }
        self.store.write(new.iter().cloned().map(WriteOp::Statement).collect())?;
        self.sync.wrote = true;
        self.sync.roster_news.push((from, new));
        self.enforce_roster();
        self.link_new(&before);
        Ok(())
    }

    /// The members this node links with by default: its partners and the
    /// members of its own country, at the contact addresses they joined with.
    fn desired_links(&self) -> BTreeMap<NodeId, Vec<Multiaddr>> {
        let mut out = BTreeMap::new();
        let Some(roster) = &self.roster else { return out };
        if !self.auto_links {
            return out;
        }
        let partners = roster.partners_of(&self.commune);
        for m in roster.members() {
            let Some(node) = m.node else { continue };
            if m.commune == self.commune || node == self.node_id || roster.is_revoked(&node, &m.commune) {
                continue;
            }
            if !(partners.contains(&m.commune) || m.country == self.country) {
                continue;
            }
            let addrs: Vec<Multiaddr> = m
                .addrs
                .iter()
                .filter_map(|a| a.parse::<Multiaddr>().ok())
                .filter(|a| {
                    !a.iter().any(|p| match p {
                        libp2p::multiaddr::Protocol::Ip4(ip) => ip.is_unspecified(),
                        libp2p::multiaddr::Protocol::Ip6(ip) => ip.is_unspecified(),
                        _ => false,
                    })
                })
                .collect();
            if !addrs.is_empty() || self.uses_relays {
                out.insert(node, addrs);
            }
        }
        out
    }

    /// Links with members that became desired links since `before` (a new
    /// member of this country, a new partnership). Only new ones: a peer an
    /// operator removed is not brought back until the roster changes it.
    fn link_new(&mut self, before: &BTreeMap<NodeId, Vec<Multiaddr>>) {
        for (node, addrs) in self.desired_links() {
            if before.contains_key(&node) || self.sync.peers.get(&node).is_some_and(|p| p.configured) {
                continue;
            }
            tracing::info!(peer = %node.short(), "linking with a partner or a member of this country");
            let record = self.sync.peers.entry(node).or_insert_with(|| PeerRecord::new(node));
            record.configured = true;
            for a in &addrs {
                let a = a.to_string();
                if !record.addrs.contains(&a) {
                    record.addrs.push(a);
                }
            }
            self.sync.dirty_peers.insert(node);
            if let Some(net) = &self.sync.net {
                let _ = net.blocking_send(crate::net::NetOut::Dial { node, addrs });
            }
        }
    }

    /// Closes sessions with peers whose commune left the network or whose
    /// key was revoked.
    fn enforce_roster(&mut self) {
        let Some(roster) = &self.roster else { return };
        let expelled: Vec<(NodeId, String)> = self
            .sync
            .sessions
            .iter()
            .filter_map(|(node, s)| {
                let commune = s.commune()?;
                roster.node_admitted(node, &commune).err().map(|reason| (*node, reason))
            })
            .collect();
        for (node, reason) in expelled {
            self.sync.sessions.remove(&node);
            if let Some(net) = &self.sync.net {
                let _ = net.blocking_send(crate::net::NetOut::Disconnect { to: node, reason });
            }
        }
    }

    /// Opens sessions with every connected peer once this node is in a network.
    fn greet_connected(&mut self) -> Result<(), EngineError> {
        let connected: Vec<NodeId> = self.sync.connected.iter().copied().collect();
        for node in connected {
            if !self.sync.sessions.contains_key(&node) {
                self.open_session(node);
            }
            if let Some(hello) = self.sync.early_hellos.remove(&node) {
                self.on_net(super::NetEvent::Message { from: node, msg: hello, bytes: 0 })?;
            }
        }
        Ok(())
    }

    pub(crate) fn network_view(&self) -> Result<NetworkView, EngineError> {
        let roster = self.roster()?;
        let name_of = |c: &CommuneId| roster.member(c).map(|m| m.name.clone()).unwrap_or_else(|| c.short());
        let mut revoked: Vec<NodeId> = roster
            .statements()
            .filter_map(|s| match &s.body {
                Statement::Revoke { node, .. } => Some(*node),
                _ => None,
            })
            .filter(|node| self.book.commune_of(node).is_some_and(|c| roster.is_revoked(node, &c)))
            .collect();
        revoked.sort();
        revoked.dedup();
        Ok(NetworkView {
            network: roster.network().to_string(),
            name: roster.name().to_owned(),
            founder: roster.founder(),
            role: roster.role(&self.commune).map(|r| r.to_string()),
            members: roster
                .members()
                .map(|m| MemberView {
                    commune: m.commune,
                    name: m.name.clone(),
                    country: m.country.clone(),
                    role: m.role.to_string(),
                    since_ms: m.since_ms,
                    admitted_by: m.admitted_by,
                    node: m.node,
                    nodes: {
                        let mut keys: Vec<NodeKeyView> = self
                            .book
                            .iter()
                            .filter(|c| c.commune == m.commune)
                            .map(|c| NodeKeyView {
                                node: c.node,
                                certified_ms: c.issued_ms,
                                revoked: roster.is_revoked(&c.node, &m.commune),
                            })
                            .collect();
                        keys.sort_by_key(|k| k.certified_ms);
                        keys
                    },
                    me: m.commune == self.commune,
                })
                .collect(),
            partnerships: roster
                .partnerships()
                .map(|p| PartnershipView {
                    a: p.a,
                    a_name: name_of(&p.a),
                    b: p.b,
                    b_name: name_of(&p.b),
                    a_signed: p.a_signed,
                    b_signed: p.b_signed,
                    active: p.active(),
                })
                .collect(),
            revoked,
            statements: roster.len(),
        })
    }

    /// Finds a member by id, id prefix or name (case-insensitive).
    pub(crate) fn find_member(&self, query: &str) -> Result<CommuneId, EngineError> {
        let roster = self.roster()?;
        let q = query.trim().to_lowercase();
        let hits: Vec<CommuneId> = roster
            .members()
            .filter(|m| m.commune.to_string().starts_with(&q) || m.name.to_lowercase() == q)
            .map(|m| m.commune)
            .collect();
        match hits[..] {
            [one] => Ok(one),
            [] => Err(EngineError::Invalid(passerelle_protocol::schema::FieldError::Invalid {
                field: "commune".into(),
                reason: format!("no member of the network matches {query:?} (see `passerelle members`)"),
            })),
            _ => Err(invalid("commune", format!("{query:?} matches several members: give more of the id"))),
        }
    }

    pub(crate) fn create_network(&mut self, name: String) -> Result<NetworkView, EngineError> {
        if let Some(r) = &self.roster {
            return Err(conflict(format!("this node is already in network {:?} ({})", r.name(), r.network())));
        }
        let name = name.trim().to_owned();
        if name.is_empty() || name.len() > passerelle_protocol::network::statement::MAX_NAME_BYTES {
            return Err(invalid("name", "give the network a name of 1 to 200 bytes"));
        }
        let found =
            SignedStatement::found(&self.commune_key, &name, &self.commune_name, &self.country, clock::now_ms() as u64);
        let roster = Roster::founded(found.clone()).map_err(|e| invalid("name", e.to_string()))?;
        self.store.write(vec![WriteOp::Statement(found)])?;
        self.sync.wrote = true;
        tracing::info!(network = %roster.network(), %name, "network founded");
        self.roster = Some(roster);
        self.greet_connected()?;
        self.network_view()
    }

    pub(crate) fn invite(&mut self, req: InviteRequest, addrs: Vec<String>) -> Result<InviteView, EngineError> {
        let roster = self.roster()?;
        if !roster.is_coordinator(&self.commune) {
            return Err(forbidden("only a coordinator of the network issues invitations"));
        }
        let role = match req.role.as_deref() {
            None => Role::Commune,
            Some(r) => r.parse::<Role>().map_err(|e| invalid("role", e))?,
        };
        let name = req.name.trim().to_owned();
        if name.is_empty() || name.len() > passerelle_protocol::network::statement::MAX_NAME_BYTES {
            return Err(invalid("name", "give the invited commune's name (1 to 200 bytes)"));
        }
        let country = req.country.trim().to_uppercase();
        if !passerelle_protocol::codes::is_country(&country) {
            return Err(invalid("country", format!("{country:?} is not an ISO 3166-1 alpha-2 code (e.g. BE, MA)")));
        }
        let hours = req.expires_in_hours.unwrap_or(DEFAULT_INVITATION_HOURS);
        if hours == 0 || hours > MAX_INVITATION_HOURS {
            return Err(invalid("expires_in_hours", format!("between 1 and {MAX_INVITATION_HOURS} hours")));
        }
        let now = clock::now_ms() as u64;
        // Addresses others can reach first; loopback last (kept for a
        // federation on one machine).
        let mut addrs = addrs;
        addrs.sort_by_key(|a| a.contains("/127.0.0.1/") || a.contains("/::1/"));
        addrs.truncate(MAX_ADDRS);
        let invitation = Invitation::issue(
            &self.commune_key,
            InvitationTerms {
                network: roster.network(),
                issuer_node: self.node_id,
                addrs,
                name: name.clone(),
                country: country.clone(),
                role,
                expires_ms: now + hours * 3_600_000,
                id: clock::random_bytes::<16>(),
            },
        );
        let record = InvitationRecord {
            id: hex::encode(invitation.id),
            name: name.clone(),
            country,
            role: role.to_string(),
            expires_ms: invitation.expires_ms,
            issued_ms: now,
            used_by: None,
            used_ms: None,
        };
        self.store.write(vec![WriteOp::Invitation(record)])?;
        self.sync.wrote = true;
        tracing::info!(id = %hex::encode(invitation.id), %name, %role, "invitation issued");
        Ok(InviteView {
            token: invitation.to_token(),
            id: hex::encode(invitation.id),
            name,
            role: role.to_string(),
            expires_ms: invitation.expires_ms,
        })
    }

    /// Checks an invitation presented by a connected node; the reason if refused.
    fn check_redemption(&self, invitation: &Invitation, cert: &NodeCertificate) -> Result<InvitationRecord, String> {
        let roster = self.roster.as_ref().ok_or("this node is not in a network")?;
        if invitation.network != roster.network() {
            return Err(format!("the invitation is for network {}, not this one", invitation.network.short()));
        }
        invitation.verify(clock::now_ms() as u64).map_err(|e: InvitationError| e.to_string())?;
        if invitation.issuer != self.commune || invitation.issuer_node != self.node_id {
            return Err("the invitation was not issued by this node".into());
        }
        if !roster.is_coordinator(&self.commune) {
            return Err("this commune is no longer a coordinator".into());
        }
        let record = self
            .store
            .invitation(&invitation.id)
            .map_err(|e| e.to_string())?
            .ok_or("this node has no record of issuing that invitation")?;
        match record.used_by {
            // The same commune again (its welcome was lost): welcome it again.
            Some(by) if by == cert.commune => {}
            Some(by) => return Err(format!("the invitation was already used (by commune {})", by.short())),
            None if roster.is_member(&cert.commune) => {
                return Err(format!("commune {} is already a member", cert.commune.short()));
            }
            None => {}
        }
        Ok(record)
    }

    /// Redeems an invitation for a connected node: admits its commune, makes
    /// the admission and the invitation's use durable, then welcomes it.
    pub(crate) fn redeem(
        &mut self,
        peer: NodeId,
        invitation: Box<Invitation>,
        certificate: NodeCertificate,
        addrs: Vec<String>,
    ) -> Result<(), EngineError> {
        let mut record = match self.check_redemption(&invitation, &certificate) {
            Ok(r) => r,
            Err(reason) => {
                tracing::warn!(peer = %peer.short(), %reason, "invitation refused");
                self.send(peer, &SyncMessage::JoinRefused { reason: reason.clone() });
                let record = self.sync.peers.entry(peer).or_insert_with(|| PeerRecord::new(peer));
                record.rejected += 1;
                record.last_error = Some(format!("invitation refused: {reason}"));
                self.sync.dirty_peers.insert(peer);
                return Ok(());
            }
        };
        if record.used_by == Some(certificate.commune) {
            tracing::info!(peer = %peer.short(), "invitation presented again by the commune it admitted: welcome again");
            let statements = self.roster()?.proof_for(&certificate.commune);
            self.send(peer, &SyncMessage::Welcome { statements });
            return Ok(());
        }
        let mut addrs = addrs;
        addrs.truncate(MAX_ADDRS);
        let admit = self.sign(Statement::Admit {
            member: certificate.commune,
            name: invitation.name.clone(),
            country: invitation.country.clone(),
            role: invitation.role,
            invitation: invitation.id,
            node: certificate.node,
            addrs,
        })?;
        record.used_by = Some(certificate.commune);
        record.used_ms = Some(clock::now_ms() as u64);
        if self.book.insert(certificate.clone()).unwrap_or(false) {
            self.store.write(vec![WriteOp::Certificate(certificate.clone())])?;
        }
        self.store.write(vec![WriteOp::Invitation(record)])?;
        self.add_statements(vec![admit], None)?;
        // Single use survives a crash: durable before the welcome leaves.
        self.store.flush()?;
        tracing::info!(peer = %peer.short(), commune = %certificate.commune.short(), name = %invitation.name, "invitation redeemed");
        // The proof of membership only: the rest of the roster follows in the
        // session's reconciliation, in bounded frames, before any document.
        let statements = self.roster()?.proof_for(&certificate.commune);
        self.send(peer, &SyncMessage::Welcome { statements });
        Ok(())
    }

    pub(crate) fn begin_join(
        &mut self,
        invitation: Invitation,
        addrs: Vec<String>,
        reply: Reply<NetworkView>,
    ) -> Result<(), (EngineError, Reply<NetworkView>)> {
        if let Some(r) = &self.roster {
            let e = conflict(format!("this node is already in network {:?} ({})", r.name(), r.network()));
            return Err((e, reply));
        }
        // A join whose caller gave up (timeout) may be started again.
        if self.joining.as_ref().is_some_and(|j| !j.reply.is_closed()) {
            return Err((conflict("a join is already in progress"), reply));
        }
        if let Err(e) = invitation.verify(clock::now_ms() as u64) {
            return Err((invalid("token", e.to_string()), reply));
        }
        let issuer = invitation.issuer_node;
        // The issuing node becomes a configured peer: it is redialled like any.
        let record = self.sync.peers.entry(issuer).or_insert_with(|| PeerRecord::new(issuer));
        record.configured = true;
        for a in &invitation.addrs {
            if !record.addrs.contains(a) {
                record.addrs.push(a.clone());
            }
        }
        self.sync.dirty_peers.insert(issuer);
        let connected = self.sync.connected.contains(&issuer);
        tracing::info!(issuer = %issuer.short(), "joining network {}", invitation.network.short());
        self.joining = Some(Joining { invitation: invitation.clone(), addrs: addrs.clone(), reply });
        if connected {
            let msg =
                SyncMessage::Join { invitation: Box::new(invitation), certificate: self.certificate.clone(), addrs };
            self.send(issuer, &msg);
        }
        Ok(())
    }

    pub(crate) fn is_joining_through(&self, node: &NodeId) -> bool {
        self.joining.as_ref().is_some_and(|j| &j.invitation.issuer_node == node)
    }

    /// The issuing node answered a join.
    pub(crate) fn finish_join(
        &mut self,
        from: NodeId,
        answer: Result<Vec<SignedStatement>, String>,
    ) -> Result<(), EngineError> {
        let Some(joining) = self.joining.take() else { return Ok(()) };
        let statements = match answer {
            Ok(s) => s,
            Err(reason) => {
                tracing::warn!(issuer = %from.short(), %reason, "join refused");
                // Nothing more to say to that node: stop redialling it.
                if let Some(record) = self.sync.peers.get_mut(&from) {
                    record.configured = false;
                    record.last_error = Some(format!("join refused: {reason}"));
                    self.sync.dirty_peers.insert(from);
                }
                if let Some(net) = &self.sync.net {
                    let _ = net.blocking_send(crate::net::NetOut::Forget { node: from });
                }
                let _ = joining.reply.send(Err(forbidden(format!("the coordinator's node refused: {reason}"))));
                return Ok(());
            }
        };
        let mut roster = Roster::new(joining.invitation.network);
        let (_, refused) = roster.insert_all(statements);
        if !refused.is_empty() {
            tracing::warn!(count = refused.len(), "welcome carried statements that do not verify");
        }
        if !roster.is_member(&self.commune) {
            let e = forbidden("the welcome does not admit this commune (the roster it sent does not verify)");
            let _ = joining.reply.send(Err(e));
            return Ok(());
        }
        self.store.write(roster.statements().cloned().map(WriteOp::Statement).collect())?;
        self.sync.wrote = true;
        tracing::info!(network = %roster.network(), name = %roster.name(), "joined network");
        self.roster = Some(roster);
        self.link_new(&BTreeMap::new());
        let view = self.network_view()?;
        self.later.0.push(defer(joining.reply, view));
        self.greet_connected()
    }

    pub(crate) fn partner(&mut self, query: &str, action: &str) -> Result<NetworkView, EngineError> {
        let with = self.find_member(query)?;
        let roster = self.roster()?;
        if with == self.commune {
            return Err(invalid("commune", "a commune cannot partner with itself"));
        }
        let (me, them) = (roster.member(&self.commune), roster.member(&with));
        if let (Some(me), Some(them)) = (me, them)
            && me.country == them.country
        {
            return Err(invalid(
                "commune",
                format!(
                    "{} is in the same country ({}): partnerships join communes of two countries",
                    them.name, me.country
                ),
            ));
        }
        let declared_by_them = roster
            .partnerships()
            .find(|p| (p.a == with && p.b == self.commune) || (p.b == with && p.a == self.commune))
            .is_some_and(|p| if p.a == with { p.a_signed } else { p.b_signed });
        let body = match action {
            "propose" => Statement::Partner { with },
            "accept" if declared_by_them => Statement::Partner { with },
            "accept" => {
                return Err(conflict(format!(
                    "{} has not proposed a partnership to this commune (use `partner propose`)",
                    them.map_or_else(|| with.short(), |m| m.name.clone())
                )));
            }
            "end" => Statement::Unpartner { with },
            other => return Err(invalid("action", format!("unknown action {other:?}: propose, accept or end"))),
        };
        let s = self.sign(body)?;
        self.add_statements(vec![s], None)?;
        self.network_view()
    }

    pub(crate) fn revoke(&mut self, node: NodeId) -> Result<NetworkView, EngineError> {
        let roster = self.roster()?;
        if node == self.node_id {
            return Err(forbidden("that is this node's own key: rotate it first (`passerelle key rotate`)"));
        }
        let owner = self.book.commune_of(&node);
        if owner != Some(self.commune) && !roster.is_coordinator(&self.commune) {
            return Err(forbidden("a node key is revoked by its own commune or by a coordinator"));
        }
        // What the key signed so far, as this node holds it, stays valid.
        let mut kept = Vec::new();
        for id in self.store.doc_ids()? {
            for (_, record) in self.store.changes(&id, 0)? {
                if let Ok(stored) = record
                    && stored.envelope.author == node
                    && let Ok(change) = passerelle_protocol::automerge::Change::from_bytes(stored.envelope.change)
                {
                    kept.push(change.hash().0);
                }
            }
        }
        kept.truncate(passerelle_protocol::network::statement::MAX_KEPT);
        tracing::info!(node = %node.short(), kept = kept.len(), "revoking node key");
        let s = self.sign(Statement::Revoke { node, kept })?;
        self.add_statements(vec![s], None)?;
        self.network_view()
    }

    pub(crate) fn remove_member(&mut self, query: &str) -> Result<NetworkView, EngineError> {
        let member = self.find_member(query)?;
        let roster = self.roster()?;
        if !roster.is_coordinator(&self.commune) {
            return Err(forbidden("only a coordinator removes members"));
        }
        if Some(member) == roster.founder() {
            return Err(forbidden("the founder of the network cannot be removed"));
        }
        if member == self.commune {
            return Err(forbidden("a coordinator does not remove itself; ask another coordinator"));
        }
        let s = self.sign(Statement::Remove { member })?;
        self.add_statements(vec![s], None)?;
        self.network_view()
    }
}
