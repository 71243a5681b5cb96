//! What this node shares with whom: every document's heads, indexed by how
//! far it may travel, and the per-peer view the sync sessions read.
//!
//! Scopes decide the audience: a `network` document goes to every member; a
//! `partnership` document only to its owner and those of its writers that
//! are the owner's active partners (a request reaches the partner it is
//! addressed to, not the owner's other partners), or, when the owner is its
//! only writer, to the owner's active partners; never relayed to anyone
//! else, whoever holds it. A scope from a newer release is kept and sent to
//! nobody. Fingerprints are kept per audience (one set for network
//! documents, one per pair of owner and partner writer, one per owner for
//! documents to all its partners) and combined per peer, so a view costs a
//! few XORs, not a scan.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::fingerprint::{SetFingerprints, item_hash};
use super::message::Item;
use super::session::LocalSet;
use crate::header::{DocHeader, Scope};
use crate::ids::{CommuneId, DocId};
use crate::network::Roster;

/// Who may receive a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Audience {
    /// Every member.
    Network,
    /// The owner and those of the other writers that are its active
    /// partners; all its active partners when it has no other writer.
    Pair {
        /// The document's owner.
        owner: CommuneId,
        /// Its writers other than the owner (fixed by the header).
        with: Arc<[CommuneId]>,
    },
    /// Nobody (a scope this release does not know).
    Nobody,
}

impl Audience {
    /// The audience of a document with this header.
    pub fn of(header: &DocHeader) -> Self {
        match &header.scope {
            Scope::Network => Audience::Network,
            Scope::Partnership => {
                // Sorted and without duplicates: each pair's set holds a document once.
                let mut with: Vec<CommuneId> = header.writers.iter().filter(|w| **w != header.owner).copied().collect();
                with.sort();
                with.dedup();
                Audience::Pair { owner: header.owner, with: with.into() }
            }
            Scope::Unknown(_) => Audience::Nobody,
        }
    }

    /// Whether a node of `peer` may receive the document.
    pub fn admits(&self, peer: &CommuneId, roster: &Roster) -> bool {
        match self {
            Audience::Network => roster.is_member(peer),
            Audience::Pair { owner, with } => {
                owner == peer || ((with.is_empty() || with.contains(peer)) && roster.are_partners(owner, peer))
            }
            Audience::Nobody => false,
        }
    }

    /// Whether two nodes of `me` and `peer` compare the document when they
    /// reconcile: network documents between members, a pair's documents
    /// between its owner and a partner writer (two writers that are both
    /// partners of the owner each get it from the owner, or by live push),
    /// and between two nodes of one commune that may hold it.
    fn compared(&self, me: &CommuneId, peer: &CommuneId, roster: &Roster) -> bool {
        match self {
            Audience::Network => roster.is_member(me) && roster.is_member(peer),
            Audience::Pair { .. } if me == peer => self.admits(me, roster),
            Audience::Pair { owner, .. } => {
                (owner == me && self.admits(peer, roster)) || (owner == peer && self.admits(me, roster))
            }
            Audience::Nobody => false,
        }
    }
}

/// Every document's heads and audience, with fingerprints kept up to date
/// incrementally per audience.
#[derive(Debug, Default)]
pub struct SyncIndex {
    heads: BTreeMap<DocId, Vec<[u8; 32]>>,
    items: HashMap<DocId, ([u8; 16], Audience)>,
    network: SetFingerprints,
    /// Per (owner, other writer): the documents those two compare when they
    /// are partners.
    pairs: HashMap<(CommuneId, CommuneId), SetFingerprints>,
    /// Per owner: its partnership documents with no other writer, which
    /// all its partners compare with it.
    to_partners: HashMap<CommuneId, SetFingerprints>,
    /// Per owner: all its partnership documents (what two of its own nodes
    /// compare, with what its partners share with it).
    owned: HashMap<CommuneId, SetFingerprints>,
}

impl SyncIndex {
    /// Records a document's audience and current heads.
    pub fn set(&mut self, doc: DocId, audience: Audience, heads: Vec<[u8; 32]>) {
        let item = item_hash(&doc, &heads);
        let old = self.items.insert(doc, (item, audience.clone()));
        if old.as_ref() != Some(&(item, audience.clone())) {
            if let Some((old_item, old_audience)) = old {
                self.each_set(&old_audience, |fps| fps.remove(&doc, &old_item));
            }
            self.each_set(&audience, |fps| fps.update(&doc, None, &item));
        }
        self.heads.insert(doc, heads);
    }

    /// Runs `f` on each fingerprint set a document of `audience` is in.
    fn each_set(&mut self, audience: &Audience, mut f: impl FnMut(&mut SetFingerprints)) {
        match audience {
            Audience::Network => f(&mut self.network),
            Audience::Pair { owner, with } => {
                f(self.owned.entry(*owner).or_default());
                if with.is_empty() {
                    f(self.to_partners.entry(*owner).or_default());
                }
                for w in with.iter() {
                    f(self.pairs.entry((*owner, *w)).or_default());
                }
            }
            Audience::Nobody => {}
        }
    }

    /// A document's audience, if this node holds it.
    pub fn audience(&self, doc: &DocId) -> Option<&Audience> {
        self.items.get(doc).map(|(_, a)| a)
    }

    /// A document's heads, if this node holds it.
    pub fn heads(&self, doc: &DocId) -> Option<&[[u8; 32]]> {
        self.heads.get(doc).map(Vec::as_slice)
    }

    /// Whether `doc` may be sent to a node of `peer`.
    pub fn may_share(&self, doc: &DocId, peer: &CommuneId, roster: &Roster) -> bool {
        self.items.get(doc).is_some_and(|(_, a)| a.admits(peer, roster))
    }

    /// The documents of some buckets that nodes of `me` and `peer` compare.
    pub fn ids_in(&self, buckets: &[u8], me: &CommuneId, peer: &CommuneId, roster: &Roster) -> Vec<DocId> {
        buckets
            .iter()
            .flat_map(|b| {
                let (mut lo, mut hi) = ([0u8; 32], [0xffu8; 32]);
                lo[0] = *b;
                hi[0] = *b;
                self.heads.range(DocId::from_bytes(lo)..=DocId::from_bytes(hi)).map(|(id, _)| *id)
            })
            .filter(|id| self.items.get(id).is_some_and(|(_, a)| a.compared(me, peer, roster)))
            .collect()
    }

    /// The set this node (of commune `me`) shares with a peer, as the sync
    /// core reads it.
    pub fn view<'a>(&'a self, me: CommuneId, roster: &'a Roster) -> PeerView<'a> {
        PeerView { index: self, me, roster, apart: None }
    }

    /// A document's item (see [`crate::sync::fingerprint::item_hash`]), if
    /// this node holds it.
    pub fn item(&self, doc: &DocId) -> Option<[u8; 16]> {
        self.items.get(doc).map(|(i, _)| *i)
    }
}

/// A document this node and one peer leave out of their comparison: one
/// of them refused what the other holds of it (a change by a key revoked
/// since, dated ahead, of a role that may not write it), for a reason
/// that is not a fault, and both keep their state of it. It holds while
/// this node's state of the document is the one it was at the agreement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Apart {
    /// This node's item of the document at the agreement (`None`: it did
    /// not hold the document).
    pub item: Option<[u8; 16]>,
    /// When the two agreed (ms).
    pub since: i64,
    /// The refusal's reason code.
    pub code: String,
    /// Whether this node refused (else the peer did).
    pub refused_here: bool,
    /// The roster both held when they agreed (its fingerprint): a refusal
    /// may rest on what the roster says, so any change ends the agreement.
    pub roster: crate::xorset::Fingerprint,
    /// Whether the other side agreed too (the refusing side proposes; the
    /// document is left apart only once both hold it so).
    pub agreed: bool,
}

impl Apart {
    /// Whether the agreement holds: both sides agreed, the roster is the
    /// one they agreed under, and this node's state of the document is the
    /// one it had then.
    pub fn holds(&self, item: Option<[u8; 16]>, roster: &Roster) -> bool {
        self.agreed && self.item == item && self.roster == roster.fingerprint()
    }
}

/// The index seen from one peer's side: the documents both sides compare
/// (two honest nodes compute the same set for each other).
#[derive(Debug)]
pub struct PeerView<'a> {
    index: &'a SyncIndex,
    me: CommuneId,
    roster: &'a Roster,
    apart: Option<&'a BTreeMap<DocId, Apart>>,
}

impl<'a> PeerView<'a> {
    /// The same view, without the documents this node and the peer agreed
    /// to leave apart (those whose state here is still the agreed one).
    pub fn without(mut self, apart: Option<&'a BTreeMap<DocId, Apart>>) -> Self {
        self.apart = apart;
        self
    }

    /// The documents left apart that still hold and that this node holds,
    /// with their items; in one bucket, or all.
    fn kept_apart(&self, bucket: Option<u8>) -> impl Iterator<Item = (&'a DocId, [u8; 16])> + '_ {
        let (first, last) = bucket.map_or((0, 0xff), |b| (b, b));
        let (mut lo, mut hi) = ([0u8; 32], [0xffu8; 32]);
        lo[0] = first;
        hi[0] = last;
        let range = DocId::from_bytes(lo)..=DocId::from_bytes(hi);
        self.apart.into_iter().flat_map(move |m| m.range(range.clone())).filter_map(|(doc, a)| {
            let item = self.index.item(doc);
            (a.holds(item, self.roster)).then_some((doc, item?))
        })
    }
}

impl LocalSet for PeerView<'_> {
    fn fingerprints(&self, peer: &CommuneId) -> SetFingerprints {
        let (me, roster) = (&self.me, self.roster);
        let mut fps = if roster.is_member(peer) && roster.is_member(me) {
            self.index.network.clone()
        } else {
            SetFingerprints::default()
        };
        if me == peer {
            if let Some(own) = self.index.owned.get(me) {
                fps.merge(own);
            }
            for owner in roster.partners_of(me) {
                for p in [self.index.pairs.get(&(owner, *me)), self.index.to_partners.get(&owner)].into_iter().flatten()
                {
                    fps.merge(p);
                }
            }
        } else if roster.are_partners(me, peer) {
            for p in [
                self.index.pairs.get(&(*me, *peer)),
                self.index.pairs.get(&(*peer, *me)),
                self.index.to_partners.get(me),
                self.index.to_partners.get(peer),
            ]
            .into_iter()
            .flatten()
            {
                fps.merge(p);
            }
        }
        for (doc, item) in self.kept_apart(None) {
            if self.index.items.get(doc).is_some_and(|(_, a)| a.compared(me, peer, roster)) {
                fps.remove(doc, &item);
            }
        }
        fps
    }

    fn items(&self, peer: &CommuneId, bucket: u8) -> Vec<Item> {
        let apart: Vec<&DocId> = self.kept_apart(Some(bucket)).map(|(d, _)| d).collect();
        self.index
            .ids_in(&[bucket], &self.me, peer, self.roster)
            .into_iter()
            .filter(|id| !apart.contains(&id))
            .map(|id| (id, self.index.heads[&id].clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use crate::header::{DocHeader, DocKind, Scope};
    use crate::keys::SecretKey;
    use crate::network::{Role, SignedStatement, Statement};

    use super::*;

    fn key(seed: u8) -> SecretKey {
        SecretKey::from_seed([seed; 32])
    }

    /// Founder F (BE); members A (BE), B (BE), M (MA); A and M are partners.
    fn roster() -> Roster {
        let f = key(1);
        let mut r = Roster::founded(SignedStatement::found(&f, "R", "F", "BE", 1)).unwrap();
        let net = r.network();
        for (k, country) in [(key(2), "BE"), (key(3), "BE"), (key(4), "MA")] {
            let admit = Statement::Admit {
                member: k.commune_id(),
                name: "x".into(),
                country: country.into(),
                role: Role::Commune,
                invitation: [0; 16],
                node: k.node_id(),
                addrs: vec![],
            };
            r.insert(SignedStatement::sign(&f, net, 2, admit)).unwrap();
        }
        r.insert(SignedStatement::sign(&key(2), net, 3, Statement::Partner { with: key(4).commune_id() })).unwrap();
        r.insert(SignedStatement::sign(&key(4), net, 3, Statement::Partner { with: key(2).commune_id() })).unwrap();
        r
    }

    fn doc(index: &mut SyncIndex, owner: u8, scope: Scope, n: u8) -> DocId {
        doc_with(index, owner, &[], scope, n)
    }

    fn doc_with(index: &mut SyncIndex, owner: u8, writers: &[u8], scope: Scope, n: u8) -> DocId {
        let owner = key(owner).commune_id();
        let mut header = DocHeader::new(DocKind::Request, owner, scope, 1, [n; 16]);
        header.writers.extend(writers.iter().map(|w| key(*w).commune_id()));
        let id = header.id();
        index.set(id, Audience::of(&header), vec![[n; 32]]);
        id
    }

    #[test]
    fn each_peer_sees_the_network_and_only_its_partnerships() {
        let r = roster();
        let (a, b, m) = (key(2).commune_id(), key(3).commune_id(), key(4).commune_id());
        let mut index = SyncIndex::default();
        let n1 = doc(&mut index, 2, Scope::Network, 1);
        let p_a = doc_with(&mut index, 2, &[4], Scope::Partnership, 2);
        let p_m = doc_with(&mut index, 4, &[2], Scope::Partnership, 3);
        let p_b = doc(&mut index, 3, Scope::Partnership, 4);
        let unknown = doc(&mut index, 2, Scope::Unknown("event-only".into()), 5);

        assert!(index.may_share(&p_a, &m, &r) && index.may_share(&p_m, &a, &r));
        assert!(!index.may_share(&p_a, &b, &r), "B is not A's partner");
        assert!(!index.may_share(&unknown, &a, &r), "an unknown scope goes nowhere");
        assert!(index.may_share(&n1, &b, &r));

        // A and M compare the network document and both partnership sets.
        let a_for_m = index.view(a, &r).fingerprints(&m);
        let m_for_a = index.view(m, &r).fingerprints(&a);
        assert_eq!(a_for_m.total().count, 3);
        assert_eq!(a_for_m.total(), m_for_a.total(), "two nodes compute the same set for each other");
        // A and B compare only the network document (and neither holds the other's partnerships).
        assert_eq!(index.view(a, &r).fingerprints(&b).total().count, 1);
        let ids: Vec<DocId> = (0..=255u8).flat_map(|bucket| index.ids_in(&[bucket], &a, &b, &r)).collect();
        assert_eq!(ids, vec![n1]);
        assert!(!ids.contains(&p_b));

        // Heads move: the item moves with them, the count stays.
        index.set(n1, Audience::Network, vec![[9; 32]]);
        let moved = index.view(a, &r).fingerprints(&m);
        assert_eq!(moved.total().count, 3);
        assert_ne!(moved.total(), a_for_m.total());
    }

    /// A request A addresses to M reaches M, not A's other partner S, and
    /// the two do not even compare it; A's own nodes do. A document with no
    /// other writer goes to both partners.
    #[test]
    fn a_partnership_document_reaches_its_pair_only() {
        let mut r = roster();
        let f = key(1);
        let net = r.network();
        let spy = key(5);
        let admit = Statement::Admit {
            member: spy.commune_id(),
            name: "spy".into(),
            country: "MA".into(),
            role: Role::Commune,
            invitation: [1; 16],
            node: spy.node_id(),
            addrs: vec![],
        };
        r.insert(SignedStatement::sign(&f, net, 2, admit)).unwrap();
        r.insert(SignedStatement::sign(&key(2), net, 3, Statement::Partner { with: spy.commune_id() })).unwrap();
        r.insert(SignedStatement::sign(&spy, net, 3, Statement::Partner { with: key(2).commune_id() })).unwrap();
        let (a, m, s) = (key(2).commune_id(), key(4).commune_id(), spy.commune_id());
        assert!(r.are_partners(&a, &s) && r.are_partners(&a, &m));

        let mut index = SyncIndex::default();
        let to_m = doc_with(&mut index, 2, &[4], Scope::Partnership, 1);
        let to_s = doc_with(&mut index, 2, &[5], Scope::Partnership, 2);
        let alone = doc(&mut index, 2, Scope::Partnership, 3);
        let to_b = doc_with(&mut index, 2, &[3], Scope::Partnership, 4);

        assert!(index.may_share(&to_m, &m, &r) && !index.may_share(&to_m, &s, &r));
        assert!(index.may_share(&to_s, &s, &r) && !index.may_share(&to_s, &m, &r));
        assert!(index.may_share(&alone, &m, &r) && index.may_share(&alone, &s, &r), "no addressee: all partners");
        assert!(!index.may_share(&to_b, &key(3).commune_id(), &r), "a writer that is not a partner gets nothing");
        assert!(index.may_share(&alone, &a, &r), "the owner's other nodes hold everything it owns");

        let ids = |me: &CommuneId, peer: &CommuneId| -> Vec<DocId> {
            (0..=255u8).flat_map(|bucket| index.ids_in(&[bucket], me, peer, &r)).collect()
        };
        let sorted = |mut v: Vec<DocId>| {
            v.sort();
            v
        };
        assert_eq!(ids(&a, &s), sorted(vec![to_s, alone]));
        assert_eq!(ids(&a, &m), sorted(vec![to_m, alone]));
        assert_eq!(index.view(a, &r).fingerprints(&s).total().count, 2);
        assert_eq!(index.view(a, &r).fingerprints(&s).total(), index.view(s, &r).fingerprints(&a).total());
        // Two nodes of A compare all four; two nodes of M compare the one addressed to M.
        assert_eq!(index.view(a, &r).fingerprints(&a).total().count, 4);
        assert_eq!(ids(&a, &a).len(), 4);
        assert_eq!(index.view(m, &r).fingerprints(&m).total().count, 2);
        assert_eq!(ids(&m, &m), sorted(vec![to_m, alone]));
    }
}
