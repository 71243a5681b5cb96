//! The sled implementation of [`Store`].
//!
//! Everything lives in one tree so that one `apply_batch` is atomic across a
//! document's header, metadata, changes and indexes. Keys start with a byte
//! naming the record type:
//!
//! | prefix | key | value |
//! |---|---|---|
//! | `h` | doc id | signed header |
//! | `m` | doc id | metadata (JSON) |
//! | `c` | doc id, seq (u64 BE) | stored change |
//! | `s` | doc id | changes covered (u64 BE), Automerge save bytes |
//! | `x` | change hash | doc id, seq |
//! | `k` | node id | node certificate |
//! | `p` | node id | peer record (JSON) |
//! | `r` | statement hash | membership statement |
//! | `i` | invitation id | invitation record (JSON) |
//! | `q` | peer node id, priority (u64 BE), doc id | the peer's heads (or none: whole document) |
//! | `o` | peer node id, doc id | priority (u64 BE): finds a queued document |
//! | `b` | node id | that node's latest heartbeat: received (i64 BE), via (node id or zeros), signed heartbeat |

use std::path::Path;

use passerelle_protocol::certificate::NodeCertificate;
use passerelle_protocol::header::SignedHeader;
use passerelle_protocol::heartbeat::PulseChain;
use passerelle_protocol::ids::{DocId, NodeId};

use passerelle_protocol::network::SignedStatement;

use super::{
    ChangeRecord, DocMeta, InvitationRecord, PeerRecord, QueuedDoc, Snapshot, Store, StoreError, StoredChange,
    StoredHeartbeat, WriteOp,
};

/// The first byte of each record type's keys (the table above).
pub(super) mod prefix {
    pub const HEADER: u8 = b'h';
    pub const META: u8 = b'm';
    pub const CHANGE: u8 = b'c';
    pub const SNAPSHOT: u8 = b's';
    pub const INDEX: u8 = b'x';
    pub const CERT: u8 = b'k';
    pub const PEER: u8 = b'p';
    pub const STATEMENT: u8 = b'r';
    pub const INVITATION: u8 = b'i';
    pub const QUEUE: u8 = b'q';
    pub const QUEUE_INDEX: u8 = b'o';
    pub const HEARTBEAT: u8 = b'b';
    pub const CHAIN: u8 = b'a';
}
use prefix::*;

/// sled's page cache; its default (1 GiB) would let a node's memory grow
/// with its store.
pub const SLED_CACHE_BYTES: u64 = 64 * 1024 * 1024;

/// Key of a stored record, public so tests and tools can find records.
pub mod keys {
    use super::*;

    /// Key of a document's header.
    pub fn header(id: &DocId) -> Vec<u8> {
        prefixed(HEADER, id.as_bytes())
    }

    /// Key of a document's change at `seq`.
    pub fn change(id: &DocId, seq: u64) -> Vec<u8> {
        let mut k = prefixed(CHANGE, id.as_bytes());
        k.extend_from_slice(&seq.to_be_bytes());
        k
    }

    /// Key of a document in a peer's transfer queue.
    pub(super) fn queued(peer: &NodeId, priority: u64, doc: &DocId) -> Vec<u8> {
        let mut k = prefixed(QUEUE, peer.as_bytes());
        k.extend_from_slice(&priority.to_be_bytes());
        k.extend_from_slice(doc.as_bytes());
        k
    }

    /// Key of the index entry that finds a queued document.
    pub(super) fn queue_index(peer: &NodeId, doc: &DocId) -> Vec<u8> {
        let mut k = prefixed(QUEUE_INDEX, peer.as_bytes());
        k.extend_from_slice(doc.as_bytes());
        k
    }

    /// A key of record type `p`.
    pub fn prefixed(p: u8, rest: &[u8]) -> Vec<u8> {
        let mut k = Vec::with_capacity(1 + rest.len() + 8);
        k.push(p);
        k.extend_from_slice(rest);
        k
    }
}

/// Documents and certificates in a sled database.
#[derive(Debug, Clone)]
pub struct SledStore {
    db: sled::Db,
    tree: sled::Tree,
}

fn backend(e: sled::Error) -> StoreError {
    StoreError::Backend(e.to_string())
}

fn corrupt(key: &[u8], reason: impl ToString) -> StoreError {
    StoreError::Corrupt { key: hex::encode(key), reason: reason.to_string() }
}

/// Heads a peer has, as stored in its queue: none (`0`) or a count and the heads.
fn encode_heads(heads: Option<&Vec<[u8; 32]>>) -> Vec<u8> {
    match heads {
        None => vec![0],
        Some(h) => {
            let mut v = Vec::with_capacity(3 + 32 * h.len());
            v.push(1);
            v.extend_from_slice(&(h.len() as u16).to_be_bytes());
            h.iter().for_each(|x| v.extend_from_slice(x));
            v
        }
    }
}

fn decode_heads(v: &[u8]) -> Result<Option<Vec<[u8; 32]>>, String> {
    match v.first() {
        Some(0) => Ok(None),
        Some(1) if v.len() >= 3 => {
            let n = usize::from(u16::from_be_bytes([v[1], v[2]]));
            let rest = &v[3..];
            if rest.len() != n * 32 {
                return Err(format!("{} bytes for {n} heads", rest.len()));
            }
            Ok(Some(rest.chunks_exact(32).map(|c| c.try_into().expect("32-byte chunks")).collect()))
        }
        _ => Err("not a queued entry".into()),
    }
}

pub(super) fn decode_queued(key: &[u8], value: &[u8]) -> Result<QueuedDoc, StoreError> {
    // q, peer (32), priority (8), doc (32)
    if key.len() != 73 {
        return Err(corrupt(key, "queue key of the wrong length"));
    }
    let priority = u64::from_be_bytes(key[33..41].try_into().expect("8 bytes"));
    let doc = DocId::from_bytes(key[41..73].try_into().expect("32 bytes"));
    let their_heads = decode_heads(value).map_err(|e| corrupt(key, e))?;
    Ok(QueuedDoc { priority, doc, their_heads })
}

fn doc_id_of(key: &[u8]) -> Result<DocId, StoreError> {
    let bytes: [u8; 32] = key.get(1..33).and_then(|s| s.try_into().ok()).ok_or_else(|| corrupt(key, "short key"))?;
    Ok(DocId::from_bytes(bytes))
}

impl SledStore {
    /// Decodes every record under a prefix. A record that does not decode
    /// is skipped with a warning (the first few of each scan), so that one
    /// damaged record never stops a node: `passerelle repair` sets it aside.
    fn scan<T>(&self, prefix: u8, decode: impl Fn(&[u8]) -> Result<T, String>) -> Result<Vec<T>, StoreError> {
        const WARNINGS: usize = 5;
        let mut out = Vec::new();
        let mut skipped = 0usize;
        for item in self.tree.scan_prefix([prefix]) {
            let (k, v) = item.map_err(backend)?;
            match decode(&v) {
                Ok(t) => out.push(t),
                Err(reason) => {
                    skipped += 1;
                    if skipped <= WARNINGS {
                        tracing::warn!(key = %hex::encode(&k), %reason, "damaged record skipped: run `passerelle repair` with the node stopped");
                    }
                }
            }
        }
        if skipped > WARNINGS {
            tracing::warn!(skipped, record = %(prefix as char), "damaged records skipped");
        }
        Ok(out)
    }

    /// The database, for tools that need another tree (the quarantine).
    pub(super) fn db(&self) -> &sled::Db {
        &self.db
    }

    /// Opens (or creates) the store in `path`.
    ///
    /// # Errors
    /// [`StoreError::Locked`] when another process has it open; other
    /// [`StoreError`]s when it cannot be opened.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        // Writes are made durable by explicit flushes before acknowledging;
        // sled's background flush only shortens the window for unacknowledged ones.
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(SLED_CACHE_BYTES)
            .flush_every_ms(Some(1_000))
            .open()
            .map_err(|e| match &e {
                sled::Error::Io(io) if io.kind() == std::io::ErrorKind::WouldBlock || io.raw_os_error() == Some(11) => {
                    StoreError::Locked(path.display().to_string())
                }
                _ if e.to_string().contains("lock") => StoreError::Locked(path.display().to_string()),
                _ => StoreError::Backend(format!("cannot open {}: {e}", path.display())),
            })?;
        let tree = db.open_tree("passerelle").map_err(backend)?;
        Ok(Self { db, tree })
    }

    /// The underlying tree, for tools and tests that inspect raw records.
    pub fn raw_tree(&self) -> &sled::Tree {
        &self.tree
    }
}

impl Store for SledStore {
    fn header(&self, id: &DocId) -> Result<Option<SignedHeader>, StoreError> {
        let key = keys::header(id);
        match self.tree.get(&key).map_err(backend)? {
            None => Ok(None),
            Some(v) => SignedHeader::decode(&v).map(Some).map_err(|e| corrupt(&key, e)),
        }
    }

    fn meta(&self, id: &DocId) -> Result<Option<DocMeta>, StoreError> {
        let key = keys::prefixed(META, id.as_bytes());
        match self.tree.get(&key).map_err(backend)? {
            None => Ok(None),
            Some(v) => serde_json::from_slice(&v).map(Some).map_err(|e| corrupt(&key, e)),
        }
    }

    fn metas(&self) -> Result<Vec<DocMeta>, StoreError> {
        self.scan(META, |v| serde_json::from_slice(v).map_err(|e| e.to_string()))
    }

    fn damaged_records(&self) -> Result<Vec<super::DamagedRecord>, StoreError> {
        self.audit()
    }

    fn doc_ids(&self) -> Result<Vec<DocId>, StoreError> {
        self.tree.scan_prefix([HEADER]).keys().map(|k| doc_id_of(&k.map_err(backend)?)).collect()
    }

    fn changes(&self, id: &DocId, from_seq: u64) -> Result<Vec<ChangeRecord>, StoreError> {
        let start = keys::change(id, from_seq);
        let end = keys::change(id, u64::MAX);
        self.tree
            .range(start..=end)
            .map(|item| {
                let (k, v) = item.map_err(backend)?;
                let seq = u64::from_be_bytes(k[33..41].try_into().map_err(|_| corrupt(&k, "short key"))?);
                Ok((seq, StoredChange::decode(&v)))
            })
            .collect()
    }

    fn snapshot(&self, id: &DocId) -> Result<Option<Snapshot>, StoreError> {
        let key = keys::prefixed(SNAPSHOT, id.as_bytes());
        match self.tree.get(&key).map_err(backend)? {
            None => Ok(None),
            Some(v) if v.len() >= 8 => Ok(Some(Snapshot {
                changes: u64::from_be_bytes(v[..8].try_into().expect("length checked")),
                bytes: v[8..].to_vec(),
            })),
            Some(_) => Err(corrupt(&key, "short snapshot")),
        }
    }

    fn has_change(&self, hash: &[u8; 32]) -> Result<bool, StoreError> {
        self.tree.contains_key(keys::prefixed(INDEX, hash)).map_err(backend)
    }

    fn change_by_hash(&self, hash: &[u8; 32]) -> Result<Option<StoredChange>, StoreError> {
        let index_key = keys::prefixed(INDEX, hash);
        let Some(loc) = self.tree.get(&index_key).map_err(backend)? else { return Ok(None) };
        if loc.len() != 40 {
            return Err(corrupt(&index_key, "bad index entry"));
        }
        let mut key = vec![CHANGE];
        key.extend_from_slice(&loc);
        match self.tree.get(&key).map_err(backend)? {
            None => Ok(None),
            Some(v) => StoredChange::decode(&v).map(Some).map_err(|e| corrupt(&key, e)),
        }
    }

    fn certificates(&self) -> Result<Vec<NodeCertificate>, StoreError> {
        self.scan(CERT, |v| NodeCertificate::decode(v).map_err(|e| e.to_string()))
    }

    fn peers(&self) -> Result<Vec<PeerRecord>, StoreError> {
        self.scan(PEER, |v| serde_json::from_slice(v).map_err(|e| e.to_string()))
    }

    fn statements(&self) -> Result<Vec<SignedStatement>, StoreError> {
        self.scan(STATEMENT, |v| SignedStatement::decode(v).map_err(|e| e.to_string()))
    }

    fn invitation(&self, id: &[u8; 16]) -> Result<Option<InvitationRecord>, StoreError> {
        let key = keys::prefixed(INVITATION, id);
        match self.tree.get(&key).map_err(backend)? {
            None => Ok(None),
            Some(v) => serde_json::from_slice(&v).map(Some).map_err(|e| corrupt(&key, e)),
        }
    }

    fn invitations(&self) -> Result<Vec<InvitationRecord>, StoreError> {
        self.scan(INVITATION, |v| serde_json::from_slice(v).map_err(|e| e.to_string()))
    }

    fn queued(&self, peer: &NodeId, limit: usize) -> Result<Vec<QueuedDoc>, StoreError> {
        self.tree
            .scan_prefix(keys::prefixed(QUEUE, peer.as_bytes()))
            .take(limit)
            .map(|item| {
                let (k, v) = item.map_err(backend)?;
                decode_queued(&k, &v)
            })
            .collect()
    }

    fn queued_doc(&self, peer: &NodeId, doc: &DocId) -> Result<Option<QueuedDoc>, StoreError> {
        let index = keys::queue_index(peer, doc);
        let Some(p) = self.tree.get(&index).map_err(backend)? else { return Ok(None) };
        let priority = u64::from_be_bytes(p.as_ref().try_into().map_err(|_| corrupt(&index, "not a priority"))?);
        let key = keys::queued(peer, priority, doc);
        match self.tree.get(&key).map_err(backend)? {
            Some(v) => decode_queued(&key, &v).map(Some),
            None => Ok(None),
        }
    }

    fn heartbeats(&self) -> Result<Vec<StoredHeartbeat>, StoreError> {
        self.scan(HEARTBEAT, |v| StoredHeartbeat::decode(v).map_err(|e| e.to_string()))
    }

    fn pulse_chains(&self) -> Result<Vec<PulseChain>, StoreError> {
        self.scan(CHAIN, |v| PulseChain::decode(v).map_err(|e| e.to_string()))
    }

    fn disk_bytes(&self) -> Result<u64, StoreError> {
        self.db.size_on_disk().map_err(backend)
    }

    fn queue_len(&self, peer: &NodeId) -> Result<u64, StoreError> {
        let mut n = 0;
        for item in self.tree.scan_prefix(keys::prefixed(QUEUE_INDEX, peer.as_bytes())).keys() {
            item.map_err(backend)?;
            n += 1;
        }
        Ok(n)
    }

    fn write(&self, ops: Vec<WriteOp>) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for op in ops {
            match op {
                WriteOp::Header(h) => batch.insert(keys::header(&h.id()), h.encode()),
                WriteOp::Meta(m) => batch.insert(
                    keys::prefixed(META, m.id.as_bytes()),
                    serde_json::to_vec(&m).expect("metadata always serializes"),
                ),
                WriteOp::Change { doc, seq, change, hash } => {
                    batch.insert(keys::change(&doc, seq), change.encode());
                    let mut loc = doc.as_bytes().to_vec();
                    loc.extend_from_slice(&seq.to_be_bytes());
                    batch.insert(keys::prefixed(INDEX, &hash), loc);
                }
                WriteOp::Snapshot(doc, snap) => {
                    let mut v = snap.changes.to_be_bytes().to_vec();
                    v.extend_from_slice(&snap.bytes);
                    batch.insert(keys::prefixed(SNAPSHOT, doc.as_bytes()), v);
                }
                WriteOp::Certificate(c) => batch.insert(keys::prefixed(CERT, c.node.as_bytes()), c.encode()),
                WriteOp::Peer(p) => batch.insert(
                    keys::prefixed(PEER, p.node.as_bytes()),
                    serde_json::to_vec(&p).expect("peer records always serialize"),
                ),
                WriteOp::RemovePeer(n) => batch.remove(keys::prefixed(PEER, n.as_bytes())),
                WriteOp::Statement(st) => batch.insert(keys::prefixed(STATEMENT, &st.hash()), st.encode()),
                WriteOp::ForgetStatement(hash) => batch.remove(keys::prefixed(STATEMENT, &hash)),
                WriteOp::Invitation(inv) => {
                    let mut id = [0u8; 16];
                    hex::decode_to_slice(&inv.id, &mut id).map_err(|e| StoreError::Backend(e.to_string()))?;
                    batch.insert(
                        keys::prefixed(INVITATION, &id),
                        serde_json::to_vec(&inv).map_err(|e| StoreError::Backend(e.to_string()))?,
                    )
                }
                WriteOp::Enqueue(peer, q) => {
                    batch.insert(keys::queued(&peer, q.priority, &q.doc), encode_heads(q.their_heads.as_ref()));
                    batch.insert(keys::queue_index(&peer, &q.doc), q.priority.to_be_bytes().to_vec());
                }
                WriteOp::Heartbeat(h) => {
                    batch.insert(keys::prefixed(HEARTBEAT, h.beat.heartbeat.node().as_bytes()), h.encode());
                }
                WriteOp::ForgetHeartbeat(node) => {
                    batch.remove(keys::prefixed(HEARTBEAT, node.as_bytes()));
                    batch.remove(keys::prefixed(CHAIN, node.as_bytes()));
                }
                WriteOp::PulseChain(chain) => {
                    batch.insert(keys::prefixed(CHAIN, chain.node.as_bytes()), chain.encode())
                }
                WriteOp::Dequeue(peer, q) => {
                    batch.remove(keys::queued(&peer, q.priority, &q.doc));
                    batch.remove(keys::queue_index(&peer, &q.doc));
                }
            }
        }
        self.tree.apply_batch(batch).map_err(backend)
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.db.flush().map(|_| ()).map_err(backend)
    }
}
