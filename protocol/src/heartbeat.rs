//! Signed heartbeats: each node's periodic account of itself (version,
//! uptime, its peers with last contact and lag, what it still has to send,
//! documents by kind and status, disk use, refusals by reason), so that
//! coordinators see the whole network without a central server.
//!
//! A heartbeat is signed by the node key and carries the commune's
//! certificate of that key, so any member can check it, relayed or not,
//! even from a node it never met. Nodes keep only the latest heartbeat of
//! each node: heartbeats never enter a document's history.

use crate::canonical::{DecodeError, Reader, Writer};
use crate::certificate::NodeCertificate;
use crate::ids::{NetworkId, NodeId};
use crate::keys::{self, SIGNATURE_LEN, SecretKey};
use crate::network::Roster;

const TAG: &str = "passerelle/heartbeat";
const VERSION: u8 = 1;
/// Largest encoded heartbeat accepted.
pub const MAX_HEARTBEAT_BYTES: usize = 16 * 1024;
/// Most peers a heartbeat lists.
pub const MAX_PEERS: usize = 128;
/// Most (kind, status) counts and refusal reasons a heartbeat lists.
pub const MAX_COUNTS: usize = 64;
/// How far ahead of the receiver's clock a heartbeat may be dated.
pub const MAX_CLOCK_AHEAD_MS: u64 = 5 * 60 * 1000;
const MAX_LABEL: usize = 64;

/// What a node says of one of its peers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerBeat {
    /// The peer.
    pub node: NodeId,
    /// Connected (and admitted) when the heartbeat was made.
    pub connected: bool,
    /// Last time a connection with it came up (ms; 0: never).
    pub last_contact_ms: u64,
    /// Last reconciliation round that found it in sync (ms; 0: never).
    pub last_sync_ms: u64,
    /// Shared documents it has not acknowledged at their current state.
    pub unacknowledged: u64,
    /// Documents queued for it (a transfer under way).
    pub queued: u64,
}

/// A node's status at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heartbeat {
    /// The network it speaks in.
    pub network: NetworkId,
    /// The commune's certificate of the node key (names node and commune).
    pub certificate: NodeCertificate,
    /// When it was made (ms since the Unix epoch, the node's clock).
    pub time_ms: u64,
    /// The node software's version.
    pub version: String,
    /// Seconds since the node started.
    pub uptime_s: u64,
    /// Its peers.
    pub peers: Vec<PeerBeat>,
    /// Documents it holds by kind and status (status empty for kinds without one).
    pub documents: Vec<(String, String, u64)>,
    /// Bytes its store takes on disk.
    pub disk_bytes: u64,
    /// Items it refused since it started, by reason code.
    pub rejected: Vec<(String, u64)>,
}

impl Heartbeat {
    /// The node it is about.
    pub fn node(&self) -> NodeId {
        self.certificate.node
    }

    fn encode_body(&self) -> Vec<u8> {
        let mut w = Writer::new(TAG, VERSION);
        w.fixed(self.network.as_bytes()).bytes(&self.certificate.encode()).u64(self.time_ms);
        w.str(&self.version).u64(self.uptime_s);
        w.u32(self.peers.len() as u32);
        for p in &self.peers {
            w.fixed(p.node.as_bytes()).u8(u8::from(p.connected)).u64(p.last_contact_ms).u64(p.last_sync_ms);
            w.u64(p.unacknowledged).u64(p.queued);
        }
        w.u32(self.documents.len() as u32);
        for (kind, status, n) in &self.documents {
            w.str(kind).str(status).u64(*n);
        }
        w.u64(self.disk_bytes);
        w.u32(self.rejected.len() as u32);
        for (reason, n) in &self.rejected {
            w.str(reason).u64(*n);
        }
        w.finish()
    }
}

/// A heartbeat and the node key's signature over it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedHeartbeat {
    /// The status.
    pub heartbeat: Heartbeat,
    /// The node key's signature over the encoded heartbeat.
    pub signature: [u8; SIGNATURE_LEN],
}

/// Why a heartbeat is refused (its reason code names it in counters).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeartbeatError {
    /// Not readable, or over the size limit.
    #[error("malformed heartbeat: {0}")]
    Malformed(#[from] DecodeError),
    /// The certificate or the signature does not verify.
    #[error("heartbeat signature or certificate does not verify")]
    BadSignature,
    /// Made for another network.
    #[error("heartbeat of another network")]
    OtherNetwork,
    /// Its node is not (or no longer) admitted.
    #[error("heartbeat of a node that is not admitted: {0}")]
    NotAMember(String),
    /// Dated too far in the future.
    #[error("heartbeat dated {0} ms ahead of this node's clock")]
    FromTheFuture(u64),
}

impl HeartbeatError {
    /// A stable code, for counters.
    pub fn code(&self) -> &'static str {
        match self {
            HeartbeatError::Malformed(_) => "heartbeat_malformed",
            HeartbeatError::BadSignature => "heartbeat_bad_signature",
            HeartbeatError::OtherNetwork => "heartbeat_other_network",
            HeartbeatError::NotAMember(_) => "heartbeat_not_a_member",
            HeartbeatError::FromTheFuture(_) => "heartbeat_from_the_future",
        }
    }
}

impl SignedHeartbeat {
    /// Signs a heartbeat with the node key its certificate names.
    pub fn sign(heartbeat: Heartbeat, node_key: &SecretKey) -> Self {
        let signature = node_key.sign(&heartbeat.encode_body());
        Self { heartbeat, signature }
    }

    /// The heartbeat's bytes: the signed body, then the signature.
    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = self.heartbeat.encode_body();
        bytes.extend_from_slice(&self.signature);
        bytes
    }

    /// Reads a heartbeat (within the size limits); checks nothing else.
    ///
    /// # Errors
    /// [`DecodeError`].
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.len() > MAX_HEARTBEAT_BYTES {
            return Err(DecodeError::TooLarge { field: "heartbeat", len: bytes.len(), max: MAX_HEARTBEAT_BYTES });
        }
        let body_len = bytes
            .len()
            .checked_sub(SIGNATURE_LEN)
            .ok_or_else(|| DecodeError::Truncated { field: "signature", needed: SIGNATURE_LEN - bytes.len() })?;
        let (mut r, _) = Reader::open(&bytes[..body_len], TAG, "heartbeat", VERSION)?;
        let count = |r: &mut Reader<'_>, field: &'static str, max: usize| -> Result<usize, DecodeError> {
            let n = r.u32(field)? as usize;
            if n > max { Err(DecodeError::TooLarge { field, len: n, max }) } else { Ok(n) }
        };
        let network = NetworkId::from_bytes(r.fixed("network")?);
        let certificate = NodeCertificate::decode(r.bytes("certificate", 512)?)
            .map_err(|e| DecodeError::Invalid { field: "certificate", reason: e.to_string() })?;
        let time_ms = r.u64("time")?;
        let version = r.str("version", MAX_LABEL)?.to_owned();
        let uptime_s = r.u64("uptime")?;
        let n = count(&mut r, "peers", MAX_PEERS)?;
        let mut peers = Vec::with_capacity(n);
        for _ in 0..n {
            peers.push(PeerBeat {
                node: NodeId::from_bytes(r.fixed("peer")?),
                connected: r.u8("connected")? != 0,
                last_contact_ms: r.u64("last contact")?,
                last_sync_ms: r.u64("last sync")?,
                unacknowledged: r.u64("unacknowledged")?,
                queued: r.u64("queued")?,
            });
        }
        let n = count(&mut r, "documents", MAX_COUNTS)?;
        let mut documents = Vec::with_capacity(n);
        for _ in 0..n {
            documents.push((
                r.str("kind", MAX_LABEL)?.to_owned(),
                r.str("status", MAX_LABEL)?.to_owned(),
                r.u64("count")?,
            ));
        }
        let disk_bytes = r.u64("disk")?;
        let n = count(&mut r, "rejected", MAX_COUNTS)?;
        let mut rejected = Vec::with_capacity(n);
        for _ in 0..n {
            rejected.push((r.str("reason", MAX_LABEL)?.to_owned(), r.u64("count")?));
        }
        r.end()?;
        let signature: [u8; SIGNATURE_LEN] = bytes[body_len..].try_into().expect("signature length");
        Ok(Self {
            heartbeat: Heartbeat {
                network,
                certificate,
                time_ms,
                version,
                uptime_s,
                peers,
                documents,
                disk_bytes,
                rejected,
            },
            signature,
        })
    }

    /// Checks a heartbeat against this node's network at `now_ms`: the
    /// certificate and signature verify, the network is this one, the node
    /// is admitted (its commune a member, its key not revoked), and it is
    /// not dated in the future.
    ///
    /// # Errors
    /// [`HeartbeatError`] naming the first check that failed.
    pub fn check(&self, roster: &Roster, now_ms: u64) -> Result<(), HeartbeatError> {
        let hb = &self.heartbeat;
        if hb.certificate.verify().is_err()
            || keys::verify(hb.certificate.node.as_bytes(), &hb.encode_body(), &self.signature).is_err()
        {
            return Err(HeartbeatError::BadSignature);
        }
        if hb.network != roster.network() {
            return Err(HeartbeatError::OtherNetwork);
        }
        roster.node_admitted(&hb.certificate.node, &hb.certificate.commune).map_err(HeartbeatError::NotAMember)?;
        if hb.time_ms > now_ms + MAX_CLOCK_AHEAD_MS {
            return Err(HeartbeatError::FromTheFuture(hb.time_ms - now_ms));
        }
        Ok(())
    }
}

/// Tag of the bytes a pulse chain's signature covers.
const CHAIN_TAG: &str = "passerelle/pulse-chain";
/// Bytes of a pulse on the wire.
pub const PULSE_BYTES: usize = 8 + 4 + 2 + 16;
/// Bytes of a pulse chain on the wire.
pub const CHAIN_BYTES: usize = 32 + 8 + 4 + 2 + 16 + SIGNATURE_LEN;
/// Most pulses one chain covers.
pub const MAX_CHAIN: u16 = 1_024;

/// One step of a pulse chain: the first 16 bytes of SHA-256 of the tag
/// and the previous step.
fn step(value: &[u8; 16]) -> [u8; 16] {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(b"passerelle/pulse-step");
    h.update(value);
    let full: [u8; 32] = h.finalize().into();
    full[..16].try_into().expect("16 of 32 bytes")
}

/// A node's commitment to the pulses it will send: the last value of a
/// hash chain (its *anchor*), signed with the node key, and the times the
/// pulses are due: pulse `i` (1 to `count`) is due at `start_ms + i ×
/// period_ms` and reveals the chain's value `count − i` steps from the
/// seed. Anyone holding the chain checks a pulse by hashing it back to the
/// anchor (or to the last pulse it checked); nobody but the node can make
/// the next one. A pulse is 30 bytes instead of a 100-byte signed message
/// (the TESLA / PayWord idea), which is what lets coordinators hear from
/// every node every few minutes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PulseChain {
    /// The node.
    pub node: NodeId,
    /// When the chain starts (ms).
    pub start_ms: u64,
    /// The interval between two pulses (ms).
    pub period_ms: u32,
    /// How many pulses it covers.
    pub count: u16,
    /// The chain's last value.
    pub anchor: [u8; 16],
    /// The node key's signature (the network id is in the signed bytes).
    pub signature: [u8; SIGNATURE_LEN],
}

fn chain_body(
    network: &NetworkId,
    node: &NodeId,
    start_ms: u64,
    period_ms: u32,
    count: u16,
    anchor: &[u8; 16],
) -> Vec<u8> {
    let mut w = Writer::new(CHAIN_TAG, VERSION);
    w.fixed(network.as_bytes()).fixed(node.as_bytes()).u64(start_ms).u32(period_ms).u16(count).fixed(anchor);
    w.finish()
}

impl PulseChain {
    /// A new chain of `node_key`'s node and its values, seed first (the
    /// seed comes from the node key's signature over the start, so it
    /// needs no storage and no one else can compute it).
    pub fn make(
        network: &NetworkId,
        node_key: &SecretKey,
        start_ms: u64,
        period_ms: u32,
        count: u16,
    ) -> (Self, Vec<[u8; 16]>) {
        use sha2::Digest;
        let count = count.clamp(1, MAX_CHAIN);
        let mut seed_input = Writer::new("passerelle/pulse-seed", VERSION);
        seed_input.fixed(network.as_bytes()).u64(start_ms);
        let sig = node_key.sign(&seed_input.finish());
        let full: [u8; 32] = sha2::Sha256::digest(sig).into();
        let mut values = vec![<[u8; 16]>::try_from(&full[..16]).expect("16 of 32 bytes")];
        for _ in 0..count {
            let next = step(values.last().expect("the seed is there"));
            values.push(next);
        }
        let anchor = values[count as usize];
        let node = node_key.node_id();
        let signature = node_key.sign(&chain_body(network, &node, start_ms, period_ms, count, &anchor));
        (Self { node, start_ms, period_ms, count, anchor, signature }, values)
    }

    /// Checks the signature for `network`.
    ///
    /// # Errors
    /// [`HeartbeatError::BadSignature`] (also for another network's chain).
    pub fn verify(&self, network: &NetworkId) -> Result<(), HeartbeatError> {
        let body = chain_body(network, &self.node, self.start_ms, self.period_ms, self.count, &self.anchor);
        keys::verify(self.node.as_bytes(), &body, &self.signature).map_err(|_| HeartbeatError::BadSignature)?;
        if self.count == 0 || self.count > MAX_CHAIN || self.period_ms == 0 {
            return Err(HeartbeatError::BadSignature);
        }
        Ok(())
    }

    /// When pulse `index` is due (ms).
    pub fn due(&self, index: u16) -> u64 {
        self.start_ms + u64::from(index) * u64::from(self.period_ms)
    }

    /// Whether `pulse` is due on this chain's schedule (a pulse of another
    /// chain of the node is not).
    pub fn on_schedule(&self, pulse: &Pulse) -> bool {
        pulse.index >= 1
            && pulse.index <= self.count
            && u64::from(pulse.time_s) * 1000 == self.due(pulse.index) / 1000 * 1000
    }

    /// Whether `pulse` belongs to this chain, given the last value known
    /// (`(index, value)`, or the anchor at index 0).
    pub fn admits(&self, pulse: &Pulse, known: (u16, [u8; 16])) -> bool {
        if pulse.index == 0 || pulse.index > self.count || pulse.index <= known.0 {
            return false;
        }
        if u64::from(pulse.time_s) * 1000 != self.due(pulse.index) / 1000 * 1000 {
            return false;
        }
        let mut v = pulse.token;
        for _ in known.0..pulse.index {
            v = step(&v);
        }
        v == known.1
    }

    /// Writes the chain's wire bytes.
    pub fn write(&self, w: &mut Writer) {
        w.fixed(self.node.as_bytes()).u64(self.start_ms).u32(self.period_ms).u16(self.count);
        w.fixed(&self.anchor).fixed(&self.signature);
    }

    /// Reads a chain's wire bytes.
    ///
    /// # Errors
    /// [`DecodeError`] when truncated.
    pub fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            node: NodeId::from_bytes(r.fixed("chain node")?),
            start_ms: r.u64("chain start")?,
            period_ms: r.u32("chain period")?,
            count: r.u16("chain count")?,
            anchor: r.fixed("chain anchor")?,
            signature: r.fixed("chain signature")?,
        })
    }
}

/// A node's compact "still here": the value of its pulse chain due at
/// `time_s`. It names its node by the first 8 bytes of the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pulse {
    /// The first 8 bytes of the node key.
    pub node: [u8; 8],
    /// When it was due (seconds since the Unix epoch).
    pub time_s: u32,
    /// Its place in the chain (1 to the chain's count).
    pub index: u16,
    /// The chain's value at that place.
    pub token: [u8; 16],
}

impl Pulse {
    /// Pulse `index` of a chain whose values `values` are (seed first).
    pub fn of(chain: &PulseChain, values: &[[u8; 16]], index: u16) -> Option<Self> {
        let token = *values.get(usize::from(chain.count.checked_sub(index)?))?;
        let mut node = [0u8; 8];
        node.copy_from_slice(&chain.node.as_bytes()[..8]);
        Some(Self { node, time_s: (chain.due(index) / 1000) as u32, index, token })
    }

    /// When it was due (ms).
    pub fn time_ms(&self) -> u64 {
        u64::from(self.time_s) * 1000
    }

    /// Writes the pulse's wire bytes.
    pub fn write(&self, w: &mut Writer) {
        w.fixed(&self.node).u32(self.time_s).u16(self.index).fixed(&self.token);
    }

    /// Reads a pulse's wire bytes.
    ///
    /// # Errors
    /// [`DecodeError`] when truncated.
    pub fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            node: r.fixed("pulse node")?,
            time_s: r.u32("pulse time")?,
            index: r.u16("pulse index")?,
            token: r.fixed("pulse token")?,
        })
    }
}

/// The latest heartbeat of a node, as this node received it, with the
/// pulse chain that came with it (what checks its later pulses).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredHeartbeat {
    /// The signed heartbeat.
    pub beat: SignedHeartbeat,
    /// When it arrived here (ms, this node's clock).
    pub received_ms: i64,
    /// The peer it came from (`None`: made here).
    pub via: Option<NodeId>,
}

impl StoredHeartbeat {
    /// The stored bytes: received time, via (or zeros), the heartbeat.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = self.received_ms.to_be_bytes().to_vec();
        v.extend_from_slice(self.via.as_ref().map_or(&[0u8; 32], |n| n.as_bytes()));
        v.extend_from_slice(&self.beat.encode());
        v
    }

    /// Reads stored bytes.
    ///
    /// # Errors
    /// [`DecodeError`].
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.len() < 40 {
            return Err(DecodeError::Truncated { field: "stored heartbeat", needed: 40 - bytes.len() });
        }
        let received_ms = i64::from_be_bytes(bytes[..8].try_into().expect("8 bytes"));
        let via: [u8; 32] = bytes[8..40].try_into().expect("32 bytes");
        let via = (via != [0; 32]).then(|| NodeId::from_bytes(via));
        let beat = SignedHeartbeat::decode(&bytes[40..])?;
        Ok(Self { beat, received_ms, via })
    }
}

impl PulseChain {
    /// The chain's bytes on its own (to store it).
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new(CHAIN_TAG, VERSION);
        self.write(&mut w);
        w.finish()
    }

    /// Reads a stored chain.
    ///
    /// # Errors
    /// [`DecodeError`].
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let (mut r, _) = Reader::open(bytes, CHAIN_TAG, "pulse chain", VERSION)?;
        let chain = Self::read(&mut r)?;
        r.end()?;
        Ok(chain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::{Role, SignedStatement, Statement};

    fn setup() -> (Roster, SecretKey, NodeCertificate) {
        let founder = SecretKey::from_seed([9; 32]);
        let mut roster = Roster::founded(SignedStatement::found(&founder, "Réseau", "Senneval", "BE", 1)).unwrap();
        let commune = SecretKey::from_seed([3; 32]);
        let node = SecretKey::from_seed([4; 32]);
        let body = Statement::Admit {
            member: commune.commune_id(),
            name: "Tala-n-Asif".into(),
            country: "MA".into(),
            role: Role::Commune,
            invitation: [1; 16],
            node: node.node_id(),
            addrs: vec![],
        };
        roster.insert(SignedStatement::sign(&founder, roster.network(), 2, body)).unwrap();
        let cert = NodeCertificate::issue(&commune, node.node_id(), 1);
        (roster, node, cert)
    }

    fn beat(roster: &Roster, cert: &NodeCertificate, time_ms: u64) -> Heartbeat {
        Heartbeat {
            network: roster.network(),
            certificate: cert.clone(),
            time_ms,
            version: "0.1.0".into(),
            uptime_s: 42,
            peers: vec![PeerBeat {
                node: NodeId::from_bytes([7; 32]),
                connected: true,
                last_contact_ms: 10,
                last_sync_ms: 11,
                unacknowledged: 2,
                queued: 1,
            }],
            documents: vec![("request".into(), "open".into(), 3), ("profile".into(), String::new(), 2)],
            disk_bytes: 1 << 20,
            rejected: vec![("bad_signature".into(), 1)],
        }
    }

    #[test]
    fn a_heartbeat_round_trips_and_checks() {
        let (roster, key, cert) = setup();
        let signed = SignedHeartbeat::sign(beat(&roster, &cert, 1_000), &key);
        let back = SignedHeartbeat::decode(&signed.encode()).unwrap();
        assert_eq!(back, signed);
        back.check(&roster, 1_000).unwrap();
    }

    #[test]
    fn forged_foreign_unknown_and_future_heartbeats_are_refused() {
        let (roster, key, cert) = setup();
        // Signed by another key than the certified one.
        let forged = SignedHeartbeat::sign(beat(&roster, &cert, 1_000), &SecretKey::from_seed([5; 32]));
        assert_eq!(forged.check(&roster, 1_000), Err(HeartbeatError::BadSignature));
        // Every altered byte of the body is caught.
        let bytes = SignedHeartbeat::sign(beat(&roster, &cert, 1_000), &key).encode();
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 1;
            if let Ok(h) = SignedHeartbeat::decode(&b) {
                assert!(h.check(&roster, 1_000).is_err(), "byte {i}");
            }
        }
        // A node of a commune that is not a member.
        let stranger = SecretKey::from_seed([6; 32]);
        let stranger_node = SecretKey::from_seed([8; 32]);
        let cert2 = NodeCertificate::issue(&stranger, stranger_node.node_id(), 1);
        let outsider = SignedHeartbeat::sign(beat(&roster, &cert2, 1_000), &stranger_node);
        assert!(matches!(outsider.check(&roster, 1_000), Err(HeartbeatError::NotAMember(_))));
        // Another network.
        let mut other = beat(&roster, &cert, 1_000);
        other.network = NetworkId::from_bytes([1; 32]);
        assert_eq!(SignedHeartbeat::sign(other, &key).check(&roster, 1_000), Err(HeartbeatError::OtherNetwork));
        // Dated an hour ahead.
        let future = SignedHeartbeat::sign(beat(&roster, &cert, 3_600_000), &key);
        assert!(matches!(future.check(&roster, 0), Err(HeartbeatError::FromTheFuture(_))));
    }

    #[test]
    fn oversized_heartbeats_are_refused_before_reading() {
        assert!(matches!(
            SignedHeartbeat::decode(&vec![0; MAX_HEARTBEAT_BYTES + 1]),
            Err(DecodeError::TooLarge { field: "heartbeat", .. })
        ));
        let mut w = Writer::new(TAG, VERSION);
        w.fixed(&[0; 32]);
        assert!(SignedHeartbeat::decode(&w.finish()).is_err());
    }
}
