//! The certificate book: which commune vouches for which node key.
//!
//! Changes are signed by node keys; the book turns a node key into the commune
//! it speaks for, which is what writer checks are made against. The node fills
//! the book from its store; the protocol only reads it.

use std::collections::HashMap;

use crate::certificate::NodeCertificate;
use crate::ids::{CommuneId, NodeId};
use crate::keys::SignatureError;

/// Known, verified node certificates.
#[derive(Debug, Default, Clone)]
pub struct CertificateBook {
    by_node: HashMap<NodeId, NodeCertificate>,
}

impl CertificateBook {
    /// An empty book.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a certificate after checking its signature. Returns whether it
    /// was new.
    ///
    /// # Errors
    /// [`SignatureError`] if the commune did not sign it; the book is unchanged.
    pub fn insert(&mut self, cert: NodeCertificate) -> Result<bool, SignatureError> {
        cert.verify()?;
        // A node key is certified by exactly one commune: the first
        // certificate seen wins, so a second commune cannot claim it.
        if self.by_node.contains_key(&cert.node) {
            return Ok(false);
        }
        self.by_node.insert(cert.node, cert);
        Ok(true)
    }

    /// The commune a node key speaks for.
    pub fn commune_of(&self, node: &NodeId) -> Option<CommuneId> {
        self.by_node.get(node).map(|c| c.commune)
    }

    /// The certificate of a node key.
    pub fn get(&self, node: &NodeId) -> Option<&NodeCertificate> {
        self.by_node.get(node)
    }

    /// Every certificate, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &NodeCertificate> {
        self.by_node.values()
    }

    /// Number of certified node keys.
    pub fn len(&self) -> usize {
        self.by_node.len()
    }

    /// Whether the book is empty.
    pub fn is_empty(&self) -> bool {
        self.by_node.is_empty()
    }
}
