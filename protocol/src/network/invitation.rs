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

use super::statement::{MAX_NAME_BYTES, Role, read_addrs, write_addrs};

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

/// What an invitation says, before it is signed.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct InvitationTerms {
    /// The network.
    pub network: NetworkId,
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
}

/// An invitation to join a network: its terms, signed by a coordinator.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Invitation {
    /// What it says.
    pub terms: InvitationTerms,
    /// The coordinator commune that issued it.
    pub issuer: CommuneId,
    /// The issuer's commune signature.
    pub signature: [u8; SIGNATURE_LEN],
}

impl std::ops::Deref for Invitation {
    type Target = InvitationTerms;

    fn deref(&self) -> &InvitationTerms {
        &self.terms
    }
}

impl Invitation {
    /// Signs the terms with the coordinator's commune key.
    pub fn issue(commune_key: &SecretKey, terms: InvitationTerms) -> Self {
        let issuer = commune_key.commune_id();
        let signature = commune_key.sign(&signed_bytes(&terms, &issuer));
        Self { terms, issuer, signature }
    }

    fn signed_bytes(&self) -> Vec<u8> {
        signed_bytes(&self.terms, &self.issuer)
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
        let addrs = read_addrs(&mut r)?;
        let name = r.str("name", MAX_NAME_BYTES)?.to_owned();
        let country = r.str("country", 8)?.to_owned();
        let role =
            r.str("role", 16)?.parse::<Role>().map_err(|reason| DecodeError::Invalid { field: "role", reason })?;
        let expires_ms = r.u64("expires")?;
        let id = r.fixed("id")?;
        let signature = r.fixed("signature")?;
        r.end()?;
        let terms = InvitationTerms { network, issuer_node, addrs, name, country, role, expires_ms, id };
        Ok(Self { terms, issuer, signature })
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

fn signed_bytes(t: &InvitationTerms, issuer: &CommuneId) -> Vec<u8> {
    let mut w = Writer::new(TAG, VERSION);
    w.fixed(t.network.as_bytes()).fixed(issuer.as_bytes()).fixed(t.issuer_node.as_bytes());
    write_addrs(&mut w, &t.addrs);
    w.str(&t.name).str(&t.country).str(t.role.as_str()).u64(t.expires_ms).fixed(&t.id);
    w.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Invitation {
        let coordinator = SecretKey::from_seed([1; 32]);
        Invitation::issue(
            &coordinator,
            InvitationTerms {
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
