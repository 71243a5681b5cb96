//! Who this node links with, chosen from the roster so that the network
//! stays connected with few hops while no node has more than a handful of
//! links, whatever the network's size.
//!
//! The rule, which every node computes alike from the same roster:
//!
//! - **partners**, always (the cooperation itself);
//! - **members of its own country**: all of them when there are at most
//!   [`NEIGHBOURS`] others; otherwise its two neighbours on each of
//!   [`CYCLES`] rings that order the country's members by a hash of the
//!   network, the ring and the commune — a union of random rings, an
//!   expander: connected, with a diameter of a few hops, and each member
//!   has at most `2 × CYCLES = NEIGHBOURS` such links. A member this node
//!   has failed to reach for [`AWAY_AFTER_MS`] is stepped over on the
//!   rings (its neighbours see the same and link with each other), so the
//!   rings close again around a node that left; it comes back when it
//!   dials in;
//! - **bridges**: countries joined by partnerships form components; each
//!   component that does not hold the founder's country has one member
//!   (the first by hash) dial a coordinator of the founder's component, so
//!   a country whose communes have no partner yet is not cut off.
//!
//! Links made by this rule are `auto` in the peer record: when the roster
//! changes so that one is no longer chosen, it is forgotten. Peers an
//! operator added are never dropped by it, and a peer an operator removed
//! is not brought back until the roster changes who is chosen.

use std::collections::{BTreeMap, BTreeSet};

use sha2::{Digest, Sha256};

use crate::ids::{CommuneId, NetworkId, NodeId};
use crate::network::{Role, Roster};

use super::io::Output;
use super::{Millis, Replica};

/// Rings each country's members are ordered on.
pub const CYCLES: usize = 4;
/// Most links with members of the same country (partners come on top).
pub const NEIGHBOURS: usize = 2 * CYCLES;
/// A member not reached for this long is stepped over on the rings.
pub const AWAY_AFTER_MS: Millis = 10 * 60 * 1000;

/// A member as the link rule sees it.
#[derive(Debug, Clone)]
struct Candidate {
    commune: CommuneId,
    node: NodeId,
    country: String,
    addrs: Vec<String>,
    coordinator: bool,
}

fn rank(network: &NetworkId, salt: &[u8], commune: &CommuneId) -> [u8; 8] {
    let mut h = Sha256::new();
    h.update(b"passerelle/links");
    h.update(network.as_bytes());
    h.update(salt);
    h.update(commune.as_bytes());
    let full: [u8; 32] = h.finalize().into();
    full[..8].try_into().expect("8 of 32 bytes")
}

/// Whether a contact address can be dialled from elsewhere (a node that
/// listens on every interface names them as unspecified addresses).
fn dialable(addr: &str) -> bool {
    addr.starts_with('/') && !addr.contains("/ip4/0.0.0.0/") && !addr.contains("/ip6/::/")
}

/// The links the rule chooses for `me`: node → (addresses, whether this
/// side dials). `away` are members stepped over on the rings.
pub fn choose(roster: &Roster, me: &CommuneId, away: &BTreeSet<NodeId>) -> BTreeMap<NodeId, (Vec<String>, bool)> {
    let network = roster.network();
    let candidates: Vec<Candidate> = roster
        .members()
        .filter_map(|m| {
            let node = m.node?;
            if roster.is_revoked(&node, &m.commune) {
                return None;
            }
            Some(Candidate {
                commune: m.commune,
                node,
                country: m.country.clone(),
                addrs: m.addrs.iter().filter(|a| dialable(a)).cloned().collect(),
                coordinator: m.role == Role::Coordinator,
            })
        })
        .collect();
    let mut out = BTreeMap::new();
    let Some(mine) = roster.member(me) else { return out };
    let by_commune: BTreeMap<CommuneId, &Candidate> = candidates.iter().map(|c| (c.commune, c)).collect();
    for p in roster.partners_of(me) {
        if let Some(c) = by_commune.get(&p) {
            out.insert(c.node, (c.addrs.clone(), true));
        }
    }
    // Members of my country, on rings.
    let country: Vec<&Candidate> = candidates.iter().filter(|c| c.country == mine.country).collect();
    let others = country.iter().filter(|c| c.commune != *me).count();
    if others <= NEIGHBOURS {
        for c in country.iter().filter(|c| c.commune != *me) {
            out.insert(c.node, (c.addrs.clone(), true));
        }
    } else {
        for ring in 0..CYCLES {
            let salt = [b'r', ring as u8];
            let mut order: Vec<(&Candidate, [u8; 8])> = country
                .iter()
                .filter(|c| c.commune == *me || !away.contains(&c.node))
                .map(|c| (*c, rank(&network, &salt, &c.commune)))
                .collect();
            order.sort_by_key(|(c, r)| (*r, c.commune));
            let Some(at) = order.iter().position(|(c, _)| c.commune == *me) else { continue };
            let n = order.len();
            if n < 2 {
                continue;
            }
            for c in [order[(at + 1) % n].0, order[(at + n - 1) % n].0] {
                if c.commune != *me {
                    out.insert(c.node, (c.addrs.clone(), true));
                }
            }
        }
    }
    // Bridges between components of countries joined by partnerships.
    for (node, addrs, dials) in bridges(roster, &candidates, me) {
        out.entry(node).or_insert((addrs, dials));
    }
    out.retain(|node, _| by_commune.get(me).is_none_or(|c| c.node != *node));
    out
}

/// The bridge links `me` takes part in: (peer, its addresses, whether
/// `me` dials).
fn bridges(roster: &Roster, candidates: &[Candidate], me: &CommuneId) -> Vec<(NodeId, Vec<String>, bool)> {
    let Some(founder) = roster.founder() else { return Vec::new() };
    let network = roster.network();
    let country_of: BTreeMap<CommuneId, &str> = roster.members().map(|m| (m.commune, m.country.as_str())).collect();
    // Union-find over countries, joined by active partnerships.
    let mut parent: BTreeMap<&str, &str> = country_of.values().map(|c| (*c, *c)).collect();
    fn find<'a>(parent: &mut BTreeMap<&'a str, &'a str>, x: &'a str) -> &'a str {
        let mut r = x;
        while parent[r] != r {
            r = parent[r];
        }
        parent.insert(x, r);
        r
    }
    for p in roster.partnerships().filter(|p| p.active()) {
        if let (Some(a), Some(b)) = (country_of.get(&p.a), country_of.get(&p.b)) {
            let (ra, rb) = (find(&mut parent, a), find(&mut parent, b));
            if ra != rb {
                parent.insert(ra.max(rb), ra.min(rb));
            }
        }
    }
    let Some(root_country) = country_of.get(&founder).copied() else { return Vec::new() };
    let root = find(&mut parent, root_country);
    let component_of: BTreeMap<CommuneId, &str> =
        candidates.iter().map(|c| (c.commune, find(&mut parent, country_of[&c.commune]))).collect();
    let coordinators: Vec<&Candidate> =
        candidates.iter().filter(|c| c.coordinator && component_of.get(&c.commune) == Some(&root)).collect();
    let mut components: BTreeMap<&str, Vec<&Candidate>> = BTreeMap::new();
    for c in candidates {
        let comp = component_of[&c.commune];
        if comp != root {
            components.entry(comp).or_default().push(c);
        }
    }
    let mut out = Vec::new();
    for (comp, members) in components {
        let salt = [b"bridge/".as_slice(), comp.as_bytes()].concat();
        let Some(from) = members.iter().min_by_key(|c| (rank(&network, &salt, &c.commune), c.commune)) else {
            continue;
        };
        let Some(to) = coordinators.iter().min_by_key(|c| (rank(&network, &salt, &c.commune), c.commune)) else {
            continue;
        };
        if from.commune == *me {
            out.push((to.node, to.addrs.clone(), true));
        } else if to.commune == *me {
            out.push((from.node, from.addrs.clone(), false));
        }
    }
    out
}

impl Replica {
    /// The peers the rule chose that this node dials.
    pub fn chosen_links(&self) -> Vec<NodeId> {
        self.desired.iter().filter(|(_, (_, dials))| *dials).map(|(n, _)| *n).collect()
    }

    /// The links the rule chooses now (none without a roster, or with
    /// `auto_links` off).
    pub(super) fn desired_links(&self) -> BTreeMap<NodeId, (Vec<String>, bool)> {
        let Some(roster) = &self.roster else { return BTreeMap::new() };
        if !self.config.auto_links {
            return BTreeMap::new();
        }
        let mut out = choose(roster, &self.me.commune(), &self.away);
        // Without a contact address, a peer is dialled through relays, if any.
        out.retain(|_, (addrs, _)| !addrs.is_empty() || self.config.uses_relays);
        out
    }

    /// Applies the rule again: links newly chosen are made (unless an
    /// operator already configured them), auto links no longer chosen are
    /// forgotten.
    pub(super) fn relink(&mut self) {
        let desired = self.desired_links();
        let before = std::mem::take(&mut self.desired);
        for (node, (addrs, dials)) in &desired {
            if before.contains_key(node) || self.peers.get(node).is_some_and(|p| p.configured) {
                continue;
            }
            if !dials {
                // The other side dials; this one only expects it.
                continue;
            }
            tracing::info!(peer = %node.short(), "linking with a member the roster names");
            let record = self.peer_mut(*node);
            record.configured = true;
            record.auto = true;
            for a in addrs {
                if !record.addrs.contains(a) {
                    record.addrs.push(a.clone());
                }
            }
            self.push(Output::Dial { node: *node, addrs: addrs.clone() });
        }
        for node in before.keys().filter(|n| !desired.contains_key(n)) {
            let Some(record) = self.peers.get_mut(node) else { continue };
            if !record.auto {
                continue;
            }
            tracing::info!(peer = %node.short(), "no longer a chosen link: forgetting it");
            record.configured = false;
            record.auto = false;
            self.dirty.insert(*node);
            self.push(Output::Forget { node: *node });
        }
        self.desired = desired;
    }

    /// Members not reached for [`AWAY_AFTER_MS`] change: the rings close
    /// around them (or open again).
    pub(super) fn check_away(&mut self, now: Millis) {
        let away: BTreeSet<NodeId> = self
            .unreachable
            .iter()
            .filter(|(n, since)| now - **since >= AWAY_AFTER_MS && !self.links.contains_key(n))
            .map(|(n, _)| *n)
            .collect();
        if away != self.away {
            self.away = away;
            self.relink();
        }
    }
}
