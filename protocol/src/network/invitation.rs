//! Invitations: a coordinator's signed, single-use, expiring offer of
//! membership, handed to a new commune as a text token.
//!
//! The token carries where the issuing node listens, so `passerelle join`
//! needs nothing else. The issuing node redeems it once (it records the
//! invitation as used before it answers) and signs the admission; the
//! admission names the invitation, so the roster admits one commune per
//! invitation whatever any node does.

use crate::canonical::{DecodeError, Reader, Writer};
use crate::ids::{CommuneId, NetworkId, NodeId};
use crate::keys::{self, SIGNATURE_LEN, SecretKey, SignatureError};

use super::statement::{MAX_ADDR_BYTES, MAX_ADDRS, MAX_NAME_BYTES, Role};

const TAG: &str = "passerelle/invitation";
const VERSION: u8 = 1;
/// Prefix of invitation tokens, so a token is recognisable in a mail.
pub const TOKEN_PREFIX: &str = "passerelle-invite-";

/// Why an invitation token is not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvitationError {
    /// The text is not a token.
    #[error("not an invitation token: {0}")]
    Malformed(String),
    /// The signature does not match (the token was altered).
    #[error("the invitation's signature does not match: it was altered or not issued by commune {0}")]
    BadSignature(String),
    /// Past its expiry.
    #[error("the invitation expired at {expires_ms} (now {now_ms}); ask the coordinator for a new one")]
    Expired {
        /// Expiry.
        expires_ms: u64,
        /// Now.
        now_ms: u64,
    },
}

/// An invitation to join a network.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Invitation {
    /// The network.
    pub network: NetworkId,
    /// The coordinator commune that issued it.
    pub issuer: CommuneId,
    /// The node that redeems it.
    pub issuer_node: NodeId,
    /// Where that node listens.
    pub addrs: Vec<String>,
    /// The invited commune's name.
    pub name: String,
    /// Its country.
    pub country: String,
    /// The role it will have.
    pub role: Role,
    /// Expiry, milliseconds since the Unix epoch.
    pub expires_ms: u64,
    /// Random id: what makes it single-use.
    pub id: [u8; 16],
    /// The issuer's commune signature.
    pub signature: [u8; SIGNATURE_LEN],
}

/// The fields of an invitation before it is signed.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct InvitationDraft {
    /// The network.
    pub network: NetworkId,
    /// The node that will redeem it.
    pub issuer_node: NodeId,
    /// Where that node listens.
    pub addrs: Vec<String>,
    /// The invited commune's name.
    pub name: String,
    /// Its country.
    pub country: String,
    /// The role it will have.
    pub role: Role,
    /// Expiry.
    pub expires_ms: u64,
    /// Random id.
    pub id: [u8; 16],
}

impl Invitation {
    /// Signs a draft with the coordinator's commune key.
    pub fn issue(commune_key: &SecretKey, d: InvitationDraft) -> Self {
        let mut inv = Self {
            network: d.network,
            issuer: commune_key.commune_id(),
            issuer_node: d.issuer_node,
            addrs: d.addrs,
            name: d.name,
            country: d.country,
            role: d.role,
            expires_ms: d.expires_ms,
            id: d.id,
            signature: [0; SIGNATURE_LEN],
        };
        inv.signature = commune_key.sign(&inv.signed_bytes());
        inv
    }

    fn signed_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new(TAG, VERSION);
        w.fixed(self.network.as_bytes()).fixed(self.issuer.as_bytes()).fixed(self.issuer_node.as_bytes());
        w.u32(self.addrs.len() as u32);
        for a in &self.addrs {
            w.str(a);
        }
        let role = self.role.as_str();
        w.str(&self.name).str(&self.country).str(role).u64(self.expires_ms).fixed(&self.id);
        w.finish()
    }

    /// Checks the signature and the expiry.
    ///
    /// # Errors
    /// [`InvitationError`].
    pub fn verify(&self, now_ms: u64) -> Result<(), InvitationError> {
        keys::verify(self.issuer.as_bytes(), &self.signed_bytes(), &self.signature)
            .map_err(|_: SignatureError| InvitationError::BadSignature(self.issuer.short()))?;
        if now_ms > self.expires_ms {
            return Err(InvitationError::Expired { expires_ms: self.expires_ms, now_ms });
        }
        Ok(())
    }

    /// Encodes the invitation (signed bytes, then signature).
    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = self.signed_bytes();
        bytes.extend_from_slice(&self.signature);
        bytes
    }

    /// Decodes an invitation; does not verify it.
    ///
    /// # Errors
    /// [`DecodeError`].
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let (mut r, _) = Reader::open(bytes, TAG, "invitation", VERSION)?;
        let network = NetworkId::from_bytes(r.fixed("network")?);
        let issuer = CommuneId::from_bytes(r.fixed("issuer")?);
        let issuer_node = NodeId::from_bytes(r.fixed("issuer node")?);
        let count = r.u32("address count")? as usize;
        if count > MAX_ADDRS {
            return Err(DecodeError::TooLarge { field: "addresses", len: count, max: MAX_ADDRS });
        }
        let mut addrs = Vec::with_capacity(count);
        for _ in 0..count {
            addrs.push(r.str("address", MAX_ADDR_BYTES)?.to_owned());
        }
        let name = r.str("name", MAX_NAME_BYTES)?.to_owned();
        let country = r.str("country", 8)?.to_owned();
        let role =
            r.str("role", 16)?.parse::<Role>().map_err(|reason| DecodeError::Invalid { field: "role", reason })?;
        let expires_ms = r.u64("expires")?;
        let id = r.fixed("id")?;
        let signature = r.fixed("signature")?;
        r.end()?;
        Ok(Self { network, issuer, issuer_node, addrs, name, country, role, expires_ms, id, signature })
    }

    /// The invitation as a token to hand over (prefix, then hex).
    pub fn to_token(&self) -> String {
        format!("{TOKEN_PREFIX}{}", hex::encode(self.encode()))
    }

    /// Reads a token (surrounding white space is ignored); does not verify it.
    ///
    /// # Errors
    /// [`InvitationError::Malformed`].
    pub fn from_token(token: &str) -> Result<Self, InvitationError> {
        let token = token.trim();
        let hex_part = token
            .strip_prefix(TOKEN_PREFIX)
            .ok_or_else(|| InvitationError::Malformed(format!("it does not start with {TOKEN_PREFIX:?}")))?;
        let bytes = hex::decode(hex_part).map_err(|e| InvitationError::Malformed(format!("bad hexadecimal: {e}")))?;
        Self::decode(&bytes).map_err(|e| InvitationError::Malformed(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Invitation {
        let coordinator = SecretKey::from_seed([1; 32]);
        Invitation::issue(
            &coordinator,
            InvitationDraft {
                network: NetworkId::from_bytes([3; 32]),
                issuer_node: SecretKey::from_seed([2; 32]).node_id(),
                addrs: vec!["/ip4/127.0.0.1/tcp/7421".into()],
                name: "Tala-n-Asif".into(),
                country: "MA".into(),
                role: Role::Commune,
                expires_ms: 10_000,
                id: [7; 16],
            },
        )
    }

    #[test]
    fn tokens_round_trip_and_verify_until_expiry() {
        let inv = sample();
        let back = Invitation::from_token(&format!("  {}\n", inv.to_token())).unwrap();
        assert_eq!(back, inv);
        back.verify(9_999).unwrap();
        assert!(matches!(back.verify(10_001), Err(InvitationError::Expired { .. })));
    }

    #[test]
    fn tampered_tokens_are_refused() {
        let bytes = sample().encode();
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x01;
            let ok = Invitation::decode(&bad).map(|inv| inv.verify(0).is_ok()).unwrap_or(false);
            assert!(!ok, "flipping byte {i} went unnoticed");
        }
        assert!(matches!(Invitation::from_token("hello"), Err(InvitationError::Malformed(_))));
        assert!(matches!(Invitation::from_token("passerelle-invite-zz"), Err(InvitationError::Malformed(_))));
    }
}
