//! Signed membership statements: the facts a roster is folded from.
//!
//! Each statement is signed by a commune's long-term key and names the
//! network it belongs to, so it cannot be replayed into another network.
//! Statements never change once signed; the roster is a grow-only set of
//! them, and what they mean together (who is a member, with which role,
//! which keys are revoked, which partnerships are active) is a deterministic
//! function of that set ([`super::roster::Roster`]).

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};

use crate::canonical::{DecodeError, Reader, Writer};
use crate::ids::{CommuneId, NetworkId, NodeId};
use crate::keys::{self, SIGNATURE_LEN, SecretKey, SignatureError};

const TAG: &str = "passerelle/statement";
const NETWORK_TAG: &str = "passerelle/network";
const VERSION: u8 = 1;
/// Longest network or commune name, in bytes.
pub const MAX_NAME_BYTES: usize = 200;
/// Most contact addresses in an admission.
pub const MAX_ADDRS: usize = 8;
/// Longest contact address, in bytes.
pub const MAX_ADDR_BYTES: usize = 256;
/// Most change hashes a revocation keeps valid.
pub const MAX_KEPT: usize = 100_000;
/// Largest encoded statement accepted.
pub const MAX_STATEMENT_BYTES: usize = 64 + MAX_KEPT * 32 + 1024;

/// What a member may do in the network (DOMAIN.md, roles).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub enum Role {
    /// Runs a node, owns its profile, projects, requests, offers and practice sheets.
    Commune,
    /// Reads network-wide documents; may publish practice sheets and comments (follow-ups).
    Observer,
    /// Admits and removes members, revokes keys, tags and follows up (with
    /// follow-up documents of its own); never edits a commune's content (it
    /// is not among its writers).
    Coordinator,
}

impl Role {
    /// The role's code.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Commune => "commune",
            Role::Observer => "observer",
            Role::Coordinator => "coordinator",
        }
    }

    /// Whether a member with this role may own a document of `kind`: an
    /// observer publishes its profile, practice sheets and follow-up notes
    /// (comments) only; communes and
    /// coordinators (often an association of communes, or a commune that
    /// founded the network) any kind. Nobody edits another's content either
    /// way: that is what a document's writers decide. Kinds from newer
    /// releases are let through, like their documents.
    pub fn may_own(self, kind: &crate::header::DocKind) -> bool {
        use crate::header::DocKind;
        match self {
            Role::Commune | Role::Coordinator => true,
            Role::Observer => {
                matches!(kind, DocKind::Profile | DocKind::Practice | DocKind::Followup | DocKind::Unknown(_))
            }
        }
    }

    fn code(self) -> u8 {
        match self {
            Role::Commune => 1,
            Role::Observer => 2,
            Role::Coordinator => 3,
        }
    }

    fn from_code(code: u8) -> Result<Self, DecodeError> {
        match code {
            1 => Ok(Role::Commune),
            2 => Ok(Role::Observer),
            3 => Ok(Role::Coordinator),
            other => Err(DecodeError::Invalid { field: "role", reason: format!("unknown role code {other}") }),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "commune" => Ok(Role::Commune),
            "observer" => Ok(Role::Observer),
            "coordinator" => Ok(Role::Coordinator),
            other => Err(format!("unknown role {other:?}; expected one of: commune, observer, coordinator")),
        }
    }
}

/// What a statement says.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Statement {
    /// The signer founds a network named `name`; the network id derives
    /// from this statement ([`network_id`]). The founder is a coordinator.
    Found {
        /// The network's name.
        name: String,
        /// The founding commune's name.
        commune: String,
        /// The founding commune's country.
        country: String,
    },
    /// A coordinator admits a commune with a role.
    Admit {
        /// The admitted commune.
        member: CommuneId,
        /// Its name.
        name: String,
        /// Its country (ISO 3166 alpha-2).
        country: String,
        /// Its role.
        role: Role,
        /// The invitation redeemed (all zero when admitted directly).
        invitation: [u8; 16],
        /// The node that redeemed it, and where it could be reached then:
        /// contact hints so members can find each other.
        node: NodeId,
        /// Addresses of that node when it joined.
        addrs: Vec<String>,
    },
    /// A coordinator removes a member.
    Remove {
        /// The removed commune.
        member: CommuneId,
    },
    /// A node key is revoked (by its commune or a coordinator): from now on
    /// only the changes listed in `kept` (hashes of Automerge changes it
    /// signed before) are accepted from it.
    Revoke {
        /// The revoked node key.
        node: NodeId,
        /// Changes by that key that stay valid.
        kept: Vec<[u8; 32]>,
    },
    /// The signer declares a partnership with `with` (active once both did).
    Partner {
        /// The other commune.
        with: CommuneId,
    },
    /// The signer ends its partnership with `with`.
    Unpartner {
        /// The other commune.
        with: CommuneId,
    },
    /// The signer's commune runs `node`, reachable at `addrs`: it
    /// registers a node key the admission does not name (the founder's, a
    /// rotated one) and says where it listens. The node key signs too
    /// (`possession`), so no commune can claim another's key.
    Node {
        /// The node key.
        node: NodeId,
        /// Where it listens (contact hints).
        addrs: Vec<String>,
        /// The node key's signature over the network, the commune and the
        /// node ([`possession_bytes`]).
        possession: [u8; SIGNATURE_LEN],
    },
}

impl Statement {
    /// A short name for logs and the API.
    pub fn kind(&self) -> &'static str {
        match self {
            Statement::Found { .. } => "found",
            Statement::Admit { .. } => "admit",
            Statement::Remove { .. } => "remove",
            Statement::Revoke { .. } => "revoke",
            Statement::Partner { .. } => "partner",
            Statement::Unpartner { .. } => "unpartner",
            Statement::Node { .. } => "node",
        }
    }

    fn write(&self, w: &mut Writer) {
        match self {
            Statement::Found { name, commune, country } => {
                w.u8(1).str(name).str(commune).str(country);
            }
            Statement::Admit { member, name, country, role, invitation, node, addrs } => {
                w.u8(2).fixed(member.as_bytes()).str(name).str(country).u8(role.code()).fixed(invitation);
                w.fixed(node.as_bytes());
                write_addrs(w, addrs);
            }
            Statement::Remove { member } => {
                w.u8(3).fixed(member.as_bytes());
            }
            Statement::Revoke { node, kept } => {
                w.u8(4).fixed(node.as_bytes()).u32(kept.len() as u32);
                for k in kept {
                    w.fixed(k);
                }
            }
            Statement::Partner { with } => {
                w.u8(5).fixed(with.as_bytes());
            }
            Statement::Unpartner { with } => {
                w.u8(6).fixed(with.as_bytes());
            }
            Statement::Node { node, addrs, possession } => {
                w.u8(7).fixed(node.as_bytes());
                write_addrs(w, addrs);
                w.fixed(possession);
            }
        }
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(match r.u8("statement type")? {
            1 => Statement::Found {
                name: r.str("name", MAX_NAME_BYTES)?.to_owned(),
                commune: r.str("commune", MAX_NAME_BYTES)?.to_owned(),
                country: r.str("country", 8)?.to_owned(),
            },
            2 => {
                let member = CommuneId::from_bytes(r.fixed("member")?);
                let name = r.str("name", MAX_NAME_BYTES)?.to_owned();
                let country = r.str("country", 8)?.to_owned();
                let role = Role::from_code(r.u8("role")?)?;
                let invitation = r.fixed("invitation")?;
                let node = NodeId::from_bytes(r.fixed("node")?);
                let addrs = read_addrs(r)?;
                Statement::Admit { member, name, country, role, invitation, node, addrs }
            }
            3 => Statement::Remove { member: CommuneId::from_bytes(r.fixed("member")?) },
            4 => {
                let node = NodeId::from_bytes(r.fixed("node")?);
                let count = r.u32("kept count")? as usize;
                if count > MAX_KEPT {
                    return Err(DecodeError::TooLarge { field: "kept changes", len: count, max: MAX_KEPT });
                }
                let mut kept = Vec::with_capacity(count.min(r.remaining() / 32));
                for _ in 0..count {
                    kept.push(r.fixed("kept change")?);
                }
                Statement::Revoke { node, kept }
            }
            5 => Statement::Partner { with: CommuneId::from_bytes(r.fixed("partner")?) },
            6 => Statement::Unpartner { with: CommuneId::from_bytes(r.fixed("partner")?) },
            7 => {
                let node = NodeId::from_bytes(r.fixed("node")?);
                let addrs = read_addrs(r)?;
                Statement::Node { node, addrs, possession: r.fixed("possession")? }
            }
            other => {
                return Err(DecodeError::Invalid {
                    field: "statement type",
                    reason: format!("unknown statement type {other}"),
                });
            }
        })
    }
}

/// Writes a list of contact addresses (count, then each).
pub fn write_addrs(w: &mut Writer, addrs: &[String]) {
    w.u32(addrs.len() as u32);
    for a in addrs {
        w.str(a);
    }
}

/// Reads a list of contact addresses, refusing more than [`MAX_ADDRS`].
///
/// # Errors
/// [`DecodeError`].
pub fn read_addrs(r: &mut Reader<'_>) -> Result<Vec<String>, DecodeError> {
    let count = r.u32("address count")? as usize;
    if count > MAX_ADDRS {
        return Err(DecodeError::TooLarge { field: "addresses", len: count, max: MAX_ADDRS });
    }
    let mut addrs = Vec::with_capacity(count);
    for _ in 0..count {
        addrs.push(r.str("address", MAX_ADDR_BYTES)?.to_owned());
    }
    Ok(addrs)
}

/// What a node key signs to show it belongs to `commune` in `network`.
pub fn possession_bytes(network: &NetworkId, commune: &CommuneId, node: &NodeId) -> Vec<u8> {
    let mut w = Writer::new("passerelle/node-possession", VERSION);
    w.fixed(network.as_bytes()).fixed(commune.as_bytes()).fixed(node.as_bytes());
    w.finish()
}

/// The id of the network founded by `founder` under `name` at `founded_ms`.
pub fn network_id(founder: &CommuneId, name: &str, founded_ms: u64) -> NetworkId {
    let mut w = Writer::new(NETWORK_TAG, VERSION);
    w.fixed(founder.as_bytes()).str(name).u64(founded_ms);
    NetworkId::from_bytes(Sha256::digest(w.finish()).into())
}

/// A statement with its network, signer, time and the signer's signature.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct SignedStatement {
    /// The network it belongs to.
    pub network: NetworkId,
    /// The commune whose key signed it.
    pub signer: CommuneId,
    /// When it was signed, milliseconds since the Unix epoch (orders
    /// statements about the same thing: the latest wins).
    pub issued_ms: u64,
    /// What it says.
    pub body: Statement,
    /// The signer's signature over the canonical bytes.
    pub signature: [u8; SIGNATURE_LEN],
}

impl SignedStatement {
    /// Registers `node_key`'s node for `commune_key`'s commune, reachable
    /// at `addrs`: signed by both keys.
    pub fn node(
        commune_key: &SecretKey,
        node_key: &SecretKey,
        network: NetworkId,
        issued_ms: u64,
        addrs: Vec<String>,
    ) -> Self {
        let node = node_key.node_id();
        let possession = node_key.sign(&possession_bytes(&network, &commune_key.commune_id(), &node));
        Self::sign(commune_key, network, issued_ms, Statement::Node { node, addrs, possession })
    }

    /// Signs a statement with a commune key.
    pub fn sign(commune_key: &SecretKey, network: NetworkId, issued_ms: u64, body: Statement) -> Self {
        let signer = commune_key.commune_id();
        let signature = commune_key.sign(&signed_bytes(&network, &signer, issued_ms, &body));
        Self { network, signer, issued_ms, body, signature }
    }

    /// Founds a network named `name`: the founding commune's name and
    /// country go along; the network id derives from the statement.
    pub fn found(founder_key: &SecretKey, name: &str, commune: &str, country: &str, founded_ms: u64) -> Self {
        let network = network_id(&founder_key.commune_id(), name, founded_ms);
        let body = Statement::Found { name: name.to_owned(), commune: commune.to_owned(), country: country.to_owned() };
        Self::sign(founder_key, network, founded_ms, body)
    }

    /// Checks the signature.
    ///
    /// # Errors
    /// [`SignatureError`] when the signer did not sign it.
    pub fn verify(&self) -> Result<(), SignatureError> {
        let msg = signed_bytes(&self.network, &self.signer, self.issued_ms, &self.body);
        keys::verify(self.signer.as_bytes(), &msg, &self.signature)?;
        if let Statement::Node { node, possession, .. } = &self.body {
            keys::verify(node.as_bytes(), &possession_bytes(&self.network, &self.signer, node), possession)?;
        }
        Ok(())
    }

    /// Encodes the statement: canonical bytes, then the signature.
    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = signed_bytes(&self.network, &self.signer, self.issued_ms, &self.body);
        bytes.extend_from_slice(&self.signature);
        bytes
    }

    /// Decodes a statement; does not verify it.
    ///
    /// # Errors
    /// [`DecodeError`] on malformed or oversized input.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.len() > MAX_STATEMENT_BYTES {
            return Err(DecodeError::TooLarge { field: "statement", len: bytes.len(), max: MAX_STATEMENT_BYTES });
        }
        let (mut r, _) = Reader::open(bytes, TAG, "statement", VERSION)?;
        let network = NetworkId::from_bytes(r.fixed("network")?);
        let signer = CommuneId::from_bytes(r.fixed("signer")?);
        let issued_ms = r.u64("issued")?;
        let body = Statement::read(&mut r)?;
        let signature = r.fixed("signature")?;
        r.end()?;
        Ok(Self { network, signer, issued_ms, body, signature })
    }

    /// The statement's hash: its identity in the roster.
    pub fn hash(&self) -> [u8; 32] {
        Sha256::digest(self.encode()).into()
    }
}

fn signed_bytes(network: &NetworkId, signer: &CommuneId, issued_ms: u64, body: &Statement) -> Vec<u8> {
    let mut w = Writer::new(TAG, VERSION);
    w.fixed(network.as_bytes()).fixed(signer.as_bytes()).u64(issued_ms);
    body.write(&mut w);
    w.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<SignedStatement> {
        let founder = SecretKey::from_seed([1; 32]);
        let found = SignedStatement::found(&founder, "Réseau TOGETHER Belgique–Maroc", "Secrétariat", "BE", 1_000);
        let net = found.network;
        let member = SecretKey::from_seed([2; 32]).commune_id();
        let node = SecretKey::from_seed([3; 32]).node_id();
        vec![
            found,
            SignedStatement::sign(
                &founder,
                net,
                2_000,
                Statement::Admit {
                    member,
                    name: "Tala-n-Asif".into(),
                    country: "MA".into(),
                    role: Role::Commune,
                    invitation: [7; 16],
                    node,
                    addrs: vec!["/ip4/127.0.0.1/tcp/7421".into()],
                },
            ),
            SignedStatement::sign(&founder, net, 3_000, Statement::Remove { member }),
            SignedStatement::sign(&founder, net, 4_000, Statement::Revoke { node, kept: vec![[5; 32], [6; 32]] }),
            SignedStatement::sign(&founder, net, 5_000, Statement::Partner { with: member }),
            SignedStatement::sign(&founder, net, 6_000, Statement::Unpartner { with: member }),
        ]
    }

    #[test]
    fn statements_round_trip_and_verify() {
        for s in samples() {
            let back = SignedStatement::decode(&s.encode()).unwrap();
            assert_eq!(back, s);
            back.verify().unwrap();
        }
    }

    #[test]
    fn any_tampered_byte_is_detected() {
        for s in samples() {
            let bytes = s.encode();
            for i in 0..bytes.len() {
                let mut bad = bytes.clone();
                bad[i] ^= 0x01;
                let ok = SignedStatement::decode(&bad).map(|s| s.verify().is_ok()).unwrap_or(false);
                assert!(!ok, "{}: flipping byte {i} went unnoticed", s.body.kind());
            }
        }
    }

    #[test]
    fn the_network_id_names_its_founder() {
        let founder = SecretKey::from_seed([1; 32]);
        let found = SignedStatement::found(&founder, "R", "S", "BE", 1);
        assert_eq!(found.network, network_id(&founder.commune_id(), "R", 1));
        assert_ne!(found.network, network_id(&SecretKey::from_seed([2; 32]).commune_id(), "R", 1));
    }
}
