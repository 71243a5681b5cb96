//! What this node shares with whom: every document's heads, indexed by how
//! far it may travel, and the per-peer view the sync sessions read.
//!
//! Scopes decide the audience: a `network` document goes to every member; a
//! `partnership` document only to its owner's nodes and the owner's active
//! partners (never relayed to anyone else, whoever holds it); a scope from a
//! newer release is kept and sent to nobody. Fingerprints are kept per
//! audience (one set for network documents, one per owner for partnership
//! documents) and combined per peer, so a view costs a few XORs, not a scan.

use std::collections::{BTreeMap, HashMap};

use super::fingerprint::{SetFingerprints, item_hash};
use super::message::Item;
use super::session::LocalSet;
use crate::header::Scope;
use crate::ids::{CommuneId, DocId};
use crate::network::Roster;

/// Who may receive a document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience {
    /// Every member.
    Network,
    /// The owner and its active partners.
    Partners(CommuneId),
    /// Nobody (a scope this release does not know).
    Nobody,
}

impl Audience {
    /// The audience of a document of `owner` with `scope`.
    pub fn of(scope: &Scope, owner: CommuneId) -> Self {
        match scope {
            Scope::Network => Audience::Network,
            Scope::Partnership => Audience::Partners(owner),
            Scope::Unknown(_) => Audience::Nobody,
        }
    }

    /// Whether a node of `peer` may receive the document.
    pub fn admits(&self, peer: &CommuneId, roster: &Roster) -> bool {
        match self {
            Audience::Network => roster.is_member(peer),
            Audience::Partners(owner) => owner == peer || roster.are_partners(owner, peer),
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
    partnership: HashMap<CommuneId, SetFingerprints>,
}

impl SyncIndex {
    /// Records a document's audience and current heads.
    pub fn set(&mut self, doc: DocId, audience: Audience, heads: Vec<[u8; 32]>) {
        let item = item_hash(&doc, &heads);
        let old = self.items.insert(doc, (item, audience));
        if old != Some((item, audience)) {
            if let Some((old_item, old_audience)) = old
                && let Some(fps) = self.fps_mut(old_audience)
            {
                fps.remove(&doc, &old_item);
            }
            if let Some(fps) = self.fps_mut(audience) {
                fps.update(&doc, None, &item);
            }
        }
        self.heads.insert(doc, heads);
    }

    fn fps_mut(&mut self, audience: Audience) -> Option<&mut SetFingerprints> {
        match audience {
            Audience::Network => Some(&mut self.network),
            Audience::Partners(owner) => Some(self.partnership.entry(owner).or_default()),
            Audience::Nobody => None,
        }
    }

    /// A document's audience, if this node holds it.
    pub fn audience(&self, doc: &DocId) -> Option<Audience> {
        self.items.get(doc).map(|(_, a)| *a)
    }

    /// A document's heads, if this node holds it.
    pub fn heads(&self, doc: &DocId) -> Option<&[[u8; 32]]> {
        self.heads.get(doc).map(Vec::as_slice)
    }

    /// Whether `doc` may be sent to a node of `peer`.
    pub fn may_share(&self, doc: &DocId, peer: &CommuneId, roster: &Roster) -> bool {
        self.items.get(doc).is_some_and(|(_, a)| a.admits(peer, roster))
    }

    /// Whether both `me` and `peer` may hold `doc`: what two nodes compare.
    fn common(&self, doc: &DocId, me: &CommuneId, peer: &CommuneId, roster: &Roster) -> bool {
        self.items.get(doc).is_some_and(|(_, a)| a.admits(peer, roster) && a.admits(me, roster))
    }

    /// The documents of some buckets that a node of `peer` may receive and
    /// this node (of commune `me`) may hold.
    pub fn ids_in(&self, buckets: &[u8], me: &CommuneId, peer: &CommuneId, roster: &Roster) -> Vec<DocId> {
        buckets
            .iter()
            .flat_map(|b| {
                let (mut lo, mut hi) = ([0u8; 32], [0xffu8; 32]);
                lo[0] = *b;
                hi[0] = *b;
                self.heads.range(DocId::from_bytes(lo)..=DocId::from_bytes(hi)).map(|(id, _)| *id)
            })
            .filter(|id| self.common(id, me, peer, roster))
            .collect()
    }

    /// The set this node (of commune `me`) shares with a peer, as the sync
    /// core reads it.
    pub fn view<'a>(&'a self, me: CommuneId, roster: &'a Roster) -> PeerView<'a> {
        PeerView { index: self, me, roster }
    }
}

/// The index seen from one peer's side: the documents both sides may hold
/// (two honest nodes compute the same set for each other).
#[derive(Debug)]
pub struct PeerView<'a> {
    index: &'a SyncIndex,
    me: CommuneId,
    roster: &'a Roster,
}

impl LocalSet for PeerView<'_> {
    fn fingerprints(&self, peer: &CommuneId) -> SetFingerprints {
        let (me, roster) = (&self.me, self.roster);
        let mut fps = if roster.is_member(peer) && roster.is_member(me) {
            self.index.network.clone()
        } else {
            SetFingerprints::default()
        };
        let audience = |c: &CommuneId| {
            let mut a = roster.partners_of(c);
            a.push(*c);
            a
        };
        let mine = audience(me);
        for owner in audience(peer).into_iter().filter(|o| mine.contains(o)) {
            if let Some(p) = self.index.partnership.get(&owner) {
                fps.merge(p);
            }
        }
        fps
    }

    fn items(&self, peer: &CommuneId, bucket: u8) -> Vec<Item> {
        self.index
            .ids_in(&[bucket], &self.me, peer, self.roster)
            .into_iter()
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
        let owner = key(owner).commune_id();
        let header = DocHeader::new(DocKind::Request, owner, scope.clone(), 1, [n; 16]);
        let id = header.id();
        index.set(id, Audience::of(&scope, owner), vec![[n; 32]]);
        id
    }

    #[test]
    fn each_peer_sees_the_network_and_only_its_partnerships() {
        let r = roster();
        let (a, b, m) = (key(2).commune_id(), key(3).commune_id(), key(4).commune_id());
        let mut index = SyncIndex::default();
        let n1 = doc(&mut index, 2, Scope::Network, 1);
        let p_a = doc(&mut index, 2, Scope::Partnership, 2);
        let p_m = doc(&mut index, 4, Scope::Partnership, 3);
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
}
