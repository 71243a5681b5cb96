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

use std::path::Path;

use passerelle_protocol::certificate::NodeCertificate;
use passerelle_protocol::header::SignedHeader;
use passerelle_protocol::ids::DocId;

use passerelle_protocol::network::SignedStatement;

use super::{ChangeRecord, DocMeta, InvitationRecord, PeerRecord, Snapshot, Store, StoreError, StoredChange, WriteOp};

const HEADER: u8 = b'h';
const META: u8 = b'm';
const CHANGE: u8 = b'c';
const SNAPSHOT: u8 = b's';
const INDEX: u8 = b'x';
const CERT: u8 = b'k';
const PEER: u8 = b'p';
const STATEMENT: u8 = b'r';
const INVITATION: u8 = b'i';

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

    pub(super) fn prefixed(p: u8, rest: &[u8]) -> Vec<u8> {
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

fn doc_id_of(key: &[u8]) -> Result<DocId, StoreError> {
    let bytes: [u8; 32] = key.get(1..33).and_then(|s| s.try_into().ok()).ok_or_else(|| corrupt(key, "short key"))?;
    Ok(DocId::from_bytes(bytes))
}

impl SledStore {
    /// Decodes every record under a prefix, naming the first damaged one.
    fn scan<T>(&self, prefix: u8, decode: impl Fn(&[u8]) -> Result<T, String>) -> Result<Vec<T>, StoreError> {
        self.tree
            .scan_prefix([prefix])
            .map(|item| {
                let (k, v) = item.map_err(backend)?;
                decode(&v).map_err(|e| corrupt(&k, e))
            })
            .collect()
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
                WriteOp::Invitation(inv) => {
                    let mut id = [0u8; 16];
                    hex::decode_to_slice(&inv.id, &mut id).map_err(|e| StoreError::Backend(e.to_string()))?;
                    batch.insert(
                        keys::prefixed(INVITATION, &id),
                        serde_json::to_vec(&inv).map_err(|e| StoreError::Backend(e.to_string()))?,
                    )
                }
            }
        }
        self.tree.apply_batch(batch).map_err(backend)
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.db.flush().map(|_| ()).map_err(backend)
    }
}
