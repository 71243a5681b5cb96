//! The engine's side of membership: founding a network, issuing and
//! redeeming invitations, joining, partnerships, revocations and removals.
//! Every decision is a statement signed with the commune key, stored, added
//! to the roster and pushed to ready peers after the flush; the roster then
//! decides who may connect, write and receive what.

use std::collections::HashMap;

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
use crate::store::{InvitationRecord, Store, WriteOp};
use crate::views::{InviteRequest, InviteView, MemberView, NetworkView, NodeKeyView, PartnershipView};

/// Default lifetime of an invitation.
pub const DEFAULT_INVITATION_HOURS: u64 = 7 * 24;
/// Longest lifetime of an invitation.
pub const MAX_INVITATION_HOURS: u64 = 90 * 24;

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

/// Contact addresses as a roster names them: those others can reach
/// first, loopback last (kept for a federation on one machine), at most
/// [`MAX_ADDRS`].
fn contact_addrs(mut addrs: Vec<String>) -> Vec<String> {
    addrs.sort_by_key(|a| a.contains("/127.0.0.1/") || a.contains("/::1/"));
    addrs.truncate(MAX_ADDRS);
    addrs
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
        self.replica.roster().ok_or(EngineError::NoNetwork)
    }

    /// Adds statements signed here: persisted with the batch, pushed to
    /// peers after its flush.
    fn add_own(&mut self, statement: SignedStatement) {
        let now = clock::now_ms();
        self.replicate(|r, docs| r.add_statements(now, vec![statement], None, docs));
    }

    fn sign(&self, body: Statement) -> Result<SignedStatement, EngineError> {
        let roster = self.roster()?;
        Ok(SignedStatement::sign(&self.commune_key, roster.network(), clock::now_ms() as u64, body))
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
            .filter(|node| self.replica.book().commune_of(node).is_some_and(|c| roster.is_revoked(node, &c)))
            .collect();
        revoked.sort();
        revoked.dedup();
        let mut registered: HashMap<CommuneId, Vec<&NodeId>> = HashMap::new();
        for (node, commune) in roster.registered_nodes() {
            registered.entry(*commune).or_default().push(node);
        }
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
                        let mut keys: Vec<NodeKeyView> = registered
                            .get(&m.commune)
                            .into_iter()
                            .flatten()
                            .map(|node| NodeKeyView {
                                node: **node,
                                certified_ms: self.replica.book().get(node).map_or(0, |c| c.issued_ms),
                                revoked: roster.is_revoked(node, &m.commune),
                            })
                            .collect();
                        keys.sort_by_key(|k| (k.certified_ms, k.node));
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
            key_conflicts: roster.key_conflicts().copied().collect(),
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

    /// In a network whose roster does not register this node's key to this
    /// commune (the key was rotated), registers it: a `Node` statement
    /// signed by the commune key and the node key, at the addresses the
    /// commune's node had.
    pub(crate) fn register_node_key(&mut self) -> Result<(), EngineError> {
        let Some(roster) = self.replica.roster() else { return Ok(()) };
        if roster.commune_of_node(&self.node_id) == Some(self.commune) || !roster.is_member(&self.commune) {
            return Ok(());
        }
        let addrs = roster.member(&self.commune).map(|m| m.addrs.clone()).unwrap_or_default();
        let statement =
            SignedStatement::node(&self.commune_key, &self.node_key, roster.network(), clock::now_ms() as u64, addrs);
        tracing::info!(node = %self.node_id.short(), "registering this node's key in the roster");
        self.add_own(statement);
        self.store.flush()?;
        Ok(())
    }

    pub(crate) fn create_network(&mut self, name: String, addrs: Vec<String>) -> Result<NetworkView, EngineError> {
        if let Some(r) = self.replica.roster() {
            return Err(conflict(format!("this node is already in network {:?} ({})", r.name(), r.network())));
        }
        let name = name.trim().to_owned();
        if name.is_empty() || name.len() > passerelle_protocol::network::statement::MAX_NAME_BYTES {
            return Err(invalid("name", "give the network a name of 1 to 200 bytes"));
        }
        let found =
            SignedStatement::found(&self.commune_key, &name, &self.commune_name, &self.country, clock::now_ms() as u64);
        let mut roster = Roster::founded(found.clone()).map_err(|e| invalid("name", e.to_string()))?;
        // The founder's node, and where members reach it (no admission names it).
        let node = SignedStatement::node(
            &self.commune_key,
            &self.node_key,
            roster.network(),
            clock::now_ms() as u64,
            contact_addrs(addrs),
        );
        roster.insert(node.clone()).map_err(|e| invalid("name", e.to_string()))?;
        self.store.write(vec![WriteOp::Statement(found), WriteOp::Statement(node)])?;
        self.wrote = true;
        tracing::info!(network = %roster.network(), %name, "network founded");
        let now = clock::now_ms();
        self.replicate(|r, docs| r.set_roster(now, roster, docs));
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
        let addrs = contact_addrs(addrs);
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
        self.wrote = true;
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
        let roster = self.replica.roster().ok_or("this node is not in a network")?;
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
                self.replica.send_message(peer, &SyncMessage::JoinRefused { reason: reason.clone() });
                self.replica.note_refusal(peer, format!("invitation refused: {reason}"));
                return self.drive();
            }
        };
        if record.used_by == Some(certificate.commune) {
            tracing::info!(peer = %peer.short(), "invitation presented again by the commune it admitted: welcome again");
            let statements = self.roster()?.proof_for(&certificate.commune);
            self.replica.send_message(peer, &SyncMessage::Welcome { statements });
            return self.drive();
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
        self.replica.learn_certificate(certificate.clone());
        self.store.write(vec![WriteOp::Invitation(record)])?;
        self.add_own(admit);
        // Single use survives a crash: durable before the welcome leaves.
        self.store.flush()?;
        tracing::info!(peer = %peer.short(), commune = %certificate.commune.short(), name = %invitation.name, "invitation redeemed");
        // The proof of membership only: the rest of the roster follows in the
        // session's reconciliation, in bounded frames, before any document.
        let statements = self.roster()?.proof_for(&certificate.commune);
        self.replica.send_message(peer, &SyncMessage::Welcome { statements });
        self.drive()
    }

    pub(crate) fn begin_join(
        &mut self,
        invitation: Invitation,
        addrs: Vec<String>,
        reply: Reply<NetworkView>,
    ) -> Result<(), (EngineError, Reply<NetworkView>)> {
        if let Some(r) = self.replica.roster() {
            let e = conflict(format!("this node is already in network {:?} ({})", r.name(), r.network()));
            return Err((e, reply));
        }
        // A join whose caller gave up (timeout) may be started again.
        if self.joining.as_ref().is_some_and(|j| !j.is_closed()) {
            return Err((conflict("a join is already in progress"), reply));
        }
        if let Err(e) = invitation.verify(clock::now_ms() as u64) {
            return Err((invalid("token", e.to_string()), reply));
        }
        tracing::info!(issuer = %invitation.issuer_node.short(), "joining network {}", invitation.network.short());
        self.joining = Some(reply);
        self.replicate(|r, _| r.begin_join(invitation, addrs));
        Ok(())
    }

    /// The issuing node answered a join.
    pub(crate) fn finish_join(
        &mut self,
        from: NodeId,
        network: passerelle_protocol::ids::NetworkId,
        answer: Result<Vec<SignedStatement>, String>,
    ) -> Result<(), EngineError> {
        let Some(reply) = self.joining.take() else { return Ok(()) };
        let statements = match answer {
            Ok(s) => s,
            Err(reason) => {
                tracing::warn!(issuer = %from.short(), %reason, "join refused");
                // Nothing more to say to that node: stop redialling it.
                self.replicate(|r, _| r.join_refused(from, &reason));
                let _ = reply.send(Err(forbidden(format!("the coordinator's node refused: {reason}"))));
                return Ok(());
            }
        };
        let mut roster = Roster::new(network);
        let (_, refused) = roster.insert_all(statements);
        if !refused.is_empty() {
            tracing::warn!(count = refused.len(), "welcome carried statements that do not verify");
        }
        if !roster.is_member(&self.commune) {
            let e = forbidden("the welcome does not admit this commune (the roster it sent does not verify)");
            let _ = reply.send(Err(e));
            return Ok(());
        }
        self.store.write(roster.statements().cloned().map(WriteOp::Statement).collect())?;
        self.wrote = true;
        tracing::info!(network = %roster.network(), name = %roster.name(), "joined network");
        let now = clock::now_ms();
        self.replicate(|r, docs| r.set_roster(now, roster, docs));
        let view = self.network_view()?;
        self.later.0.push(defer(reply, view));
        Ok(())
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
        self.add_own(s);
        self.network_view()
    }

    pub(crate) fn revoke(&mut self, node: NodeId) -> Result<NetworkView, EngineError> {
        let roster = self.roster()?;
        if node == self.node_id {
            return Err(forbidden("that is this node's own key: rotate it first (`passerelle key rotate`)"));
        }
        let owner = self.replica.book().commune_of(&node);
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
        self.add_own(s);
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
        self.add_own(s);
        self.network_view()
    }
}
