//! The roster: the network's members, roles, revocations and partnerships,
//! folded from the grow-only set of signed statements.
//!
//! Every node holds the statements it has seen; two nodes with the same set
//! compute the same roster whatever order the statements arrived in. The
//! rules:
//!
//! - The founder (the signer of the `Found` statement the network id derives
//!   from) is a coordinator and cannot be removed.
//! - Only statements signed by a coordinator admit or remove members. For
//!   each commune, the latest such statement (by time, then hash) decides:
//!   an `Admit` makes it a member with that role, a `Remove` ends it.
//!   Coordinators are found as a fixpoint from the founder, so removing a
//!   coordinator also withdraws the admissions only it signed.
//! - A coordinator's `Remove` of a coordinator that admitted it (directly
//!   or not) does not count; should coordinators still remove each other in
//!   a cycle, the coordinators common to the cycle's sets are kept.
//! - An invitation admits one commune: a second `Admit` naming the same
//!   invitation for another commune is ignored.
//! - A node key is revoked by its own commune or by a coordinator; a revoked
//!   key's change is accepted only when every valid revocation lists it as
//!   kept. Which commune certifies a key is the certificate book's answer,
//!   so revocation checks take the certifying commune as an argument.
//! - A partnership is active when both members declared it (`Partner`) and
//!   neither ended it since (`Unpartner`); partners are from different
//!   countries, and neither is an observer.
//! - A commune's node keys are the one its admission names and those it
//!   registered since (`Node`, signed by the node key too), at most
//!   [`MAX_NODES_PER_COMMUNE`]; a key two communes claim belongs to neither.
//!
//! Only the statements that *count* — the founding, each member's deciding
//! admission or removal, the latest declarations of members about what
//! they may declare — are kept, fingerprinted and passed on; others (a
//! statement signed before its signer was admitted, a declaration since
//! superseded, anything from a non-member) wait in a small pool, bounded
//! per signer and in all, in case what makes them count arrives later.
//! What counts is a function of the statements held, so nodes that hold
//! the same ones agree, whatever the order they came in.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use super::statement::{Role, SignedStatement, Statement, network_id};
use crate::ids::{CommuneId, NetworkId, NodeId};
use crate::xorset::Fingerprint;

/// Rounds of the coordinator fixpoint before giving up on a cycle of
/// coordinators removing each other (the last round's answer is kept).
const MAX_FIXPOINT_ROUNDS: usize = 32;
/// Most members a network counts (the earliest admitted).
pub const MAX_MEMBERS: usize = 10_000;
/// Most node keys a commune registers (its latest `Node` statements).
pub const MAX_NODES_PER_COMMUNE: usize = 8;
/// Most communes a member declares partnerships with (its latest).
pub const MAX_PARTNER_DECLARATIONS: usize = 32;
/// A statement's time and hash with what it says: the latest wins.
type Latest<T> = (u64, [u8; 32], T);

/// Statements held that do not count, per signer and in all.
pub const MAX_PENDING_PER_SIGNER: usize = 16;
/// See [`MAX_PENDING_PER_SIGNER`].
pub const MAX_PENDING: usize = 1_024;
/// How far ahead of the receiver's clock a statement may be dated.
pub const MAX_STATEMENT_AHEAD_MS: u64 = 10 * 60 * 1000;

/// Why a statement is not added to the roster.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RosterError {
    /// The signature does not verify.
    #[error("statement {kind} by commune {signer} does not verify")]
    BadSignature {
        /// The statement kind.
        kind: &'static str,
        /// The claimed signer.
        signer: String,
    },
    /// The statement belongs to another network.
    #[error("statement of network {found}, not of this network {expected}")]
    OtherNetwork {
        /// This roster's network.
        expected: String,
        /// The statement's.
        found: String,
    },
    /// A `Found` statement that does not derive this network's id.
    #[error("founding statement does not derive network {0}")]
    NotTheFounding(String),
    /// Dated too far ahead of this node's clock: a decision from the
    /// future must not beat later ones.
    #[error("statement {kind} by commune {signer} is dated {ahead_ms} ms ahead of this node's clock")]
    FromTheFuture {
        /// The statement kind.
        kind: &'static str,
        /// The signer.
        signer: String,
        /// How far ahead.
        ahead_ms: u64,
    },
}

impl RosterError {
    /// A stable code, for counters.
    pub fn code(&self) -> &'static str {
        match self {
            RosterError::BadSignature { .. } => "statement_bad_signature",
            RosterError::OtherNetwork { .. } => "statement_other_network",
            RosterError::NotTheFounding(_) => "statement_not_the_founding",
            RosterError::FromTheFuture { .. } => "statement_from_the_future",
        }
    }
}

/// A current member.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Member {
    /// Its commune id.
    pub commune: CommuneId,
    /// Its name.
    pub name: String,
    /// Its country code.
    pub country: String,
    /// Its role.
    pub role: Role,
    /// When it was admitted (or founded the network).
    pub since_ms: u64,
    /// The coordinator that admitted it (itself for the founder).
    pub admitted_by: CommuneId,
    /// The node that joined for it and its addresses then (contact hints).
    pub node: Option<NodeId>,
    /// Addresses of that node.
    pub addrs: Vec<String>,
}

/// A partnership between two members, as their declarations make it.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Partnership {
    /// One side (the smaller id).
    pub a: CommuneId,
    /// The other side.
    pub b: CommuneId,
    /// Whether `a` declared it (and did not end it since).
    pub a_signed: bool,
    /// Whether `b` declared it (and did not end it since).
    pub b_signed: bool,
}

impl Partnership {
    /// Active when both sides signed it.
    pub fn active(&self) -> bool {
        self.a_signed && self.b_signed
    }
}

/// Revocations of one node key: each signer with the changes it keeps.
type Revocations = Vec<(CommuneId, HashSet<[u8; 32]>)>;

/// What the statements mean together; recomputed when a statement is added.
#[derive(Clone, Debug, Default)]
struct Folded {
    founder: Option<CommuneId>,
    name: String,
    members: BTreeMap<CommuneId, Member>,
    /// node -> (signer, kept) of every revocation statement.
    revocations: HashMap<NodeId, Revocations>,
    /// (a, b) with a < b -> declarations.
    partnerships: BTreeMap<(CommuneId, CommuneId), Partnership>,
    /// Registered node key -> its commune (keys two communes claim are left out).
    nodes: HashMap<NodeId, CommuneId>,
    /// Keys two or more communes claim.
    conflicts: BTreeSet<NodeId>,
    /// The statements that count, by hash.
    counting: BTreeSet<[u8; 32]>,
}

/// The statements of one network and what they mean. Cloning is cheap
/// (both are shared until one side changes), so a session can try a
/// hello's proof on a copy and a simulator can give hundreds of nodes the
/// same roster.
#[derive(Clone, Debug)]
pub struct Roster {
    network: NetworkId,
    /// Every statement held: those that count and the pool of those that
    /// do not (yet).
    statements: Arc<BTreeMap<[u8; 32], SignedStatement>>,
    /// Over the statements that count.
    fingerprint: Fingerprint,
    folded: Arc<Folded>,
    /// Statements that stopped counting since the last
    /// [`Roster::take_dropped`] (the store deletes them).
    dropped: Vec<[u8; 32]>,
}

/// A statement's 16-byte contribution to the roster fingerprint.
pub fn short_hash(hash: &[u8; 32]) -> [u8; 16] {
    hash[..16].try_into().expect("16 of 32 bytes")
}

impl Roster {
    /// An empty roster of `network` (statements are added with [`Roster::insert`]).
    pub fn new(network: NetworkId) -> Self {
        Self {
            network,
            statements: Arc::new(BTreeMap::new()),
            fingerprint: Fingerprint::default(),
            folded: Arc::new(Folded::default()),
            dropped: Vec::new(),
        }
    }

    /// The roster of a network founded by `found`.
    ///
    /// # Errors
    /// [`RosterError`] when `found` is not a valid founding statement.
    pub fn founded(found: SignedStatement) -> Result<Self, RosterError> {
        let mut roster = Self::new(found.network);
        roster.insert(found)?;
        Ok(roster)
    }

    /// The network's id.
    pub fn network(&self) -> NetworkId {
        self.network
    }

    /// The network's name, once the founding statement is known.
    pub fn name(&self) -> &str {
        &self.folded.name
    }

    /// The founder, once the founding statement is known.
    pub fn founder(&self) -> Option<CommuneId> {
        self.folded.founder
    }

    /// Checks and adds a statement. Returns whether it was new here
    /// (whether it counts or waits).
    ///
    /// # Errors
    /// [`RosterError`]; the roster is unchanged.
    pub fn insert(&mut self, statement: SignedStatement) -> Result<bool, RosterError> {
        let added = self.insert_unfolded(statement, None)?;
        if added {
            self.refold();
        }
        Ok(added)
    }

    /// Adds many statements, folding once. Returns the statements that
    /// count now and did not before (new ones, or waiting ones that now
    /// count), and the refused ones with their reasons.
    pub fn insert_all(
        &mut self,
        statements: impl IntoIterator<Item = SignedStatement>,
    ) -> (Vec<SignedStatement>, Vec<RosterError>) {
        self.insert_checked(statements, None)
    }

    /// Like [`Roster::insert_all`] for statements from peers at `now_ms`:
    /// those dated more than [`MAX_STATEMENT_AHEAD_MS`] ahead are refused.
    pub fn insert_all_at(
        &mut self,
        statements: impl IntoIterator<Item = SignedStatement>,
        now_ms: u64,
    ) -> (Vec<SignedStatement>, Vec<RosterError>) {
        self.insert_checked(statements, Some(now_ms))
    }

    fn insert_checked(
        &mut self,
        statements: impl IntoIterator<Item = SignedStatement>,
        now_ms: Option<u64>,
    ) -> (Vec<SignedStatement>, Vec<RosterError>) {
        let mut any = false;
        let mut refused = Vec::new();
        for s in statements {
            match self.insert_unfolded(s, now_ms) {
                Ok(true) => any = true,
                Ok(false) => {}
                Err(e) => refused.push(e),
            }
        }
        if !any {
            return (Vec::new(), refused);
        }
        let before = self.folded.counting.clone();
        self.refold();
        let new = self
            .folded
            .counting
            .iter()
            .filter(|h| !before.contains(*h))
            .filter_map(|h| self.statements.get(h).cloned())
            .collect();
        (new, refused)
    }

    fn insert_unfolded(&mut self, s: SignedStatement, now_ms: Option<u64>) -> Result<bool, RosterError> {
        if s.network != self.network {
            return Err(RosterError::OtherNetwork { expected: self.network.short(), found: s.network.short() });
        }
        if let Statement::Found { name, .. } = &s.body
            && network_id(&s.signer, name, s.issued_ms) != self.network
        {
            return Err(RosterError::NotTheFounding(self.network.short()));
        }
        if let Some(now) = now_ms
            && s.issued_ms > now + MAX_STATEMENT_AHEAD_MS
        {
            return Err(RosterError::FromTheFuture {
                kind: s.body.kind(),
                signer: s.signer.short(),
                ahead_ms: s.issued_ms - now,
            });
        }
        let hash = s.hash();
        if self.statements.contains_key(&hash) {
            return Ok(false);
        }
        s.verify().map_err(|_| RosterError::BadSignature { kind: s.body.kind(), signer: s.signer.short() })?;
        Arc::make_mut(&mut self.statements).insert(hash, s);
        Ok(true)
    }

    /// Statements that stopped counting since the last call (superseded, or
    /// their signer no longer may make them): the store forgets them.
    pub fn take_dropped(&mut self) -> Vec<[u8; 32]> {
        std::mem::take(&mut self.dropped)
    }

    /// Count and XOR of the statements' short hashes: equal fingerprints,
    /// equal rosters.
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    /// Every statement that counts, in hash order.
    pub fn statements(&self) -> impl Iterator<Item = &SignedStatement> {
        self.folded.counting.iter().filter_map(|h| self.statements.get(h))
    }

    /// Number of statements that count.
    pub fn len(&self) -> usize {
        self.folded.counting.len()
    }

    /// Whether no statement counts.
    pub fn is_empty(&self) -> bool {
        self.folded.counting.is_empty()
    }

    /// Statements held that do not count (yet), for reports.
    pub fn waiting(&self) -> usize {
        self.statements.len() - self.folded.counting.len()
    }

    /// The commune a node key is registered to, if exactly one claims it.
    pub fn commune_of_node(&self, node: &NodeId) -> Option<CommuneId> {
        self.folded.nodes.get(node).copied()
    }

    /// The node keys registered to `commune`.
    pub fn nodes_of(&self, commune: &CommuneId) -> Vec<NodeId> {
        let mut out: Vec<NodeId> = self.folded.nodes.iter().filter(|(_, c)| *c == commune).map(|(n, _)| *n).collect();
        out.sort();
        out
    }

    /// Every registered node key with its commune.
    pub fn registered_nodes(&self) -> impl Iterator<Item = (&NodeId, &CommuneId)> {
        self.folded.nodes.iter()
    }

    /// Node keys that two or more communes claim (registered to neither).
    pub fn key_conflicts(&self) -> impl Iterator<Item = &NodeId> {
        self.folded.conflicts.iter()
    }

    /// Whether a statement with this short hash is held.
    pub fn has_short_hash(&self, short: &[u8; 16]) -> bool {
        let mut lo = [0u8; 32];
        lo[..16].copy_from_slice(short);
        let mut hi = [0xffu8; 32];
        hi[..16].copy_from_slice(short);
        self.statements.range(lo..=hi).next().is_some()
    }

    /// Short hashes of every statement that counts, to tell a peer what
    /// this node has.
    pub fn short_hashes(&self) -> Vec<[u8; 16]> {
        self.folded.counting.iter().map(short_hash).collect()
    }

    /// The statements that count that a peer lacks, given the short hashes it has.
    pub fn missing_from(&self, theirs: &[[u8; 16]]) -> Vec<SignedStatement> {
        let theirs: HashSet<&[u8; 16]> = theirs.iter().collect();
        self.statements().filter(|s| !theirs.contains(&short_hash(&s.hash()))).cloned().collect()
    }

    /// Current members, by commune id.
    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.folded.members.values()
    }

    /// A current member.
    pub fn member(&self, commune: &CommuneId) -> Option<&Member> {
        self.folded.members.get(commune)
    }

    /// Whether `commune` is a current member.
    pub fn is_member(&self, commune: &CommuneId) -> bool {
        self.folded.members.contains_key(commune)
    }

    /// A current member's role.
    pub fn role(&self, commune: &CommuneId) -> Option<Role> {
        self.member(commune).map(|m| m.role)
    }

    /// Whether `commune` is a current coordinator.
    pub fn is_coordinator(&self, commune: &CommuneId) -> bool {
        self.role(commune) == Some(Role::Coordinator)
    }

    /// Whether `node` (certified by `commune`) is revoked.
    pub fn is_revoked(&self, node: &NodeId, commune: &CommuneId) -> bool {
        self.valid_revocations(node, commune).next().is_some()
    }

    fn valid_revocations<'a>(
        &'a self,
        node: &NodeId,
        commune: &'a CommuneId,
    ) -> impl Iterator<Item = &'a HashSet<[u8; 32]>> + 'a {
        self.folded
            .revocations
            .get(node)
            .into_iter()
            .flatten()
            .filter(move |(signer, _)| signer == commune || self.is_coordinator(signer))
            .map(|(_, kept)| kept)
    }

    /// Whether a change (by its Automerge hash) signed by `node`, certified by
    /// `commune`, is acceptable as far as revocations go: the key is not
    /// revoked, or every revocation of it keeps that change.
    pub fn change_allowed(&self, node: &NodeId, commune: &CommuneId, change: &[u8; 32]) -> bool {
        self.valid_revocations(node, commune).all(|kept| kept.contains(change))
    }

    /// Whether a node key may take part at all: its commune is a member,
    /// the key is registered to it, and not revoked.
    pub fn node_admitted(&self, node: &NodeId, commune: &CommuneId) -> Result<Role, String> {
        let Some(role) = self.role(commune) else {
            return Err(format!("commune {} is not a member of network {}", commune.short(), self.network.short()));
        };
        if self.folded.conflicts.contains(node) {
            return Err(format!("node key {} is claimed by more than one commune", node.short()));
        }
        if self.folded.nodes.get(node) != Some(commune) {
            return Err(format!("node key {} is not registered to commune {}", node.short(), commune.short()));
        }
        if self.is_revoked(node, commune) {
            return Err(format!("node key {} of commune {} is revoked", node.short(), commune.short()));
        }
        Ok(role)
    }

    /// Every partnership anyone declared.
    pub fn partnerships(&self) -> impl Iterator<Item = &Partnership> {
        self.folded.partnerships.values()
    }

    /// Whether `a` and `b` are active partners.
    pub fn are_partners(&self, a: &CommuneId, b: &CommuneId) -> bool {
        self.folded.partnerships.get(&pair(a, b)).is_some_and(Partnership::active)
    }

    /// The active partners of `commune`.
    pub fn partners_of(&self, commune: &CommuneId) -> Vec<CommuneId> {
        self.folded
            .partnerships
            .values()
            .filter(|p| p.active())
            .filter_map(|p| {
                if &p.a == commune {
                    Some(p.b)
                } else if &p.b == commune {
                    Some(p.a)
                } else {
                    None
                }
            })
            .collect()
    }

    /// The statements that prove `commune`'s membership to a node that knows
    /// nothing of it: the founding statement and where the founder's node
    /// is, and the chain of admissions from the founder down to it.
    pub fn proof_for(&self, commune: &CommuneId) -> Vec<SignedStatement> {
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        if let Some(found) = self.statements.values().find(|s| matches!(s.body, Statement::Found { .. })) {
            out.push(found.clone());
            let founder_node = self
                .statements
                .iter()
                .filter(|(_, s)| s.signer == found.signer && matches!(s.body, Statement::Node { .. }))
                .max_by_key(|(h, s)| (s.issued_ms, **h))
                .map(|(_, s)| s.clone());
            out.extend(founder_node);
        }
        // The commune's own latest registration of a node, if any (a key it
        // rotated to is not in its admission).
        if self.folded.founder != Some(*commune)
            && let Some(s) = self
                .statements()
                .filter(|s| &s.signer == commune && matches!(s.body, Statement::Node { .. }))
                .max_by_key(|s| (s.issued_ms, s.hash()))
        {
            out.push(s.clone());
        }
        let mut next = Some(*commune);
        while let Some(c) = next.take() {
            if !seen.insert(c) || Some(c) == self.folded.founder {
                break;
            }
            let Some(member) = self.folded.members.get(&c) else { break };
            if let Some(s) = self.deciding_admission(&c, &member.admitted_by) {
                out.push(s.clone());
            }
            next = Some(member.admitted_by);
        }
        out
    }

    fn deciding_admission(&self, member: &CommuneId, by: &CommuneId) -> Option<&SignedStatement> {
        self.statements
            .iter()
            .filter(|(_, s)| &s.signer == by && matches!(&s.body, Statement::Admit { member: m, .. } if m == member))
            .max_by_key(|(h, s)| (s.issued_ms, **h))
            .map(|(_, s)| s)
    }

    /// Recomputes what the statements mean.
    fn refold(&mut self) {
        let mut folded = Folded::default();
        let Some(found) = self.statements.values().find(|s| matches!(s.body, Statement::Found { .. })).cloned() else {
            self.settle(folded);
            return;
        };
        let found = &found;
        let founder = found.signer;
        folded.founder = Some(founder);
        let (mut commune_name, mut commune_country) = (String::new(), String::new());
        if let Statement::Found { name, commune, country } = &found.body {
            folded.name.clone_from(name);
            commune_name.clone_from(commune);
            commune_country.clone_from(country);
        }
        let founded_ms = found.issued_ms;

        // Decisions about members, by the given coordinators: for each
        // commune, their latest `Admit` or `Remove` (by time, then hash).
        // An invitation admits one commune: among the coordinators' `Admit`s
        // naming it, the first wins (statements by anyone else never count,
        // so nobody can burn another member's invitation). A coordinator's
        // `Remove` of one of its own ancestors in the admission chain does
        // not count: authority flows from the founder down.
        type Decisions<'a> = BTreeMap<CommuneId, (u64, [u8; 32], &'a SignedStatement)>;
        let decide = |coordinators: &BTreeSet<CommuneId>, previous: &Decisions<'_>| {
            let admitted_by = |c: &CommuneId| -> Option<CommuneId> { previous.get(c).map(|(_, _, s)| s.signer) };
            let is_ancestor = |m: &CommuneId, of: &CommuneId| {
                let mut cur = *of;
                for _ in 0..MAX_FIXPOINT_ROUNDS * 4 {
                    match admitted_by(&cur) {
                        Some(parent) if parent == *m => return true,
                        Some(parent) if parent != cur => cur = parent,
                        _ => return false,
                    }
                }
                false
            };
            let mut first_use: HashMap<[u8; 16], (u64, [u8; 32])> = HashMap::new();
            for (h, s) in self.statements.iter() {
                if let Statement::Admit { invitation, .. } = &s.body
                    && *invitation != [0; 16]
                    && coordinators.contains(&s.signer)
                {
                    let e = first_use.entry(*invitation).or_insert((s.issued_ms, *h));
                    if (s.issued_ms, *h) < *e {
                        *e = (s.issued_ms, *h);
                    }
                }
            }
            let mut latest: Decisions<'_> = BTreeMap::new();
            for (h, s) in self.statements.iter() {
                if !coordinators.contains(&s.signer) {
                    continue;
                }
                let member = match &s.body {
                    Statement::Admit { member, invitation, .. } => {
                        if *invitation != [0; 16] && first_use.get(invitation).is_some_and(|f| f.1 != *h) {
                            continue;
                        }
                        *member
                    }
                    Statement::Remove { member } => {
                        if is_ancestor(member, &s.signer) {
                            continue;
                        }
                        *member
                    }
                    _ => continue,
                };
                if member == founder {
                    continue;
                }
                let key = (s.issued_ms, *h);
                if latest.get(&member).is_none_or(|(t, lh, _)| key > (*t, *lh)) {
                    latest.insert(member, (s.issued_ms, *h, s));
                }
            }
            latest
        };
        let coordinators_of = |decisions: &Decisions<'_>| {
            let mut set = BTreeSet::from([founder]);
            for (member, (_, _, s)) in decisions {
                if matches!(s.body, Statement::Admit { role: Role::Coordinator, .. }) {
                    set.insert(*member);
                }
            }
            set
        };
        // Coordinators as a fixpoint from the founder. Should the rounds
        // cycle (coordinators removing each other), the fold settles on the
        // coordinators common to every set of the cycle: fewer powers, never
        // an inconsistent mix.
        let mut coordinators = BTreeSet::from([founder]);
        let mut decisions = decide(&coordinators, &BTreeMap::new());
        let mut seen: Vec<BTreeSet<CommuneId>> = vec![coordinators.clone()];
        for _ in 0..MAX_FIXPOINT_ROUNDS {
            let next = coordinators_of(&decisions);
            if next == coordinators {
                break;
            }
            if let Some(at) = seen.iter().position(|c| *c == next) {
                let mut common = next.clone();
                for c in &seen[at..] {
                    common.retain(|x| c.contains(x));
                }
                coordinators = common;
                decisions = decide(&coordinators, &decisions);
                break;
            }
            seen.push(next.clone());
            decisions = decide(&next, &decisions);
            coordinators = next;
        }

        folded.counting.insert(found.hash());
        folded.members.insert(
            founder,
            Member {
                commune: founder,
                name: commune_name,
                country: commune_country,
                role: Role::Coordinator,
                since_ms: founded_ms,
                admitted_by: founder,
                node: None,
                addrs: Vec::new(),
            },
        );
        // The earliest admitted members count, up to the bound.
        let mut admitted: Vec<(u64, CommuneId, [u8; 32], &SignedStatement)> =
            decisions.iter().map(|(m, (t, h, s))| (*t, *m, *h, *s)).collect();
        admitted.sort_by_key(|(t, m, _, _)| (*t, *m));
        let mut count = 1;
        for (_, member, hash, s) in admitted {
            // The deciding statement counts, admission or removal.
            folded.counting.insert(hash);
            if let Statement::Admit { name, country, role, node, addrs, .. } = &s.body {
                if count >= MAX_MEMBERS {
                    continue;
                }
                count += 1;
                folded.members.insert(
                    member,
                    Member {
                        commune: member,
                        name: name.clone(),
                        country: country.clone(),
                        role: *role,
                        since_ms: s.issued_ms,
                        admitted_by: s.signer,
                        node: Some(*node),
                        addrs: addrs.clone(),
                    },
                );
            }
        }
        // A member registers node keys: its latest `Node` statements count
        // (the latest names the node it runs now and where); with the
        // admission's node, they are its keys. A key two communes claim
        // belongs to neither.
        let mut registered: BTreeMap<CommuneId, Vec<Latest<&SignedStatement>>> = BTreeMap::new();
        for (h, s) in self.statements.iter() {
            if matches!(s.body, Statement::Node { .. }) && folded.members.contains_key(&s.signer) {
                registered.entry(s.signer).or_default().push((s.issued_ms, *h, s));
            }
        }
        let mut claims: BTreeMap<NodeId, BTreeSet<CommuneId>> = BTreeMap::new();
        for m in folded.members.values() {
            if let Some(node) = m.node {
                claims.entry(node).or_default().insert(m.commune);
            }
        }
        for (commune, mut list) in registered {
            list.sort_by_key(|(t, h, _)| std::cmp::Reverse((*t, *h)));
            list.truncate(MAX_NODES_PER_COMMUNE);
            for (i, (_, h, s)) in list.iter().enumerate() {
                let Statement::Node { node, addrs, .. } = &s.body else { continue };
                folded.counting.insert(*h);
                claims.entry(*node).or_default().insert(commune);
                if i == 0
                    && let Some(m) = folded.members.get_mut(&commune)
                {
                    m.node = Some(*node);
                    m.addrs = addrs.clone();
                }
            }
        }
        for (node, communes) in claims {
            if communes.len() == 1 {
                folded.nodes.insert(node, *communes.iter().next().expect("one claim"));
            } else {
                folded.conflicts.insert(node);
            }
        }
        let owner_of = |node: &NodeId, folded: &Folded| folded.nodes.get(node).copied();
        // Revocations by a coordinator or by the commune that registered the
        // key: the latest of each signer about each key counts, and is
        // checked against the certifying commune on use.
        let mut revokes: BTreeMap<(NodeId, CommuneId), (u64, [u8; 32], &SignedStatement)> = BTreeMap::new();
        for (h, s) in self.statements.iter() {
            let Statement::Revoke { node, .. } = &s.body else { continue };
            let may = coordinators.contains(&s.signer)
                || owner_of(node, &folded) == Some(s.signer)
                || folded.members.get(&s.signer).is_some_and(|m| m.node == Some(*node));
            if may && revokes.get(&(*node, s.signer)).is_none_or(|(t, lh, _)| (s.issued_ms, *h) > (*t, *lh)) {
                revokes.insert((*node, s.signer), (s.issued_ms, *h, s));
            }
        }
        for ((node, signer), (_, h, s)) in revokes {
            if let Statement::Revoke { kept, .. } = &s.body {
                folded.counting.insert(h);
                folded.revocations.entry(node).or_default().push((signer, kept.iter().copied().collect()));
            }
        }

        // Partnerships: per direction, the latest declaration of a member
        // about another decides (a member's latest declarations count, up to
        // the bound).
        let mut directed: BTreeMap<(CommuneId, CommuneId), (u64, [u8; 32], bool)> = BTreeMap::new();
        for (h, s) in self.statements.iter() {
            let (with, on) = match &s.body {
                Statement::Partner { with } => (*with, true),
                Statement::Unpartner { with } => (*with, false),
                _ => continue,
            };
            if !folded.members.contains_key(&s.signer) || !folded.members.contains_key(&with) {
                continue;
            }
            let key = (s.signer, with);
            if directed.get(&key).is_none_or(|(t, lh, _)| (s.issued_ms, *h) > (*t, *lh)) {
                directed.insert(key, (s.issued_ms, *h, on));
            }
        }
        let mut per_signer: BTreeMap<CommuneId, Vec<Latest<(CommuneId, bool)>>> = BTreeMap::new();
        for ((from, to), (t, h, on)) in directed {
            per_signer.entry(from).or_default().push((t, h, (to, on)));
        }
        for (from, mut list) in per_signer {
            list.sort_by_key(|(t, h, _)| std::cmp::Reverse((*t, *h)));
            list.truncate(MAX_PARTNER_DECLARATIONS);
            for (_, h, (to, on)) in list {
                folded.counting.insert(h);
                let (Some(mf), Some(mt)) = (folded.members.get(&from), folded.members.get(&to)) else { continue };
                // Partners are two members of different countries, neither an observer.
                if from == to || mf.country == mt.country || mf.role == Role::Observer || mt.role == Role::Observer {
                    continue;
                }
                let key = pair(&from, &to);
                let p = folded.partnerships.entry(key).or_insert(Partnership {
                    a: key.0,
                    b: key.1,
                    a_signed: false,
                    b_signed: false,
                });
                if from == key.0 {
                    p.a_signed = on;
                } else {
                    p.b_signed = on;
                }
            }
        }
        self.settle(folded);
    }

    /// Takes a new fold: the fingerprint follows the statements that count,
    /// those that stopped counting are noted for the store, and the pool of
    /// those that do not count is trimmed to its bounds (the oldest go).
    fn settle(&mut self, folded: Folded) {
        let previous = std::mem::take(&mut Arc::make_mut(&mut self.folded).counting);
        self.dropped.extend(previous.iter().filter(|h| !folded.counting.contains(*h)));
        let mut fingerprint = Fingerprint::default();
        for h in &folded.counting {
            fingerprint.toggle(&short_hash(h), true);
        }
        self.fingerprint = fingerprint;
        let mut waiting: BTreeMap<CommuneId, Vec<(u64, [u8; 32])>> = BTreeMap::new();
        for (h, s) in self.statements.iter().filter(|(h, _)| !folded.counting.contains(*h)) {
            waiting.entry(s.signer).or_default().push((s.issued_ms, *h));
        }
        let mut evict = Vec::new();
        let mut kept = Vec::new();
        for (_, mut list) in waiting {
            list.sort_by_key(|x| std::cmp::Reverse(*x));
            evict.extend(list.iter().skip(MAX_PENDING_PER_SIGNER).map(|(_, h)| *h));
            kept.extend(list.into_iter().take(MAX_PENDING_PER_SIGNER));
        }
        if kept.len() > MAX_PENDING {
            kept.sort_by_key(|x| std::cmp::Reverse(*x));
            evict.extend(kept.iter().skip(MAX_PENDING).map(|(_, h)| *h));
        }
        if !evict.is_empty() {
            let statements = Arc::make_mut(&mut self.statements);
            for h in evict {
                statements.remove(&h);
            }
        }
        self.folded = Arc::new(folded);
    }
}

fn pair(a: &CommuneId, b: &CommuneId) -> (CommuneId, CommuneId) {
    if a < b { (*a, *b) } else { (*b, *a) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::SecretKey;

    struct Net {
        founder: SecretKey,
        roster: Roster,
        t: u64,
    }

    fn key(seed: u8) -> SecretKey {
        SecretKey::from_seed([seed; 32])
    }

    impl Net {
        fn new() -> Self {
            let founder = key(1);
            let roster = Roster::founded(SignedStatement::found(&founder, "Réseau", "Secrétariat", "BE", 1)).unwrap();
            Self { founder, roster, t: 10 }
        }

        fn sign(&mut self, by: &SecretKey, body: Statement) -> SignedStatement {
            self.t += 1;
            SignedStatement::sign(by, self.roster.network(), self.t, body)
        }

        fn admit(&mut self, by: &SecretKey, member: &SecretKey, country: &str, role: Role) -> SignedStatement {
            let body = Statement::Admit {
                member: member.commune_id(),
                name: format!("c{}", member.public()[0]),
                country: country.into(),
                role,
                invitation: [0; 16],
                node: member.node_id(),
                addrs: vec![],
            };
            let s = self.sign(by, body);
            self.roster.insert(s.clone()).unwrap();
            s
        }

        fn say(&mut self, by: &SecretKey, body: Statement) -> SignedStatement {
            let s = self.sign(by, body);
            self.roster.insert(s.clone()).unwrap();
            s
        }
    }

    #[test]
    fn coordinators_admit_and_remove_members() {
        let mut n = Net::new();
        let founder = n.founder.clone();
        let (a, b, c) = (key(2), key(3), key(4));
        n.admit(&founder, &a, "BE", Role::Commune);
        assert!(n.roster.is_member(&a.commune_id()));
        // A plain member cannot admit anyone.
        n.admit(&a, &b, "MA", Role::Commune);
        assert!(!n.roster.is_member(&b.commune_id()));
        // A coordinator it names can; removing that coordinator withdraws it.
        n.admit(&founder, &c, "BE", Role::Coordinator);
        n.admit(&c, &b, "MA", Role::Commune);
        assert!(n.roster.is_member(&b.commune_id()));
        n.say(&founder, Statement::Remove { member: c.commune_id() });
        assert!(!n.roster.is_member(&c.commune_id()));
        assert!(!n.roster.is_member(&b.commune_id()), "admissions by a removed coordinator are withdrawn");
        // The founder cannot be removed.
        n.say(&founder, Statement::Remove { member: founder.commune_id() });
        assert!(n.roster.is_coordinator(&founder.commune_id()));
    }

    #[test]
    fn the_fold_does_not_depend_on_arrival_order() {
        let mut n = Net::new();
        let founder = n.founder.clone();
        let (a, b, c) = (key(2), key(3), key(4));
        let mut all = vec![n.roster.statements().next().unwrap().clone()];
        all.push(n.admit(&founder, &a, "BE", Role::Coordinator));
        all.push(n.admit(&a, &b, "MA", Role::Commune));
        all.push(n.admit(&founder, &c, "MA", Role::Observer));
        all.push(n.say(&a, Statement::Partner { with: b.commune_id() }));
        all.push(n.say(&b, Statement::Partner { with: a.commune_id() }));
        all.push(n.say(&founder, Statement::Remove { member: c.commune_id() }));
        all.push(n.say(&b, Statement::Revoke { node: b.node_id(), kept: vec![[1; 32]] }));
        let summary = |r: &Roster| {
            (
                r.members().map(|m| (m.commune, m.role)).collect::<Vec<_>>(),
                r.partners_of(&a.commune_id()),
                r.is_revoked(&b.node_id(), &b.commune_id()),
                r.fingerprint(),
            )
        };
        let expected = summary(&n.roster);
        for rotation in 0..all.len() {
            let mut order = all.clone();
            order.rotate_left(rotation);
            order.reverse();
            let mut r = Roster::new(n.roster.network());
            let (_, refused) = r.insert_all(order);
            assert!(refused.is_empty());
            assert_eq!(summary(&r), expected);
        }
    }

    #[test]
    fn partnerships_need_both_sides_of_different_countries() {
        let mut n = Net::new();
        let founder = n.founder.clone();
        let (be, ma, be2) = (key(2), key(3), key(4));
        n.admit(&founder, &be, "BE", Role::Commune);
        n.admit(&founder, &ma, "MA", Role::Commune);
        n.admit(&founder, &be2, "BE", Role::Commune);
        n.say(&be, Statement::Partner { with: ma.commune_id() });
        assert!(!n.roster.are_partners(&be.commune_id(), &ma.commune_id()));
        n.say(&ma, Statement::Partner { with: be.commune_id() });
        assert!(n.roster.are_partners(&ma.commune_id(), &be.commune_id()));
        assert_eq!(n.roster.partners_of(&be.commune_id()), vec![ma.commune_id()]);
        n.say(&be, Statement::Partner { with: be2.commune_id() });
        n.say(&be2, Statement::Partner { with: be.commune_id() });
        assert!(!n.roster.are_partners(&be.commune_id(), &be2.commune_id()), "same country");
        n.say(&ma, Statement::Unpartner { with: be.commune_id() });
        assert!(!n.roster.are_partners(&ma.commune_id(), &be.commune_id()));
    }

    #[test]
    fn revocation_keeps_only_the_listed_changes() {
        let mut n = Net::new();
        let founder = n.founder.clone();
        let (a, stranger) = (key(2), key(5));
        n.admit(&founder, &a, "BE", Role::Commune);
        let node = a.node_id();
        assert!(n.roster.change_allowed(&node, &a.commune_id(), &[9; 32]));
        // Nobody outside the commune and the coordinators can revoke its key.
        n.say(&stranger, Statement::Revoke { node, kept: vec![] });
        assert!(!n.roster.is_revoked(&node, &a.commune_id()));
        n.say(&a, Statement::Revoke { node, kept: vec![[1; 32]] });
        assert!(n.roster.is_revoked(&node, &a.commune_id()));
        assert!(n.roster.change_allowed(&node, &a.commune_id(), &[1; 32]));
        assert!(!n.roster.change_allowed(&node, &a.commune_id(), &[9; 32]));
        assert!(n.roster.node_admitted(&node, &a.commune_id()).is_err());
    }

    #[test]
    fn an_invitation_admits_one_commune() {
        let mut n = Net::new();
        let founder = n.founder.clone();
        let (a, b) = (key(2), key(3));
        for m in [&a, &b] {
            let body = Statement::Admit {
                member: m.commune_id(),
                name: "x".into(),
                country: "BE".into(),
                role: Role::Commune,
                invitation: [7; 16],
                node: m.node_id(),
                addrs: vec![],
            };
            n.say(&founder, body);
        }
        assert!(n.roster.is_member(&a.commune_id()));
        assert!(!n.roster.is_member(&b.commune_id()));
    }

    #[test]
    fn proofs_convince_a_node_that_knows_nothing() {
        let mut n = Net::new();
        let founder = n.founder.clone();
        let (c, m) = (key(2), key(3));
        n.admit(&founder, &c, "BE", Role::Coordinator);
        n.admit(&c, &m, "MA", Role::Commune);
        let proof = n.roster.proof_for(&m.commune_id());
        assert_eq!(proof.len(), 3);
        let mut fresh = Roster::new(n.roster.network());
        fresh.insert_all(proof);
        assert_eq!(fresh.node_admitted(&m.node_id(), &m.commune_id()), Ok(Role::Commune));
    }

    #[test]
    fn statements_of_other_networks_or_forged_are_refused() {
        let mut n = Net::new();
        let other = SignedStatement::found(&key(9), "Autre", "X", "BE", 1);
        assert!(matches!(n.roster.insert(other), Err(RosterError::OtherNetwork { .. })));
        let mut forged = n.sign(&key(2), Statement::Partner { with: key(3).commune_id() });
        forged.signer = key(3).commune_id();
        assert!(matches!(n.roster.insert(forged), Err(RosterError::BadSignature { .. })));
        let fake_found = SignedStatement::sign(
            &key(2),
            n.roster.network(),
            1,
            Statement::Found { name: "Réseau".into(), commune: "S".into(), country: "BE".into() },
        );
        assert!(matches!(n.roster.insert(fake_found), Err(RosterError::NotTheFounding(_))));
    }

    #[test]
    fn nobody_but_a_coordinator_can_burn_an_invitation() {
        let mut n = Net::new();
        let founder = n.founder.clone();
        let (victim, rogue) = (key(2), key(3));
        n.admit(&founder, &rogue, "BE", Role::Observer);
        let admit = |k: &SecretKey| Statement::Admit {
            member: k.commune_id(),
            name: "x".into(),
            country: "BE".into(),
            role: Role::Commune,
            invitation: [7; 16],
            node: k.node_id(),
            addrs: vec![],
        };
        n.say(&founder, admit(&victim));
        // The rogue member signs an admission naming the same invitation, dated earlier.
        let early = SignedStatement::sign(&rogue, n.roster.network(), 0, admit(&rogue));
        n.roster.insert(early).unwrap();
        assert!(n.roster.is_member(&victim.commune_id()), "the victim stays a member");
    }

    #[test]
    fn a_coordinator_cannot_remove_the_one_that_admitted_it() {
        let mut n = Net::new();
        let founder = n.founder.clone();
        let (c1, c2, x) = (key(2), key(3), key(4));
        n.admit(&founder, &c1, "BE", Role::Coordinator);
        n.admit(&c1, &c2, "BE", Role::Coordinator);
        n.admit(&c1, &x, "MA", Role::Commune);
        n.say(&c2, Statement::Remove { member: c1.commune_id() });
        for m in [&c1, &c2] {
            assert!(n.roster.is_coordinator(&m.commune_id()), "authority flows from the founder down");
        }
        assert!(n.roster.is_member(&x.commune_id()));
        // The founder can: the admissions only C1 signed go with it.
        n.say(&founder, Statement::Remove { member: c1.commune_id() });
        for m in [&c1, &c2, &x] {
            assert!(!n.roster.is_member(&m.commune_id()));
        }
    }
    #[test]
    fn statements_a_signer_may_not_make_neither_count_nor_travel() {
        let mut n = Net::new();
        let founder = n.founder.clone();
        let (a, b, c) = (key(2), key(3), key(4));
        n.admit(&founder, &a, "BE", Role::Commune);
        n.admit(&founder, &b, "MA", Role::Commune);
        let before = (n.roster.fingerprint(), n.roster.len());
        // A plain member admits someone, revokes another's key; a stranger declares a partnership.
        let bad = [
            n.sign(
                &a,
                Statement::Admit {
                    member: c.commune_id(),
                    name: "c".into(),
                    country: "BE".into(),
                    role: Role::Coordinator,
                    invitation: [0; 16],
                    node: c.node_id(),
                    addrs: vec![],
                },
            ),
            n.sign(&a, Statement::Revoke { node: b.node_id(), kept: vec![] }),
            n.sign(&c, Statement::Partner { with: a.commune_id() }),
        ];
        let (new, refused) = n.roster.insert_all(bad.clone());
        assert!(new.is_empty() && refused.is_empty());
        assert_eq!((n.roster.fingerprint(), n.roster.len()), before, "nothing that does not count is fingerprinted");
        assert_eq!(n.roster.waiting(), 3);
        assert!(n.roster.statements().all(|s| !bad.contains(s)), "nor passed on");
        assert!(!n.roster.is_revoked(&b.node_id(), &b.commune_id()));
    }

    #[test]
    fn a_statement_counts_once_what_allows_it_arrives_whatever_the_order() {
        let mut n = Net::new();
        let founder = n.founder.clone();
        let (c, m) = (key(2), key(3));
        let make_c = n.sign(
            &founder,
            Statement::Admit {
                member: c.commune_id(),
                name: "c".into(),
                country: "BE".into(),
                role: Role::Coordinator,
                invitation: [0; 16],
                node: c.node_id(),
                addrs: vec![],
            },
        );
        let c_admits_m = n.sign(
            &c,
            Statement::Admit {
                member: m.commune_id(),
                name: "m".into(),
                country: "MA".into(),
                role: Role::Commune,
                invitation: [0; 16],
                node: m.node_id(),
                addrs: vec![],
            },
        );
        // The admission by C first: it waits.
        let (new, _) = n.roster.insert_all([c_admits_m.clone()]);
        assert!(new.is_empty() && !n.roster.is_member(&m.commune_id()));
        // C's own admission arrives: both count now.
        let (new, _) = n.roster.insert_all([make_c.clone()]);
        assert_eq!(new.len(), 2, "{new:?}");
        assert!(n.roster.is_member(&m.commune_id()));
    }

    #[test]
    fn what_a_signer_can_pile_up_is_bounded() {
        let mut n = Net::new();
        let founder = n.founder.clone();
        let (a, b, stranger) = (key(2), key(3), key(9));
        n.admit(&founder, &a, "BE", Role::Commune);
        n.admit(&founder, &b, "MA", Role::Commune);
        // A member toggling a partnership a thousand times: only the latest counts.
        let base = n.roster.len();
        for i in 0..1_000 {
            let body = if i % 2 == 0 {
                Statement::Partner { with: b.commune_id() }
            } else {
                Statement::Unpartner { with: b.commune_id() }
            };
            n.say(&a, body);
        }
        assert_eq!(n.roster.len(), base + 1);
        let dropped = n.roster.take_dropped();
        assert_eq!(dropped.len(), 999, "each superseded declaration is dropped from the store");
        // A non-member signing a thousand statements: a handful wait, the
        // rest are gone (as are all but a handful of A's superseded ones).
        for _ in 0..1_000 {
            n.say(&stranger, Statement::Partner { with: a.commune_id() });
        }
        assert_eq!(n.roster.waiting(), 2 * MAX_PENDING_PER_SIGNER);
    }

    #[test]
    fn statements_from_the_future_are_refused() {
        let mut n = Net::new();
        let a = key(2);
        let late =
            SignedStatement::sign(&a, n.roster.network(), 10_000_000, Statement::Partner { with: key(3).commune_id() });
        let (_, refused) = n.roster.insert_all_at([late.clone()], 10_000_000 - MAX_STATEMENT_AHEAD_MS - 1);
        assert!(matches!(refused[..], [RosterError::FromTheFuture { .. }]));
        let (_, refused) = n.roster.insert_all_at([late], 10_000_000 - MAX_STATEMENT_AHEAD_MS);
        assert!(refused.is_empty());
    }

    #[test]
    fn node_keys_belong_to_the_commune_that_registered_them() {
        let mut n = Net::new();
        let founder = n.founder.clone();
        let (a, b) = (key(2), key(3));
        n.admit(&founder, &a, "BE", Role::Commune);
        n.admit(&founder, &b, "MA", Role::Commune);
        let network = n.roster.network();
        // A rotated key, registered by A with the key's own signature: A's.
        let new_key = key(20);
        n.t += 1;
        let rotate = SignedStatement::node(&a, &new_key, network, n.t, vec![]);
        n.roster.insert(rotate).unwrap();
        assert_eq!(n.roster.commune_of_node(&new_key.node_id()), Some(a.commune_id()));
        assert!(n.roster.node_admitted(&new_key.node_id(), &a.commune_id()).is_ok());
        // B claiming that key without it signing: refused outright.
        let mut forged = SignedStatement::node(&b, &key(21), network, n.t + 1, vec![]);
        if let Statement::Node { node, .. } = &mut forged.body {
            *node = new_key.node_id();
        }
        forged = SignedStatement::sign(&b, network, n.t + 1, forged.body);
        assert!(matches!(n.roster.insert(forged), Err(RosterError::BadSignature { .. })));
        // A key that signs for both communes belongs to neither.
        let both = SignedStatement::node(&b, &new_key, network, n.t + 2, vec![]);
        n.roster.insert(both).unwrap();
        assert_eq!(n.roster.key_conflicts().collect::<Vec<_>>(), vec![&new_key.node_id()]);
        assert!(n.roster.node_admitted(&new_key.node_id(), &a.commune_id()).is_err());
        assert!(n.roster.node_admitted(&new_key.node_id(), &b.commune_id()).is_err());
        // A key nobody registered is admitted nowhere.
        assert!(n.roster.node_admitted(&key(22).node_id(), &a.commune_id()).is_err());
    }
}
