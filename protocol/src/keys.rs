//! Ed25519 keys: signing with a secret key, verifying against an id.
//!
//! The protocol never generates keys itself (it has no randomness): the node
//! draws 32 random bytes and hands them to [`SecretKey::from_seed`].

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};

use crate::ids::{CommuneId, NodeId};

/// Length of a signature in bytes.
pub const SIGNATURE_LEN: usize = 64;

/// A secret ed25519 key: a commune's long-term key or a node's key.
/// Its `Debug` never shows the secret.
#[derive(Clone)]
pub struct SecretKey(SigningKey);

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretKey(public {})", hex::encode(&self.public()[..4]))
    }
}

impl SecretKey {
    /// Derives the key from 32 secret random bytes.
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self(SigningKey::from_bytes(&seed))
    }

    /// The 32 secret bytes, for writing to a key file.
    pub fn to_seed(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// The public key bytes.
    pub fn public(&self) -> [u8; 32] {
        self.0.verifying_key().to_bytes()
    }

    /// This key seen as a commune's identity.
    pub fn commune_id(&self) -> CommuneId {
        CommuneId::from_bytes(self.public())
    }

    /// This key seen as a node's identity.
    pub fn node_id(&self) -> NodeId {
        NodeId::from_bytes(self.public())
    }

    /// Signs canonical bytes.
    pub fn sign(&self, msg: &[u8]) -> [u8; SIGNATURE_LEN] {
        self.0.sign(msg).to_bytes()
    }
}

/// Why a signature does not hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The public key bytes are not a valid curve point.
    #[error("the public key is not a valid ed25519 key")]
    BadKey,
    /// The signature does not match the key and message.
    #[error("the signature does not match")]
    Mismatch,
}

/// Verifies `sig` over `msg` by the key `public` (strict verification: no
/// malleable or small-order signatures).
///
/// # Errors
/// [`SignatureError`].
pub fn verify(public: &[u8; 32], msg: &[u8], sig: &[u8; SIGNATURE_LEN]) -> Result<(), SignatureError> {
    let key = VerifyingKey::from_bytes(public).map_err(|_| SignatureError::BadKey)?;
    key.verify_strict(msg, &Signature::from_bytes(sig)).map_err(|_| SignatureError::Mismatch)
}

/// Verifies many signatures at once, about twice as fast per signature as
/// one at a time. Returns `Ok` only when every signature holds; on failure the
/// caller re-checks one by one to find which failed. As strict as
/// [`verify`]: a small-order (weak) key or a small-order `R` fails the
/// batch, so such a signature is judged alone and refused.
///
/// # Errors
/// [`SignatureError::Mismatch`] if any signature fails, [`SignatureError::BadKey`]
/// if any key is invalid.
pub fn verify_batch(items: &[(&[u8; 32], &[u8], &[u8; SIGNATURE_LEN])]) -> Result<(), SignatureError> {
    let mut keys = Vec::with_capacity(items.len());
    let mut msgs = Vec::with_capacity(items.len());
    let mut sigs = Vec::with_capacity(items.len());
    for (public, msg, sig) in items {
        let key = VerifyingKey::from_bytes(public).map_err(|_| SignatureError::BadKey)?;
        let r = curve25519_dalek::edwards::CompressedEdwardsY(sig[..32].try_into().expect("32 of 64 bytes"));
        if key.is_weak() || r.decompress().is_none_or(|p| p.is_small_order()) {
            return Err(SignatureError::Mismatch);
        }
        keys.push(key);
        msgs.push(*msg);
        sigs.push(Signature::from_bytes(sig));
    }
    ed25519_dalek::verify_batch(&msgs, &sigs, &keys).map_err(|_| SignatureError::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_and_tampering_is_detected() {
        let key = SecretKey::from_seed([7; 32]);
        let sig = key.sign(b"bonjour");
        verify(&key.public(), b"bonjour", &sig).unwrap();
        assert_eq!(verify(&key.public(), b"bonjouR", &sig), Err(SignatureError::Mismatch));
        let other = SecretKey::from_seed([8; 32]);
        assert_eq!(verify(&other.public(), b"bonjour", &sig), Err(SignatureError::Mismatch));
    }

    #[test]
    fn batch_verification_agrees_with_single() {
        let keys: Vec<_> = (0..5u8).map(|i| SecretKey::from_seed([i; 32])).collect();
        let pubs: Vec<_> = keys.iter().map(SecretKey::public).collect();
        let msgs: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 10]).collect();
        let sigs: Vec<_> = keys.iter().zip(&msgs).map(|(k, m)| k.sign(m)).collect();
        let items: Vec<_> = (0..5).map(|i| (&pubs[i], msgs[i].as_slice(), &sigs[i])).collect();
        verify_batch(&items).unwrap();
        let mut bad = sigs.clone();
        bad[3][0] ^= 1;
        let items: Vec<_> = (0..5).map(|i| (&pubs[i], msgs[i].as_slice(), &bad[i])).collect();
        assert!(verify_batch(&items).is_err());
    }

    #[test]
    fn batches_are_as_strict_as_single_checks() {
        // The identity point as key (a small-order, "weak" key) with R the
        // identity and s = 0 satisfies the cofactored batch equation for any
        // message; strict verification refuses it, and so must the batch.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        let mut sig = [0u8; SIGNATURE_LEN];
        sig[0] = 1;
        assert!(verify(&identity, b"anything", &sig).is_err());
        assert!(verify_batch(&[(&identity, b"anything".as_slice(), &sig)]).is_err());
        // A real key with a small-order R: refused both ways too.
        let key = SecretKey::from_seed([3; 32]);
        assert!(verify(&key.public(), b"anything", &sig).is_err());
        assert!(verify_batch(&[(&key.public(), b"anything".as_slice(), &sig)]).is_err());
    }
}
