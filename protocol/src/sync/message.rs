//! Wire messages of `/passerelle/sync/6` and their codec.
//!
//! Every message is canonical bytes (tag `passerelle/sync`, version 1, a
//! type byte, then fields) carried in one length-prefixed frame of at most
//! [`MAX_FRAME_BYTES`]. Every count is bounded before anything is
//! allocated; a message that breaks a bound is refused whole.

use crate::canonical::{DecodeError, Reader, Writer};
use crate::certificate::NodeCertificate;
use crate::envelope::ChangeEnvelope;
use crate::header::{DocHeader, SignedHeader};
use crate::heartbeat::{MAX_HEARTBEAT_BYTES, SignedHeartbeat};
use crate::ids::{DocId, NetworkId, NodeId};
use crate::network::statement::MAX_STATEMENT_BYTES;
use crate::network::{Invitation, SignedStatement};

use super::fingerprint::{BUCKETS, BucketPrint};

/// The libp2p protocol name.
pub const PROTOCOL: &str = "/passerelle/sync/6";
const TAG: &str = "passerelle/sync";
const VERSION: u8 = 1;
/// The version of a compressed frame: the uncompressed size, then the
/// zstd-compressed bytes of a version-1 message after its tag and version.
const COMPRESSED_VERSION: u8 = 2;
/// Messages smaller than this travel uncompressed.
pub const COMPRESS_FROM_BYTES: usize = 1024;
/// The most a compressed frame may grow when decompressed: what a peer
/// makes a node decode stays in proportion to what it sent.
pub const MAX_COMPRESSION_RATIO: usize = 32;
/// zstd's level: fast, and most of what higher levels would save.
const COMPRESSION_LEVEL: i32 = 3;
/// Largest frame accepted, in bytes.
pub const MAX_FRAME_BYTES: usize = 4 * 1024 * 1024;
/// Most documents listed in one `Items` message.
pub const MAX_ITEMS: usize = 50_000;
/// Most heads of one document in an `Items` entry.
pub const MAX_HEADS: usize = 256;
/// Most certificates, headers or changes in one `Docs` message.
pub const MAX_DOC_ENTRIES: usize = 20_000;
/// Target size of a `Docs` message when a node splits a push into frames.
pub const DOCS_FRAME_TARGET_BYTES: usize = 256 * 1024;
/// Most statements in a hello's membership proof.
pub const MAX_PROOF: usize = 64;
/// Most statements (or statement hashes) in one roster message.
pub const MAX_STATEMENTS: usize = 100_000;
/// Target size of a `Roster` message when a node splits the roster.
pub const ROSTER_FRAME_TARGET_BYTES: usize = 1024 * 1024;
/// Most heartbeats in one message.
pub const MAX_HEARTBEATS: usize = 256;
/// Most pulses in one message.
pub const MAX_PULSES: usize = 4_096;
/// Most watchers in one `Routes`.
pub const MAX_ROUTES: usize = 64;
/// Most nodes named in one `BeatsWanted`.
pub const MAX_BEATS_WANTED: usize = 64;
/// Longest reason code in a `Differ`.
pub const MAX_CODE_LEN: usize = 64;
/// Most documents or statements named in one `Have` or `Graft`.
pub const MAX_ANNOUNCED: usize = 4_096;

/// One document in an `Items` list: its id and heads.
pub type Item = (DocId, Vec<[u8; 32]>);

/// A summary of the documents the sender shares with the receiver, as a
/// `Summary` message says it, carried in a hello.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SetSummary {
    /// Number of documents.
    pub count: u64,
    /// XOR of their item hashes.
    pub fingerprint: [u8; 16],
    /// Documents the sender still has queued for the receiver.
    pub pending: u64,
}

/// A message of the sync protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncMessage {
    /// First message on a connection: the sender's node certificate, which
    /// must certify the key the connection is authenticated with.
    Hello {
        /// The sender's certificate.
        certificate: NodeCertificate,
        /// The network the sender belongs to.
        network: NetworkId,
        /// Number of statements in the sender's roster.
        roster_count: u64,
        /// XOR of their short hashes: equal values, equal rosters.
        roster_fingerprint: [u8; 16],
        /// Statements proving the sender's commune is a member (the founding
        /// statement and the chain of admissions to it), for a receiver that
        /// has not heard of it yet: left out of the first hello on a
        /// connection when the receiver said a roster equal to the sender's
        /// (it holds them); one that cannot place the sender answers
        /// `ProofWanted`.
        proof: Vec<SignedStatement>,
        /// The sender's first round, when its roster admits the receiver's
        /// node: what a `Summary` would say. Peers whose rosters agree
        /// compare it at once, so a re-sync of peers in agreement ends with
        /// the two hellos.
        summary: Option<SetSummary>,
        /// The sender's distances to the watchers, as `Routes` says them
        /// (one message fewer each way on every connection); empty to a
        /// node its roster does not admit.
        routes: Vec<(NodeId, u8)>,
    },
    /// The sender cannot place the receiver's hello without its membership
    /// proof: say hello again with it.
    ProofWanted,
    /// The short hashes of every statement the sender holds: the receiver
    /// answers with the statements missing from the list.
    RosterHave {
        /// Short hashes (first 16 bytes of each statement's hash).
        hashes: Vec<[u8; 16]>,
    },
    /// Statements the receiver lacks.
    Roster {
        /// The statements.
        statements: Vec<SignedStatement>,
        /// Whether this is the last part of an answer to `RosterHave`.
        complete: bool,
    },
    /// A node outside any network redeems an invitation (instead of a hello).
    Join {
        /// The invitation, as signed by the coordinator.
        invitation: Box<Invitation>,
        /// The joining node's certificate by its commune.
        certificate: NodeCertificate,
        /// Where the joining node listens (contact hints for the roster).
        addrs: Vec<String>,
    },
    /// The invitation was redeemed: the proof of the new membership (the
    /// founding statement and the admission chain); the rest of the roster
    /// follows in the session's reconciliation.
    Welcome {
        /// The statements.
        statements: Vec<SignedStatement>,
    },
    /// The invitation was refused.
    JoinRefused {
        /// Why.
        reason: String,
    },
    /// The latest heartbeats the sender holds that the receiver may not
    /// have (its own, or relayed).
    Heartbeats {
        /// Signed heartbeats.
        beats: Vec<SignedHeartbeat>,
    },
    /// The fingerprint of the set of documents the sender shares with the receiver.
    Summary {
        /// Number of documents.
        count: u64,
        /// XOR of their item hashes.
        fingerprint: [u8; 16],
        /// The sender's roster summary, so rosters that drifted apart (a lost
        /// push) are reconciled on the next round too.
        roster_count: u64,
        /// XOR of the roster's short hashes.
        roster_fingerprint: [u8; 16],
        /// Documents the sender still has queued for the receiver (a
        /// transfer cut by a disconnection resumes first; no buckets are
        /// compared while one is under way).
        pending: u64,
    },
    /// Fingerprints of the 256 buckets of that set.
    Buckets {
        /// One per bucket, in bucket order.
        buckets: Vec<BucketPrint>,
    },
    /// The documents (ids and heads) of some buckets.
    Items {
        /// Bucket number and its documents.
        buckets: Vec<(u8, Vec<Item>)>,
    },
    /// What the sender just stored, announced lazily (gossip): documents
    /// with their new heads and statements by short hash. The receiver
    /// asks for what it still lacks after a while (`Graft`).
    Have {
        /// Documents and their heads at the sender.
        docs: Vec<Item>,
        /// Short hashes of statements.
        statements: Vec<[u8; 16]>,
    },
    /// Send me what I lack of these (documents with my heads, statements by
    /// short hash), and push to me eagerly from now on.
    Graft {
        /// Documents and the receiver's... the sender's own heads.
        docs: Vec<Item>,
        /// Short hashes of statements wanted.
        statements: Vec<[u8; 16]>,
    },
    /// Stop pushing to me eagerly: announce lazily instead (what you push
    /// reaches me by another path).
    Prune,
    /// New changes pushed live (gossip's eager push): like `Docs`, and a
    /// receiver that already held all of it prunes the link.
    Push {
        /// Certificates of the node keys that signed what follows.
        certificates: Vec<NodeCertificate>,
        /// Headers of documents the receiver may not have.
        headers: Vec<SignedHeader>,
        /// Change envelopes.
        changes: Vec<ChangeEnvelope>,
    },
    /// How many hops the sender is from each watcher (coordinator's node):
    /// heartbeats and pulses go to the neighbour nearest each watcher. 16
    /// means unreachable (or reached through the receiver).
    Routes {
        /// Watcher and hops.
        hops: Vec<(NodeId, u8)>,
    },
    /// A watcher hears pulses of these nodes (by the first 8 bytes of
    /// their keys) but lacks their full heartbeat or pulse chain: passed
    /// back the way their pulses came, each node says its full status
    /// again.
    BeatsWanted {
        /// The nodes' key prefixes.
        nodes: Vec<[u8; 8]>,
    },
    /// The sender refused some of what the receiver sent of these
    /// documents, for a reason that is not a fault (the code), and keeps
    /// its state of them: both leave them out of their comparison until
    /// either side's state changes (see `docs/protocol.md`, *Agreeing to
    /// differ*).
    Differ {
        /// An answer to the receiver's proposal (else a proposal).
        answer: bool,
        /// The sender's roster (count and fingerprint): the receiver agrees
        /// only under the same roster.
        roster_count: u64,
        /// See `roster_count`.
        roster_fingerprint: [u8; 16],
        /// Document and refusal reason code.
        docs: Vec<(DocId, String)>,
    },
    /// The sender's operator removed the receiver from its peers: the
    /// receiver stops dialling it, unless its own operator asked for the
    /// link (then it is still welcome).
    Unlink,
    /// Compact liveness of nodes whose status did not change, carried
    /// towards the coordinators: pulse chains (each node's signed
    /// commitment, sent with its full heartbeat) and pulses (30 bytes each).
    Pulses {
        /// New pulse chains.
        chains: Vec<crate::heartbeat::PulseChain>,
        /// Pulses.
        pulses: Vec<crate::heartbeat::Pulse>,
    },
    /// Signed material the receiver lacks.
    Docs {
        /// Certificates of the node keys that signed what follows.
        certificates: Vec<NodeCertificate>,
        /// Headers of documents the receiver may not have.
        headers: Vec<SignedHeader>,
        /// Change envelopes.
        changes: Vec<ChangeEnvelope>,
    },
}

/// The answer to each message: delivery is acknowledged, so a sender knows
/// what arrived and slows down when the receiver is busy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncReply {
    /// Received and accepted for processing.
    Ok,
    /// The receiver is overloaded: send again later.
    Busy,
    /// Refused, with the reason (the sender is being penalised).
    Refused(String),
}

impl SyncMessage {
    /// A short name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            SyncMessage::Hello { .. } => "hello",
            SyncMessage::ProofWanted => "proof-wanted",
            SyncMessage::RosterHave { .. } => "roster-have",
            SyncMessage::Roster { .. } => "roster",
            SyncMessage::Join { .. } => "join",
            SyncMessage::Welcome { .. } => "welcome",
            SyncMessage::JoinRefused { .. } => "join-refused",
            SyncMessage::Heartbeats { .. } => "heartbeats",
            SyncMessage::Summary { .. } => "summary",
            SyncMessage::Buckets { .. } => "buckets",
            SyncMessage::Items { .. } => "items",
            SyncMessage::Docs { .. } => "docs",
            SyncMessage::Have { .. } => "have",
            SyncMessage::Graft { .. } => "graft",
            SyncMessage::Prune => "prune",
            SyncMessage::Push { .. } => "push",
            SyncMessage::Pulses { .. } => "pulses",
            SyncMessage::Unlink => "unlink",
            SyncMessage::Routes { .. } => "routes",
            SyncMessage::BeatsWanted { .. } => "beats-wanted",
            SyncMessage::Differ { .. } => "differ",
        }
    }

    /// Encodes the message.
    pub fn encode(&self) -> Vec<u8> {
        self.encode_counted().0
    }

    /// Encodes the message, and says how long it was before compression.
    pub fn encode_counted(&self) -> (Vec<u8>, usize) {
        let plain = self.encode_plain();
        let plain_len = plain.len();
        (self.compressed(plain), plain_len)
    }

    fn compressed(&self, plain: Vec<u8>) -> Vec<u8> {
        if !self.compressible() || plain.len() < COMPRESS_FROM_BYTES {
            return plain;
        }
        let body = &plain[Writer::new(TAG, VERSION).finish().len()..];
        match zstd::bulk::compress(body, COMPRESSION_LEVEL) {
            // (What would shrink more than a receiver accepts goes as it is.)
            Ok(packed) if packed.len() + 8 < body.len() && body.len() <= packed.len() * MAX_COMPRESSION_RATIO => {
                let mut w = Writer::new(TAG, COMPRESSED_VERSION);
                w.u32(body.len() as u32).fixed(&packed);
                w.finish()
            }
            _ => plain,
        }
    }

    /// Whether the message is worth compressing when large: those that
    /// carry documents, rosters and lists (the others are small or random).
    fn compressible(&self) -> bool {
        matches!(
            self,
            SyncMessage::Docs { .. }
                | SyncMessage::Push { .. }
                | SyncMessage::Roster { .. }
                | SyncMessage::Items { .. }
                | SyncMessage::Welcome { .. }
                | SyncMessage::Heartbeats { .. }
        )
    }

    /// The message's bytes without compression (what a compressed frame
    /// holds once decompressed: for tests and tools that look inside).
    pub fn encode_plain(&self) -> Vec<u8> {
        let mut w = Writer::new(TAG, VERSION);
        match self {
            SyncMessage::Hello { certificate, network, roster_count, roster_fingerprint, proof, summary, routes } => {
                w.u8(1).bytes(&certificate.encode()).fixed(network.as_bytes());
                w.u64(*roster_count).fixed(roster_fingerprint);
                write_statements(&mut w, proof);
                match summary {
                    None => {
                        w.u8(0);
                    }
                    Some(s) => {
                        w.u8(1).u64(s.count).fixed(&s.fingerprint).u64(s.pending);
                    }
                }
                write_routes(&mut w, routes);
            }
            SyncMessage::ProofWanted => {
                w.u8(21);
            }
            SyncMessage::RosterHave { hashes } => {
                w.u8(6).u32(hashes.len() as u32);
                for h in hashes {
                    w.fixed(h);
                }
            }
            SyncMessage::Roster { statements, complete } => {
                w.u8(7).u8(u8::from(*complete));
                write_statements(&mut w, statements);
            }
            SyncMessage::Join { invitation, certificate, addrs } => {
                w.u8(8).bytes(&invitation.encode()).bytes(&certificate.encode());
                crate::network::statement::write_addrs(&mut w, addrs);
            }
            SyncMessage::Welcome { statements } => {
                w.u8(9);
                write_statements(&mut w, statements);
            }
            SyncMessage::JoinRefused { reason } => {
                w.u8(10).str(&reason.chars().take(500).collect::<String>());
            }
            SyncMessage::Heartbeats { beats } => {
                w.u8(11).u32(beats.len() as u32);
                for b in beats {
                    w.bytes(&b.encode());
                }
            }
            SyncMessage::Summary { count, fingerprint, roster_count, roster_fingerprint, pending } => {
                w.u8(2).u64(*count).fixed(fingerprint).u64(*roster_count).fixed(roster_fingerprint).u64(*pending);
            }
            SyncMessage::Buckets { buckets } => {
                w.u8(3).u32(buckets.len() as u32);
                for b in buckets {
                    w.u32(b.count).fixed(&b.xor);
                }
            }
            SyncMessage::Items { buckets } => {
                w.u8(4).u32(buckets.len() as u32);
                for (bucket, items) in buckets {
                    w.u8(*bucket).u32(items.len() as u32);
                    for (doc, heads) in items {
                        w.fixed(doc.as_bytes()).u32(heads.len() as u32);
                        for h in heads {
                            w.fixed(h);
                        }
                    }
                }
            }
            SyncMessage::Docs { certificates, headers, changes } => {
                w.u8(5);
                write_docs(&mut w, certificates, headers, changes);
            }
            SyncMessage::Push { certificates, headers, changes } => {
                w.u8(15);
                write_docs(&mut w, certificates, headers, changes);
            }
            SyncMessage::Have { docs, statements } => {
                w.u8(12);
                write_announced(&mut w, docs, statements);
            }
            SyncMessage::Graft { docs, statements } => {
                w.u8(13);
                write_announced(&mut w, docs, statements);
            }
            SyncMessage::Prune => {
                w.u8(14);
            }
            SyncMessage::Unlink => {
                w.u8(17);
            }
            SyncMessage::Routes { hops } => {
                w.u8(18);
                write_routes(&mut w, hops);
            }
            SyncMessage::BeatsWanted { nodes } => {
                w.u8(19).u32(nodes.len() as u32);
                for n in nodes {
                    w.fixed(n);
                }
            }
            SyncMessage::Differ { answer, roster_count, roster_fingerprint, docs } => {
                w.u8(20).u8(u8::from(*answer)).u64(*roster_count).fixed(roster_fingerprint).u32(docs.len() as u32);
                for (doc, code) in docs {
                    w.fixed(doc.as_bytes()).str(code);
                }
            }
            SyncMessage::Pulses { chains, pulses } => {
                w.u8(16).u32(chains.len() as u32);
                for c in chains {
                    c.write(&mut w);
                }
                w.u32(pulses.len() as u32);
                for p in pulses {
                    p.write(&mut w);
                }
            }
        }
        w.finish()
    }

    /// Decodes a message, enforcing every bound. Does not verify signatures.
    ///
    /// # Errors
    /// [`DecodeError`] naming what is wrong.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.len() > MAX_FRAME_BYTES {
            return Err(DecodeError::TooLarge { field: "frame", len: bytes.len(), max: MAX_FRAME_BYTES });
        }
        let (mut r, version) = Reader::open(bytes, TAG, "sync message", COMPRESSED_VERSION)?;
        if version < COMPRESSED_VERSION {
            return Self::decode_body(r);
        }
        // Bounded before anything is decompressed: the size it claims, and
        // the decompressor stops at that size.
        let len = bounded(&mut r, "uncompressed size", MAX_FRAME_BYTES)?;
        let packed = r.rest();
        if len > packed.len().saturating_mul(MAX_COMPRESSION_RATIO) {
            return Err(invalid(
                "compressed frame",
                format!("{len} bytes from {} compressed: over {MAX_COMPRESSION_RATIO} times", packed.len()),
            ));
        }
        let body = zstd::bulk::decompress(packed, len).map_err(|e| invalid("compressed frame", e))?;
        if body.len() != len {
            return Err(invalid("compressed frame", format!("{} bytes where {len} were announced", body.len())));
        }
        Self::decode_body(Reader::raw(&body))
    }

    fn decode_body(mut r: Reader<'_>) -> Result<Self, DecodeError> {
        let count = |r: &mut Reader<'_>, field: &'static str, max: usize| -> Result<usize, DecodeError> {
            let n = r.u32(field)? as usize;
            if n > max { Err(DecodeError::TooLarge { field, len: n, max }) } else { Ok(n) }
        };
        let msg = match r.u8("message type")? {
            1 => {
                let certificate =
                    NodeCertificate::decode(r.bytes("certificate", 512)?).map_err(|e| invalid("certificate", e))?;
                let network = NetworkId::from_bytes(r.fixed("network")?);
                let roster_count = r.u64("roster count")?;
                let roster_fingerprint = r.fixed("roster fingerprint")?;
                let n = count(&mut r, "proof", MAX_PROOF)?;
                let proof = read_statements(&mut r, n)?;
                let summary = match r.u8("summary")? {
                    0 => None,
                    1 => Some(SetSummary {
                        count: r.u64("summary count")?,
                        fingerprint: r.fixed("summary fingerprint")?,
                        pending: r.u64("summary pending")?,
                    }),
                    other => return Err(invalid("summary", format!("{other} is neither 0 nor 1"))),
                };
                let routes = read_routes(&mut r)?;
                SyncMessage::Hello { certificate, network, roster_count, roster_fingerprint, proof, summary, routes }
            }
            21 => SyncMessage::ProofWanted,
            6 => {
                let n = count(&mut r, "statement hashes", MAX_STATEMENTS)?;
                let mut hashes = Vec::with_capacity(n.min(r.remaining() / 16));
                for _ in 0..n {
                    hashes.push(r.fixed("statement hash")?);
                }
                SyncMessage::RosterHave { hashes }
            }
            7 => {
                let complete = match r.u8("complete")? {
                    0 => false,
                    1 => true,
                    other => return Err(invalid("complete", format!("{other} is not a boolean"))),
                };
                let n = count(&mut r, "statements", MAX_STATEMENTS)?;
                SyncMessage::Roster { statements: read_statements(&mut r, n)?, complete }
            }
            8 => {
                let invitation =
                    Invitation::decode(r.bytes("invitation", 4096)?).map_err(|e| invalid("invitation", e))?;
                let certificate =
                    NodeCertificate::decode(r.bytes("certificate", 512)?).map_err(|e| invalid("certificate", e))?;
                let addrs = crate::network::statement::read_addrs(&mut r)?;
                SyncMessage::Join { invitation: Box::new(invitation), certificate, addrs }
            }
            9 => {
                let n = count(&mut r, "statements", MAX_STATEMENTS)?;
                SyncMessage::Welcome { statements: read_statements(&mut r, n)? }
            }
            10 => SyncMessage::JoinRefused { reason: r.str("reason", 2048)?.to_owned() },
            11 => {
                let n = count(&mut r, "heartbeats", MAX_HEARTBEATS)?;
                let mut beats = Vec::with_capacity(n);
                for _ in 0..n {
                    let bytes = r.bytes("heartbeat", MAX_HEARTBEAT_BYTES)?;
                    beats.push(SignedHeartbeat::decode(bytes).map_err(|e| invalid("heartbeat", e))?);
                }
                SyncMessage::Heartbeats { beats }
            }
            2 => SyncMessage::Summary {
                count: r.u64("count")?,
                fingerprint: r.fixed("fingerprint")?,
                roster_count: r.u64("roster count")?,
                roster_fingerprint: r.fixed("roster fingerprint")?,
                pending: r.u64("pending")?,
            },
            3 => {
                let n = count(&mut r, "buckets", BUCKETS)?;
                if n != BUCKETS {
                    return Err(DecodeError::Invalid {
                        field: "buckets",
                        reason: format!("{n} buckets, expected {BUCKETS}"),
                    });
                }
                let mut buckets = Vec::with_capacity(n);
                for _ in 0..n {
                    buckets.push(BucketPrint { count: r.u32("bucket count")?, xor: r.fixed("bucket fingerprint")? });
                }
                SyncMessage::Buckets { buckets }
            }
            4 => {
                let n = count(&mut r, "item buckets", BUCKETS)?;
                let mut buckets = Vec::with_capacity(n);
                let mut total = 0;
                for _ in 0..n {
                    let bucket = r.u8("bucket")?;
                    let m = count(&mut r, "items", MAX_ITEMS)?;
                    total += m;
                    if total > MAX_ITEMS {
                        return Err(DecodeError::TooLarge { field: "items", len: total, max: MAX_ITEMS });
                    }
                    let mut items = Vec::with_capacity(m.min(1024));
                    for _ in 0..m {
                        let doc = DocId::from_bytes(r.fixed("doc")?);
                        let h = count(&mut r, "heads", MAX_HEADS)?;
                        let mut heads = Vec::with_capacity(h);
                        for _ in 0..h {
                            heads.push(r.fixed("head")?);
                        }
                        items.push((doc, heads));
                    }
                    buckets.push((bucket, items));
                }
                SyncMessage::Items { buckets }
            }
            5 => {
                let (certificates, headers, changes) = read_docs(&mut r)?;
                SyncMessage::Docs { certificates, headers, changes }
            }
            15 => {
                let (certificates, headers, changes) = read_docs(&mut r)?;
                SyncMessage::Push { certificates, headers, changes }
            }
            12 => {
                let (docs, statements) = read_announced(&mut r)?;
                SyncMessage::Have { docs, statements }
            }
            13 => {
                let (docs, statements) = read_announced(&mut r)?;
                SyncMessage::Graft { docs, statements }
            }
            14 => SyncMessage::Prune,
            17 => SyncMessage::Unlink,
            18 => SyncMessage::Routes { hops: read_routes(&mut r)? },
            19 => {
                let n = count(&mut r, "wanted beats", MAX_BEATS_WANTED)?;
                let mut nodes = Vec::with_capacity(n);
                for _ in 0..n {
                    nodes.push(r.fixed("node prefix")?);
                }
                SyncMessage::BeatsWanted { nodes }
            }
            20 => {
                let answer = match r.u8("answer")? {
                    0 => false,
                    1 => true,
                    n => return Err(DecodeError::Invalid { field: "answer", reason: format!("{n} is not 0 or 1") }),
                };
                let roster_count = r.u64("roster count")?;
                let roster_fingerprint = r.fixed("roster fingerprint")?;
                let n = count(&mut r, "documents kept apart", MAX_ANNOUNCED)?;
                let mut docs = Vec::with_capacity(n.min(r.remaining() / 36));
                for _ in 0..n {
                    docs.push((DocId::from_bytes(r.fixed("doc id")?), r.str("reason code", MAX_CODE_LEN)?.to_owned()));
                }
                SyncMessage::Differ { answer, roster_count, roster_fingerprint, docs }
            }
            16 => {
                let n = count(&mut r, "pulse chains", MAX_PULSES)?;
                let mut chains = Vec::with_capacity(n.min(r.remaining() / crate::heartbeat::CHAIN_BYTES));
                for _ in 0..n {
                    chains.push(crate::heartbeat::PulseChain::read(&mut r)?);
                }
                let n = count(&mut r, "pulses", MAX_PULSES)?;
                let mut pulses = Vec::with_capacity(n.min(r.remaining() / crate::heartbeat::PULSE_BYTES));
                for _ in 0..n {
                    pulses.push(crate::heartbeat::Pulse::read(&mut r)?);
                }
                SyncMessage::Pulses { chains, pulses }
            }
            t => return Err(DecodeError::Invalid { field: "message type", reason: format!("unknown type {t}") }),
        };
        r.end()?;
        Ok(msg)
    }
}

fn write_docs(w: &mut Writer, certificates: &[NodeCertificate], headers: &[SignedHeader], changes: &[ChangeEnvelope]) {
    // One table of certificates: those listed, then those only headers
    // name; headers refer to theirs by position.
    let mut table: Vec<&NodeCertificate> = certificates.iter().collect();
    for h in headers {
        if !table.contains(&&h.certificate) {
            table.push(&h.certificate);
        }
    }
    w.u32(certificates.len() as u32).u32((table.len() - certificates.len()) as u32);
    for c in &table {
        w.bytes(&c.encode());
    }
    w.u32(headers.len() as u32);
    for h in headers {
        let at = table.iter().position(|c| *c == &h.certificate).unwrap_or_default();
        w.bytes(&h.header.canonical_bytes()).u16(at as u16).fixed(&h.signature);
    }
    // Authors once, then each document's run of changes.
    let mut authors: Vec<NodeId> = Vec::new();
    let mut author_at: std::collections::HashMap<NodeId, u16> = std::collections::HashMap::new();
    for c in changes {
        author_at.entry(c.author).or_insert_with(|| {
            authors.push(c.author);
            (authors.len() - 1) as u16
        });
    }
    w.u32(authors.len() as u32);
    for a in &authors {
        w.fixed(a.as_bytes());
    }
    let runs = changes.chunk_by(|a, b| a.doc == b.doc);
    w.u32(runs.clone().count() as u32);
    for run in runs {
        w.fixed(run[0].doc.as_bytes()).u32(run.len() as u32);
        for c in run {
            w.u16(author_at.get(&c.author).copied().unwrap_or_default()).bytes(&c.change);
            match &c.signature {
                Some(sig) => w.u8(1).fixed(sig),
                None => w.u8(0),
            };
        }
    }
}

/// Certificates, headers and changes of a `Docs` or `Push`.
type DocsBody = (Vec<NodeCertificate>, Vec<SignedHeader>, Vec<ChangeEnvelope>);

fn read_docs(r: &mut Reader<'_>) -> Result<DocsBody, DecodeError> {
    let listed = bounded(r, "certificates", MAX_DOC_ENTRIES)?;
    let extra = bounded(r, "header certificates", MAX_DOC_ENTRIES - listed)?;
    let mut table = Vec::with_capacity((listed + extra).min(1024));
    for _ in 0..listed + extra {
        table.push(NodeCertificate::decode(r.bytes("certificate", 512)?).map_err(|e| invalid("certificate", e))?);
    }
    let n = bounded(r, "headers", MAX_DOC_ENTRIES)?;
    let mut headers = Vec::with_capacity(n.min(1024));
    for _ in 0..n {
        let header = DocHeader::decode(r.bytes("header", 4096)?)?;
        let certificate = table
            .get(usize::from(r.u16("header certificate")?))
            .ok_or_else(|| invalid("header certificate", "no such certificate in the frame"))?
            .clone();
        headers.push(SignedHeader { header, certificate, signature: r.fixed("header signature")? });
    }
    table.truncate(listed);
    let n = bounded(r, "authors", MAX_DOC_ENTRIES)?;
    let mut authors = Vec::with_capacity(n.min(1024));
    for _ in 0..n {
        authors.push(NodeId::from_bytes(r.fixed("author")?));
    }
    let runs = bounded(r, "document runs", MAX_DOC_ENTRIES)?;
    let mut changes = Vec::with_capacity(runs.min(1024));
    for _ in 0..runs {
        let doc = DocId::from_bytes(r.fixed("document")?);
        let n = bounded(r, "changes", MAX_DOC_ENTRIES - changes.len())?;
        for _ in 0..n {
            let author = *authors
                .get(usize::from(r.u16("author")?))
                .ok_or_else(|| invalid("author", "no such author in the frame"))?;
            let change = r.bytes("change", crate::envelope::MAX_CHANGE_BYTES)?.to_vec();
            let signature = match r.u8("seal")? {
                0 => None,
                1 => Some(r.fixed("signature")?),
                s => return Err(invalid("seal", format!("unknown seal {s}"))),
            };
            changes.push(ChangeEnvelope { doc, author, change, signature });
        }
    }
    Ok((table, headers, changes))
}

fn write_announced(w: &mut Writer, docs: &[Item], statements: &[[u8; 16]]) {
    w.u32(docs.len() as u32);
    for (doc, heads) in docs {
        w.fixed(doc.as_bytes()).u32(heads.len() as u32);
        for h in heads {
            w.fixed(h);
        }
    }
    w.u32(statements.len() as u32);
    for s in statements {
        w.fixed(s);
    }
}

fn read_announced(r: &mut Reader<'_>) -> Result<(Vec<Item>, Vec<[u8; 16]>), DecodeError> {
    let n = bounded(r, "announced documents", MAX_ANNOUNCED)?;
    let mut docs = Vec::with_capacity(n.min(r.remaining() / 36));
    for _ in 0..n {
        let doc = DocId::from_bytes(r.fixed("doc")?);
        let h = bounded(r, "heads", MAX_HEADS)?;
        let mut heads = Vec::with_capacity(h.min(r.remaining() / 32));
        for _ in 0..h {
            heads.push(r.fixed("head")?);
        }
        docs.push((doc, heads));
    }
    let n = bounded(r, "announced statements", MAX_ANNOUNCED)?;
    let mut statements = Vec::with_capacity(n.min(r.remaining() / 16));
    for _ in 0..n {
        statements.push(r.fixed("statement hash")?);
    }
    Ok((docs, statements))
}

fn bounded(r: &mut Reader<'_>, field: &'static str, max: usize) -> Result<usize, DecodeError> {
    let n = r.u32(field)? as usize;
    if n > max { Err(DecodeError::TooLarge { field, len: n, max }) } else { Ok(n) }
}

fn write_routes(w: &mut Writer, hops: &[(NodeId, u8)]) {
    w.u32(hops.len() as u32);
    for (node, h) in hops {
        w.fixed(node.as_bytes()).u8(*h);
    }
}

fn read_routes(r: &mut Reader<'_>) -> Result<Vec<(NodeId, u8)>, DecodeError> {
    let n = r.u32("routes")? as usize;
    if n > MAX_ROUTES {
        return Err(DecodeError::TooLarge { field: "routes", len: n, max: MAX_ROUTES });
    }
    let mut hops = Vec::with_capacity(n);
    for _ in 0..n {
        hops.push((NodeId::from_bytes(r.fixed("watcher")?), r.u8("hops")?));
    }
    Ok(hops)
}

fn write_statements(w: &mut Writer, statements: &[SignedStatement]) {
    w.u32(statements.len() as u32);
    for s in statements {
        w.bytes(&s.encode());
    }
}

fn read_statements(r: &mut Reader<'_>, n: usize) -> Result<Vec<SignedStatement>, DecodeError> {
    let mut out = Vec::with_capacity(n.min(1024));
    for _ in 0..n {
        let bytes = r.bytes("statement", MAX_STATEMENT_BYTES)?;
        out.push(SignedStatement::decode(bytes).map_err(|e| invalid("statement", e))?);
    }
    Ok(out)
}

fn invalid(field: &'static str, e: impl std::fmt::Display) -> DecodeError {
    DecodeError::Invalid { field, reason: e.to_string() }
}

impl SyncReply {
    /// Encodes the reply: one byte (0 ok, 1 busy), or 2 and the reason in
    /// UTF-8 (at most 200 characters). Every message gets one, so it is as
    /// small as it can be.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            SyncReply::Ok => vec![0],
            SyncReply::Busy => vec![1],
            SyncReply::Refused(reason) => {
                let mut v = vec![2];
                v.extend(reason.chars().take(200).collect::<String>().into_bytes());
                v
            }
        }
    }

    /// Decodes a reply.
    ///
    /// # Errors
    /// [`DecodeError`].
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let reason = |b: &[u8]| -> Result<String, DecodeError> {
            if b.len() > 1024 {
                return Err(DecodeError::TooLarge { field: "reason", len: b.len(), max: 1024 });
            }
            String::from_utf8(b.to_vec()).map_err(|e| invalid("reason", e))
        };
        match bytes.split_first() {
            Some((0, [])) => Ok(SyncReply::Ok),
            Some((1, [])) => Ok(SyncReply::Busy),
            Some((2, rest)) => Ok(SyncReply::Refused(reason(rest)?)),
            Some((t, _)) => Err(DecodeError::Invalid { field: "reply type", reason: format!("unknown type {t}") }),
            None => Err(DecodeError::Truncated { field: "reply", needed: 1 }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::SecretKey;
    use proptest::prelude::*;

    fn cert() -> NodeCertificate {
        NodeCertificate::issue(&SecretKey::from_seed([1; 32]), SecretKey::from_seed([2; 32]).node_id(), 9)
    }

    fn statement() -> SignedStatement {
        SignedStatement::found(&SecretKey::from_seed([1; 32]), "Réseau", "Secrétariat", "BE", 5)
    }

    #[test]
    fn every_message_round_trips() {
        let messages = vec![
            SyncMessage::Hello {
                certificate: cert(),
                network: NetworkId::from_bytes([6; 32]),
                roster_count: 3,
                roster_fingerprint: [2; 16],
                proof: vec![statement()],
                summary: None,
                routes: vec![],
            },
            SyncMessage::Hello {
                certificate: cert(),
                network: NetworkId::from_bytes([6; 32]),
                roster_count: 3,
                roster_fingerprint: [2; 16],
                proof: vec![],
                summary: Some(SetSummary { count: 7, fingerprint: [5; 16], pending: 2 }),
                routes: vec![(cert().node, 3)],
            },
            SyncMessage::ProofWanted,
            SyncMessage::RosterHave { hashes: vec![[1; 16], [2; 16]] },
            SyncMessage::Roster { statements: vec![statement(), statement()], complete: true },
            SyncMessage::Welcome { statements: vec![statement()] },
            SyncMessage::Join {
                invitation: Box::new(crate::network::Invitation::issue(
                    &SecretKey::from_seed([1; 32]),
                    crate::network::InvitationTerms {
                        network: NetworkId::from_bytes([6; 32]),
                        issuer_node: cert().node,
                        addrs: vec!["/ip4/127.0.0.1/tcp/7421".into()],
                        name: "Tala-n-Asif".into(),
                        country: "MA".into(),
                        role: crate::network::Role::Commune,
                        expires_ms: 5,
                        id: [3; 16],
                    },
                )),
                certificate: cert(),
                addrs: vec!["/ip4/127.0.0.1/udp/7421/quic-v1".into()],
            },
            SyncMessage::JoinRefused { reason: "invitation already used".into() },
            SyncMessage::Summary {
                count: 10_000,
                fingerprint: [7; 16],
                roster_count: 4,
                roster_fingerprint: [1; 16],
                pending: 0,
            },
            SyncMessage::Buckets { buckets: vec![BucketPrint { count: 3, xor: [1; 8] }; BUCKETS] },
            SyncMessage::Items {
                buckets: vec![(4, vec![(DocId::from_bytes([4; 32]), vec![[9; 32], [8; 32]])]), (5, vec![])],
            },
            SyncMessage::Docs {
                certificates: vec![cert()],
                headers: vec![],
                changes: vec![
                    ChangeEnvelope {
                        doc: DocId::from_bytes([3; 32]),
                        author: cert().node,
                        change: vec![1, 2, 3],
                        signature: None,
                    },
                    ChangeEnvelope {
                        doc: DocId::from_bytes([3; 32]),
                        author: cert().node,
                        change: vec![1, 2, 3, 4],
                        signature: Some([5; 64]),
                    },
                ],
            },
        ];
        for m in messages {
            assert_eq!(SyncMessage::decode(&m.encode()).unwrap(), m);
        }
        for r in [SyncReply::Ok, SyncReply::Busy, SyncReply::Refused("bad signature".into())] {
            assert_eq!(SyncReply::decode(&r.encode()).unwrap(), r);
        }
    }

    /// A large `Docs` of repetitive changes: compressed on the wire.
    fn large_docs() -> SyncMessage {
        let changes = (0..200u8)
            .map(|i| ChangeEnvelope {
                doc: DocId::from_bytes([i % 7; 32]),
                author: cert().node,
                change: format!("{i} la commune de Senneval demande un appui pour son projet").into_bytes(),
                signature: (i % 11 == 0).then_some([i; 64]),
            })
            .collect();
        SyncMessage::Docs { certificates: vec![cert()], headers: vec![], changes }
    }

    #[test]
    fn large_frames_travel_compressed_and_come_back_whole() {
        let m = large_docs();
        let bytes = m.encode();
        assert_eq!(SyncMessage::decode(&bytes).unwrap(), m);
        let (_, version) = Reader::open(&bytes, TAG, "sync message", COMPRESSED_VERSION).unwrap();
        assert_eq!(version, COMPRESSED_VERSION);
        assert!(bytes.len() * 3 < m.encode_plain().len(), "{} of {}", bytes.len(), m.encode_plain().len());
        // Small messages stay as they are.
        let small = SyncMessage::Prune.encode();
        assert_eq!(Reader::open(&small, TAG, "sync message", COMPRESSED_VERSION).unwrap().1, VERSION);
    }

    #[test]
    fn what_would_shrink_too_much_travels_as_it_is() {
        let m = SyncMessage::Docs {
            certificates: vec![],
            headers: vec![],
            changes: vec![ChangeEnvelope {
                doc: DocId::from_bytes([1; 32]),
                author: cert().node,
                change: vec![b'a'; 200_000],
                signature: Some([3; 64]),
            }],
        };
        let bytes = m.encode();
        assert_eq!(bytes, m.encode_plain());
        assert_eq!(SyncMessage::decode(&bytes).unwrap(), m);
    }

    #[test]
    fn a_compressed_frame_is_bounded_before_it_is_decompressed() {
        let m = large_docs();
        let plain = m.encode_plain();
        let body = &plain[Writer::new(TAG, VERSION).finish().len()..];
        let packed = zstd::bulk::compress(body, 3).unwrap();
        let frame = |claimed: u32, packed: &[u8]| {
            let mut w = Writer::new(TAG, COMPRESSED_VERSION);
            w.u32(claimed).fixed(packed);
            w.finish()
        };
        // Claims more than a frame may hold: refused before decompressing.
        let err = SyncMessage::decode(&frame(MAX_FRAME_BYTES as u32 + 1, &packed)).unwrap_err();
        assert!(matches!(err, DecodeError::TooLarge { field: "uncompressed size", .. }), "{err}");
        // Claims less than it holds (a bomb): the decompressor stops there.
        assert!(SyncMessage::decode(&frame(body.len() as u32 / 2, &packed)).is_err());
        // Claims more than it holds.
        assert!(SyncMessage::decode(&frame(body.len() as u32 + 1, &packed)).is_err());
        // A bomb: 4 MB of zeros in a few hundred bytes, claiming 1 KB.
        let bomb = zstd::bulk::compress(&vec![0u8; MAX_FRAME_BYTES], 19).unwrap();
        assert!(bomb.len() < 1024);
        assert!(SyncMessage::decode(&frame(1024, &bomb)).is_err());
        // Garbage.
        assert!(SyncMessage::decode(&frame(100, &[1, 2, 3, 4])).is_err());
        // Honest bytes claiming more than 32 times their size: refused unread.
        let err = SyncMessage::decode(&frame((bomb.len() * 33) as u32, &bomb)).unwrap_err();
        assert!(err.to_string().contains("over 32 times"), "{err}");
    }

    #[test]
    fn an_idle_summary_is_a_few_dozen_bytes() {
        let len = SyncMessage::Summary {
            count: 10_000,
            fingerprint: [7; 16],
            roster_count: 4,
            roster_fingerprint: [1; 16],
            pending: 0,
        }
        .encode()
        .len();
        assert!(len < 96, "{len} bytes");
    }

    #[test]
    fn bounds_are_enforced_before_allocation() {
        let mut w = Writer::new(TAG, VERSION);
        w.u8(4).u32(1).u8(0).u32(u32::MAX);
        assert!(matches!(SyncMessage::decode(&w.finish()), Err(DecodeError::TooLarge { field: "items", .. })));
        let mut w = Writer::new(TAG, VERSION);
        w.u8(3).u32(2);
        assert!(SyncMessage::decode(&w.finish()).is_err());
        let mut w = Writer::new(TAG, VERSION);
        w.u8(99);
        assert!(matches!(SyncMessage::decode(&w.finish()), Err(DecodeError::Invalid { .. })));
        assert!(SyncMessage::decode(&vec![0u8; MAX_FRAME_BYTES + 1]).is_err());
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = SyncMessage::decode(&bytes);
            let mut framed = Writer::new(TAG, VERSION).finish();
            framed.extend_from_slice(&bytes);
            let _ = SyncMessage::decode(&framed);
        }

        #[test]
        fn summaries_round_trip(count in any::<u64>(), fp in any::<[u8; 16]>()) {
            let m = SyncMessage::Summary { count, fingerprint: fp, roster_count: count / 2, roster_fingerprint: fp, pending: count / 3 };
            prop_assert_eq!(SyncMessage::decode(&m.encode()).unwrap(), m);
        }
    }
}
