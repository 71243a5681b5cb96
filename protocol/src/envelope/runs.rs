//! Covered runs: one signature for a run of changes.
//!
//! An Automerge change's bytes name the hashes of its parents, and a hash
//! is SHA-256 over a change's bytes; so an author's signature over one
//! change covers the exact bytes of every ancestor. A sender leaves out the
//! signatures of changes that a later signed change of the same author, in
//! the same document and the same batch, descends from ([`cover_runs`]); a
//! receiver accepts a change without a signature only when such a signed
//! change, whose signature holds, is in the batch and reaches it through
//! the parents named in the batch's own bytes ([`covered`]). Every check
//! but the signature (the change's actor is its author, the author may
//! write, membership, revocation by hash) still runs on each change.

use std::collections::{HashMap, HashSet};

use sha2::{Digest, Sha256};

use super::ChangeEnvelope;
use crate::ids::{DocId, NodeId};

/// The first bytes of every Automerge chunk.
const MAGIC: [u8; 4] = [0x85, 0x6f, 0x4a, 0x83];
/// Automerge's chunk type of an uncompressed change.
const CHANGE_CHUNK: u8 = 1;
/// The most steps (a change visited while looking for covers) one batch's
/// check may take: each author with changes to cover walks its document's
/// changes once, so a peer cannot make the check cost more than this
/// (an honest frame needs far less: authors × changes of a document).
pub const MAX_RUN_WORK: usize = 4_000_000;
/// A batch cut for covers grows at most to this many change bytes...
const MAX_CUT_BYTES: usize = 3 * 1024 * 1024;
/// ...and this many changes (frames must stay within the wire's bounds).
const MAX_CUT_CHANGES: usize = 10_000;

/// A change's hash and its parents' hashes, read from its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeLinks {
    /// The change's hash, as Automerge computes it.
    pub hash: [u8; 32],
    /// The hashes of its parents.
    pub deps: Vec<[u8; 32]>,
}

fn uleb(bytes: &mut &[u8]) -> Option<u64> {
    let mut value: u64 = 0;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = bytes.split_first()?;
        *bytes = rest;
        value |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// Reads a change's hash and parents from its bytes (an uncompressed
/// Automerge change chunk, as `Change::raw_bytes` gives), without decoding
/// the rest; `None` for anything else.
pub fn change_links(bytes: &[u8]) -> Option<ChangeLinks> {
    if bytes.len() < 9 || bytes[..4] != MAGIC || bytes[8] != CHANGE_CHUNK {
        return None;
    }
    let mut body = &bytes[9..];
    let len = uleb(&mut body)?;
    if len != body.len() as u64 {
        return None;
    }
    // Automerge hashes the chunk's type, length and body; the checksum is
    // the hash's first bytes (a change whose checksum is wrong would not
    // load from a saved document).
    let hash: [u8; 32] = Sha256::digest(&bytes[8..]).into();
    if bytes[4..8] != hash[..4] {
        return None;
    }
    let n = usize::try_from(uleb(&mut body)?).ok()?;
    if n > body.len() / 32 {
        return None;
    }
    let deps = body[..n * 32].chunks_exact(32).map(|c| c.try_into().expect("32 bytes")).collect();
    Some(ChangeLinks { hash, deps })
}

/// One document's changes in a batch, with their links.
struct DocRun {
    /// Indices into the batch.
    idx: Vec<usize>,
    /// Links of each (by position in `idx`).
    links: Vec<Option<ChangeLinks>>,
    /// Position in `idx` of each hash.
    pos: HashMap<[u8; 32], usize>,
}

impl DocRun {
    fn new(envelopes: &[ChangeEnvelope], idx: Vec<usize>) -> Self {
        let links: Vec<Option<ChangeLinks>> = idx.iter().map(|&i| change_links(&envelopes[i].change)).collect();
        let pos = links.iter().enumerate().filter_map(|(p, l)| Some((l.as_ref()?.hash, p))).collect();
        Self { idx, links, pos }
    }

    /// Hashes of the ancestors, within the batch, of the changes at `roots`.
    fn ancestors(&self, roots: impl IntoIterator<Item = usize>) -> HashSet<[u8; 32]> {
        let mut seen = HashSet::new();
        let mut stack: Vec<usize> = roots.into_iter().collect();
        while let Some(p) = stack.pop() {
            for dep in self.links[p].iter().flat_map(|l| &l.deps) {
                if let Some(&q) = self.pos.get(dep)
                    && seen.insert(*dep)
                {
                    stack.push(q);
                }
            }
        }
        seen
    }

    /// The authors of the run, first seen first, for whom `wanted`.
    fn authors(&self, envelopes: &[ChangeEnvelope], wanted: impl Fn(&ChangeEnvelope) -> bool) -> Vec<NodeId> {
        let mut out: Vec<NodeId> = Vec::new();
        for &i in &self.idx {
            if wanted(&envelopes[i]) && !out.contains(&envelopes[i].author) {
                out.push(envelopes[i].author);
            }
        }
        out
    }
}

/// Each document's indices in `envelopes`, for documents where `wanted`.
fn by_doc(envelopes: &[ChangeEnvelope], wanted: impl Fn(&DocId) -> bool) -> Vec<Vec<usize>> {
    let mut order: Vec<DocId> = Vec::new();
    let mut groups: HashMap<DocId, Vec<usize>> = HashMap::new();
    for (i, e) in envelopes.iter().enumerate() {
        if !wanted(&e.doc) {
            continue;
        }
        groups
            .entry(e.doc)
            .or_insert_with(|| {
                order.push(e.doc);
                Vec::new()
            })
            .push(i);
    }
    order.into_iter().filter_map(|d| groups.remove(&d)).collect()
}

/// The covered envelopes of `envelopes` (those without a signature) that a
/// signed envelope of the same author and document, for which `holds`,
/// descends from within the batch; at most [`MAX_RUN_WORK`] steps.
pub fn covered(envelopes: &[ChangeEnvelope], holds: &[bool]) -> Vec<usize> {
    covered_within(envelopes, holds, MAX_RUN_WORK)
}

/// [`covered`], with its own bound on the work (a node checking its own
/// store may allow more).
pub fn covered_within(envelopes: &[ChangeEnvelope], holds: &[bool], mut budget: usize) -> Vec<usize> {
    let docs: HashSet<DocId> = envelopes.iter().filter(|e| e.signature.is_none()).map(|e| e.doc).collect();
    let mut out = Vec::new();
    for idx in by_doc(envelopes, |d| docs.contains(d)) {
        let run = DocRun::new(envelopes, idx);
        for author in run.authors(envelopes, |e| e.signature.is_none()) {
            let Some(left) = budget.checked_sub(run.idx.len()) else { return out };
            budget = left;
            let of_author = |p: &usize| envelopes[run.idx[*p]].author == author;
            let roots = (0..run.idx.len())
                .filter(of_author)
                .filter(|&p| holds[run.idx[p]] && envelopes[run.idx[p]].signature.is_some());
            let reached = run.ancestors(roots);
            for p in (0..run.idx.len()).filter(of_author) {
                let i = run.idx[p];
                if envelopes[i].signature.is_none() && run.links[p].as_ref().is_some_and(|l| reached.contains(&l.hash))
                {
                    out.push(i);
                }
            }
        }
    }
    out.sort_unstable();
    out
}

/// The covered envelopes of `envelopes` that nothing in it covers.
pub fn uncovered(envelopes: &[ChangeEnvelope]) -> Vec<usize> {
    let ok = covered(envelopes, &vec![true; envelopes.len()]);
    (0..envelopes.len()).filter(|i| envelopes[*i].signature.is_none() && ok.binary_search(i).is_err()).collect()
}

/// An order of `envelopes` in which each change comes after those of its
/// parents that are in the list (a stable topological order: a list in
/// causal order already stays as it is). A cover then always comes after
/// what it covers, where a cut looks for it.
pub fn causal_order(envelopes: &[ChangeEnvelope]) -> Vec<usize> {
    let links: Vec<Option<ChangeLinks>> = envelopes.iter().map(|e| change_links(&e.change)).collect();
    let pos: HashMap<([u8; 32], DocId), usize> =
        links.iter().enumerate().filter_map(|(i, l)| Some(((l.as_ref()?.hash, envelopes[i].doc), i))).collect();
    let mut placed = vec![false; envelopes.len()];
    let mut out = Vec::with_capacity(envelopes.len());
    // Depth-first, parents first, visiting the list in its own order.
    for first in 0..envelopes.len() {
        let mut stack = vec![(first, false)];
        while let Some((i, parents_done)) = stack.pop() {
            if placed[i] {
                continue;
            }
            if parents_done {
                placed[i] = true;
                out.push(i);
                continue;
            }
            stack.push((i, true));
            for dep in links[i].iter().flat_map(|l| l.deps.iter().rev()) {
                if let Some(&j) = pos.get(&(*dep, envelopes[i].doc))
                    && !placed[j]
                {
                    stack.push((j, false));
                }
            }
        }
    }
    out
}

/// Leaves out the signatures that the batch does not need: of each author's
/// changes to a document, those the author's last signed change in the
/// batch descends from. Returns how many signatures it left out.
pub fn cover_runs(changes: &mut [ChangeEnvelope]) -> usize {
    let mut left_out = 0;
    for idx in by_doc(changes, |_| true) {
        if idx.len() < 2 {
            continue;
        }
        let run = DocRun::new(changes, idx);
        for author in run.authors(changes, |_| true) {
            let Some(last) = (0..run.idx.len())
                .rev()
                .find(|&p| changes[run.idx[p]].author == author && changes[run.idx[p]].signature.is_some())
            else {
                continue;
            };
            let reached = run.ancestors([last]);
            for p in 0..run.idx.len() {
                let e = &mut changes[run.idx[p]];
                if e.author == author
                    && e.signature.is_some()
                    && run.links[p].as_ref().is_some_and(|l| reached.contains(&l.hash))
                {
                    e.signature = None;
                    left_out += 1;
                }
            }
        }
    }
    left_out
}

/// Where a batch that starts at `start` may end, at `want` or after it:
/// the first end (growing geometrically) at which every change without a
/// signature in `changes[start..end]` is covered within it, so that a batch
/// cut there can be checked on its own; it grows no further than the
/// wire's bounds allow (a change whose cover is not found then stays
/// uncovered: see [`uncovered`]).
pub fn covered_cut(changes: &[ChangeEnvelope], start: usize, want: usize) -> usize {
    let len = changes.len();
    let mut limit = start;
    let mut bytes = 0;
    while limit < len && limit - start < MAX_CUT_CHANGES && bytes < MAX_CUT_BYTES {
        bytes += changes[limit].change.len();
        limit += 1;
    }
    let mut end = want.clamp(start.min(len), len);
    loop {
        let slice = &changes[start..end];
        if end >= limit || slice.iter().all(|e| e.signature.is_some()) || uncovered(slice).is_empty() {
            return end;
        }
        end = (end + (end - start).max(16)).min(limit);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::verify_signatures;
    use crate::keys::SecretKey;
    use automerge::transaction::{CommitOptions, Transactable};
    use automerge::{ActorId, Automerge, ROOT};

    /// `n` changes of one document by `key`, each on the last.
    fn chain(doc: DocId, key: &SecretKey, n: usize) -> Vec<ChangeEnvelope> {
        let mut am = Automerge::new().with_actor(ActorId::from(key.public().as_slice()));
        (0..n)
            .map(|i| {
                let mut tx = am.transaction();
                tx.put(ROOT, "n", i as i64).unwrap();
                tx.commit_with(CommitOptions::default().with_time(1_000));
                ChangeEnvelope::sign(doc, &am.get_last_local_change().unwrap(), key)
            })
            .collect()
    }

    #[test]
    fn links_read_from_bytes_are_automerges() {
        let key = SecretKey::from_seed([3; 32]);
        let envs = chain(DocId::from_bytes([1; 32]), &key, 3);
        for (i, e) in envs.iter().enumerate() {
            let change = automerge::Change::from_bytes(e.change.clone()).unwrap();
            let links = change_links(&e.change).unwrap();
            assert_eq!(links.hash, change.hash().0);
            assert_eq!(links.deps, change.deps().iter().map(|d| d.0).collect::<Vec<_>>());
            assert_eq!(links.deps.len(), usize::from(i > 0));
        }
        assert_eq!(change_links(&envs[0].change[..20]), None);
        assert_eq!(change_links(b"not a change at all"), None);
    }

    #[test]
    fn one_signature_covers_a_run_and_nothing_else() {
        let (a, b) = (SecretKey::from_seed([3; 32]), SecretKey::from_seed([4; 32]));
        let (d1, d2) = (DocId::from_bytes([1; 32]), DocId::from_bytes([2; 32]));
        let mut batch: Vec<ChangeEnvelope> = chain(d1, &a, 5);
        batch.extend(chain(d2, &b, 3));
        let mut sealed = batch.clone();
        assert_eq!(cover_runs(&mut sealed), 4 + 2);
        assert!(sealed[4].signature.is_some() && sealed[7].signature.is_some());
        assert!(verify_signatures(&sealed).iter().all(Result::is_ok));

        // Without its last change, a run proves nothing.
        let cut: Vec<ChangeEnvelope> = sealed[..4].to_vec();
        assert!(verify_signatures(&cut).iter().all(|r| r.as_ref().unwrap_err().code() == "uncovered"));
        // A forged last signature leaves the run uncovered.
        let mut forged = sealed.clone();
        forged[4].signature.as_mut().unwrap()[0] ^= 1;
        let r = verify_signatures(&forged);
        assert!(r[..5].iter().all(Result::is_err) && r[5..].iter().all(Result::is_ok));
        // Another author's signature does not cover a's changes.
        let mut other = sealed[..4].to_vec();
        other.push(sealed[7].clone());
        assert!(verify_signatures(&other)[..4].iter().all(Result::is_err));
        // Nor does a's own later change of another document.
        let mut elsewhere = sealed[..4].to_vec();
        elsewhere.push(ChangeEnvelope { doc: d2, ..sealed[4].clone() });
        assert!(verify_signatures(&elsewhere)[..4].iter().all(Result::is_err));
        // Altered bytes of a covered change break the hash chain.
        let mut altered = sealed.clone();
        let last = altered[2].change.len() - 1;
        altered[2].change[last] ^= 1;
        assert!(verify_signatures(&altered)[2].is_err());
    }

    #[test]
    fn a_wrong_checksum_or_an_order_against_causality_is_seen() {
        let a = SecretKey::from_seed([3; 32]);
        let envs = chain(DocId::from_bytes([1; 32]), &a, 4);
        let mut bad = envs[1].change.clone();
        bad[5] ^= 1;
        assert_eq!(change_links(&bad), None);
        // A cover sent before what it covers is put after it.
        let mut shuffled = vec![envs[3].clone(), envs[1].clone(), envs[0].clone(), envs[2].clone()];
        cover_runs(&mut shuffled);
        let order = causal_order(&shuffled);
        let hashes: Vec<_> = order.iter().map(|&i| change_links(&shuffled[i].change).unwrap().hash).collect();
        let want: Vec<_> = envs.iter().map(|e| change_links(&e.change).unwrap().hash).collect();
        assert_eq!(hashes, want);
        assert_eq!(causal_order(&envs), vec![0, 1, 2, 3]);
        assert!(uncovered(&shuffled).is_empty());
        assert_eq!(uncovered(&shuffled[1..3]).len(), 2);
    }

    #[test]
    fn a_cut_waits_for_the_run_to_be_covered() {
        let a = SecretKey::from_seed([3; 32]);
        let mut changes = chain(DocId::from_bytes([1; 32]), &a, 40);
        cover_runs(&mut changes[..30]);
        // 0..29 are covered by 29: no cut before 30 can be checked alone.
        let end = covered_cut(&changes, 0, 5);
        assert!(end >= 30, "{end}");
        assert!(verify_signatures(&changes[..end]).iter().all(Result::is_ok));
        assert_eq!(covered_cut(&changes, 30, 31), 31);
        assert_eq!(covered_cut(&changes, 0, 100), 40);
    }
}
