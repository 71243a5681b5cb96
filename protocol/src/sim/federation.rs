//! Building simulated federations: a founder, members of several
//! countries with their keys and admissions, partnerships, coordinators;
//! and the writes a commune makes (documents created and edited, signed
//! like a node signs them).

use automerge::Change;

use crate::book::CertificateBook;
use crate::certificate::NodeCertificate;
use crate::document::{self, Edit};
use crate::envelope::ChangeEnvelope;
use crate::header::{DocHeader, DocKind, Scope, SignedHeader};
use crate::ids::{CommuneId, DocId};
use crate::keys::SecretKey;
use crate::network::{Role, Roster, SignedStatement, Statement};
use crate::replica::{Me, Millis, Persisted, Replica, ReplicaConfig};

use super::{Access, Sim, SimNode};

/// The start of simulated time: 2027-01-01 (ms since the Unix epoch).
pub const EPOCH_MS: Millis = 1_798_761_600_000;

/// One member of a simulated federation.
#[derive(Debug, Clone)]
pub struct MemberSpec {
    /// Its commune's name.
    pub name: String,
    /// Its country.
    pub country: String,
    /// Its role.
    pub role: Role,
    /// Its access link.
    pub access: Access,
}

/// The keys of a simulated commune and its node.
#[derive(Debug, Clone)]
pub struct Keys {
    /// The commune key.
    pub commune: SecretKey,
    /// The node key.
    pub node: SecretKey,
    /// The commune's certificate of the node key.
    pub cert: NodeCertificate,
}

/// A federation's keys and founding statements, before any node runs.
#[derive(Debug)]
pub struct Federation {
    /// The founder's commune key (the founding coordinator, node 0).
    pub founder: SecretKey,
    /// The founding statement.
    pub found: SignedStatement,
    /// Each member's keys, by node index.
    pub keys: Vec<Keys>,
    /// Each member's admission (node 0's is the registration of its node).
    pub admits: Vec<SignedStatement>,
    /// Partnership statements (both sides).
    pub partnerships: Vec<SignedStatement>,
}

fn seed_key(tag: u8, i: usize, seed: u64) -> SecretKey {
    let mut s = [0u8; 32];
    s[0] = tag;
    s[1..9].copy_from_slice(&(i as u64).to_le_bytes());
    s[9..17].copy_from_slice(&seed.to_le_bytes());
    SecretKey::from_seed(s)
}

impl Federation {
    /// Keys and admissions for `members` (the first one founds the network
    /// and is a coordinator), drawn from `seed`.
    pub fn new(members: &[MemberSpec], seed: u64) -> Self {
        let keys: Vec<Keys> = (0..members.len())
            .map(|i| {
                let commune = seed_key(1, i, seed);
                let node = seed_key(2, i, seed);
                let cert = NodeCertificate::issue(&commune, node.node_id(), 0);
                Keys { commune, node, cert }
            })
            .collect();
        let founder = keys[0].commune.clone();
        let found = SignedStatement::found(&founder, "Réseau simulé", &members[0].name, &members[0].country, 1);
        let network = found.network;
        // The founder's node, as `network create` registers it.
        let addrs = vec![format!("/sim/{}", keys[0].node.node_id().short())];
        let mut admits = vec![SignedStatement::node(&founder, &keys[0].node, network, 2, addrs)];
        for (i, m) in members.iter().enumerate().skip(1) {
            admits.push(SignedStatement::sign(&founder, network, 10 + i as u64, admit(m, &keys[i])));
        }
        Self { founder, found, keys, admits, partnerships: Vec::new() }
    }

    /// Both sides' statements making `a` and `b` partners.
    pub fn partner(&mut self, a: usize, b: usize) {
        let network = self.found.network;
        for (x, y) in [(a, b), (b, a)] {
            let with = self.keys[y].commune.commune_id();
            self.partnerships.push(SignedStatement::sign(
                &self.keys[x].commune,
                network,
                100_000 + self.partnerships.len() as u64,
                Statement::Partner { with },
            ));
        }
    }

    /// The full roster: founding, every admission and partnership.
    pub fn roster(&self) -> Roster {
        let mut roster = Roster::founded(self.found.clone()).expect("the founding statement derives the network");
        roster.insert_all(self.admits.iter().cloned().chain(self.partnerships.iter().cloned()));
        roster
    }

    /// A roster holding only the founding and member `i`'s admission: what
    /// a node knows right after joining.
    pub fn roster_of(&self, i: usize) -> Roster {
        let mut roster = Roster::founded(self.found.clone()).expect("the founding statement derives the network");
        roster.insert_all([self.admits[i].clone()]);
        roster
    }

    /// A node for member `i` with `roster`, at `now`.
    pub fn node(&self, i: usize, spec: &MemberSpec, roster: Roster, config: ReplicaConfig, now: Millis) -> SimNode {
        let k = &self.keys[i];
        let mut book = CertificateBook::new();
        book.insert(k.cert.clone()).expect("a certificate the simulation issued verifies");
        let me = Me { node_key: k.node.clone(), certificate: k.cert.clone(), country: spec.country.clone() };
        let stored = Persisted { roster: Some(roster), book, ..Persisted::default() };
        SimNode::new(Replica::new(me, config, now, stored), spec.access)
    }
}

fn admit(m: &MemberSpec, k: &Keys) -> Statement {
    Statement::Admit {
        member: k.commune.commune_id(),
        name: m.name.clone(),
        country: m.country.clone(),
        role: m.role,
        invitation: [0; 16],
        node: k.node.node_id(),
        addrs: vec![format!("/sim/{}", k.node.node_id().short())],
    }
}

/// A document created by node `i` of `sim` (writers: its commune and
/// `writers`), stored there and announced. Returns its id.
pub fn create(sim: &mut Sim, keys: &Keys, i: usize, scope: Scope, writers: &[CommuneId], nonce: u64) -> DocId {
    let now = sim.now;
    let owner = keys.commune.commune_id();
    let mut all = vec![owner];
    all.extend(writers.iter().filter(|w| **w != owner).copied());
    let mut n = [0u8; 16];
    n[..8].copy_from_slice(&nonce.to_le_bytes());
    let header = DocHeader {
        kind: DocKind::Request,
        schema: crate::header::CONTENT_SCHEMA,
        owner,
        writers: all,
        scope,
        created_ms: now as u64,
        nonce: n,
    };
    let signed = SignedHeader::sign(header, &keys.node, keys.cert.clone());
    let id = signed.id();
    let mut doc = document::new_document(&keys.node.node_id());
    let edit = Edit::Text { field: "title".into(), lang: "fr".into(), text: format!("demande {nonce}") };
    let change = document::commit(&mut doc, &[edit], "create", now).expect("edit").expect("a change");
    write(sim, keys, i, Some(signed), id, &change);
    id
}

/// An edit of `doc` by node `i` (which must hold it and be a writer).
/// Returns whether a change was made.
pub fn edit(sim: &mut Sim, keys: &Keys, i: usize, doc: DocId, text: &str) -> bool {
    let now = sim.now;
    let Some(held) = sim.nodes[i].docs.docs.get_mut(&doc) else { return false };
    if !held.header.header.is_writer(&keys.commune.commune_id()) {
        return false;
    }
    let edit = Edit::Text { field: "title".into(), lang: "fr".into(), text: text.to_owned() };
    let Ok(Some(change)) = document::commit(&mut held.doc, &[edit], "edit", now) else { return false };
    write(sim, keys, i, None, doc, &change);
    true
}

fn write(sim: &mut Sim, keys: &Keys, i: usize, header: Option<SignedHeader>, doc: DocId, change: &Change) {
    let envelope = ChangeEnvelope::sign(doc, change, &keys.node);
    let now = sim.now;
    let node = &mut sim.nodes[i];
    let a = node.docs.write_local(&mut node.replica, header, doc, change, envelope, now);
    sim.commit_local(i, a);
}
