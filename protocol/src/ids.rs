//! Identifiers: one newtype per kind of id, each with Display, FromStr, serde
//! (as lowercase hex) and a short form for logs.
//!
//! Commune and node ids are ed25519 public keys, so holding an id is enough to
//! check a signature; document ids are hashes of the document's header, so a
//! document id proves which header it names.

use std::fmt;
use std::str::FromStr;

/// Why a string is not a valid id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {input:?}: expected {len} hexadecimal characters")]
pub struct IdParseError {
    what: &'static str,
    input: String,
    len: usize,
}

macro_rules! hex_id {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name([u8; 32]);

        impl $name {
            /// Wraps raw bytes.
            pub const fn from_bytes(bytes: [u8; 32]) -> Self {
                Self(bytes)
            }

            /// The raw bytes.
            pub const fn as_bytes(&self) -> &[u8; 32] {
                &self.0
            }

            /// The first 8 hex characters, for logs and narrow tables.
            pub fn short(&self) -> String {
                hex::encode(&self.0[..4])
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&hex::encode(self.0))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.short())
            }
        }

        impl FromStr for $name {
            type Err = IdParseError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                let err = || IdParseError { what: $what, input: s.to_owned(), len: 64 };
                if s.len() != 64 {
                    return Err(err());
                }
                let mut out = [0u8; 32];
                hex::decode_to_slice(s, &mut out).map_err(|_| err())?;
                Ok(Self(out))
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

hex_id!(
    /// A commune's long-term identity: its ed25519 public key.
    CommuneId,
    "commune id"
);
hex_id!(
    /// A node's identity: the ed25519 public key the node signs changes with
    /// (and its libp2p identity). Certified by a commune.
    NodeId,
    "node id"
);
hex_id!(
    /// A document's id: the SHA-256 of its canonical unsigned header, so the
    /// id certifies the header (kind, owner, writers, scope, creation time).
    DocId,
    "document id"
);
hex_id!(
    /// A network's id: derived from its founding statement (the founder's
    /// commune key, the network's name and founding time), so anyone can check
    /// which key founded the network an id names.
    NetworkId,
    "network id"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_round_trips_through_text_and_json() {
        let id = DocId::from_bytes([0xab; 32]);
        let text = id.to_string();
        assert_eq!(text.len(), 64);
        assert_eq!(text.parse::<DocId>().unwrap(), id);
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(serde_json::from_str::<DocId>(&json).unwrap(), id);
        assert_eq!(id.short(), "abababab");
    }

    #[test]
    fn bad_ids_are_refused_with_the_reason() {
        let err = "xyz".parse::<CommuneId>().unwrap_err();
        assert!(err.to_string().contains("commune id"));
        assert!("zz".repeat(32).parse::<NodeId>().is_err());
    }
}
