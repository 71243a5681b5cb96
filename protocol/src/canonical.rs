//! Canonical bytes: the one encoding that signatures and hashes are computed
//! over.
//!
//! Every signed structure starts with a domain tag (so a signature made for
//! one purpose can never be replayed as another) and a version byte, followed
//! by its fields in a fixed order: fixed-size arrays raw, integers big-endian,
//! variable-length bytes and strings behind a `u32` length. The reader enforces
//! the caller's size limits before it allocates.

/// Why canonical bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The input ended in the middle of a field.
    #[error("truncated input: {field} needs {needed} more bytes")]
    Truncated {
        /// The field being read.
        field: &'static str,
        /// How many bytes were missing.
        needed: usize,
    },
    /// The domain tag is not the one expected for this structure.
    #[error("wrong domain tag: expected {expected:?}")]
    WrongTag {
        /// The tag that was expected.
        expected: &'static str,
    },
    /// The version byte is not one this release understands.
    #[error("unsupported version {found} of {what} (this release reads up to {supported})")]
    UnsupportedVersion {
        /// The structure.
        what: &'static str,
        /// Version found.
        found: u8,
        /// Highest version supported.
        supported: u8,
    },
    /// A length field announces more than the limit allows.
    #[error("{field} is {len} bytes, over the limit of {max}")]
    TooLarge {
        /// The field.
        field: &'static str,
        /// Announced length.
        len: usize,
        /// Limit.
        max: usize,
    },
    /// A string field is not UTF-8.
    #[error("{field} is not valid UTF-8")]
    NotUtf8 {
        /// The field.
        field: &'static str,
    },
    /// Bytes remain after the last field.
    #[error("{0} unexpected bytes after the end")]
    TrailingBytes(usize),
    /// A field holds a value outside its domain.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// Why.
        reason: String,
    },
}

/// Builds canonical bytes.
#[derive(Debug, Default)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    /// Starts a structure with its domain tag and version.
    pub fn new(tag: &str, version: u8) -> Self {
        let mut w = Self { buf: Vec::with_capacity(128) };
        w.bytes(tag.as_bytes());
        w.buf.push(version);
        w
    }

    /// Appends a fixed-size array as is.
    pub fn fixed(&mut self, bytes: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(bytes);
        self
    }

    /// Appends a byte.
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }

    /// Appends a big-endian `u16`.
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// Appends a big-endian `u32`.
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// Appends a big-endian `u64`.
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// Appends length-prefixed bytes.
    ///
    /// # Panics
    /// If `bytes` is 4 GiB or more: every caller bounds its fields far below.
    pub fn bytes(&mut self, bytes: &[u8]) -> &mut Self {
        let len = u32::try_from(bytes.len()).expect("canonical fields are bounded far below 4 GiB");
        self.u32(len);
        self.buf.extend_from_slice(bytes);
        self
    }

    /// Appends a length-prefixed UTF-8 string.
    pub fn str(&mut self, s: &str) -> &mut Self {
        self.bytes(s.as_bytes())
    }

    /// The bytes written so far.
    pub fn finish(self) -> Vec<u8> {
        self.buf
    }
}

/// Reads canonical bytes written by [`Writer`].
#[derive(Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    /// Checks the domain tag and version and positions after them.
    /// Returns the reader and the version found (at most `max_version`).
    ///
    /// # Errors
    /// [`DecodeError::WrongTag`] or [`DecodeError::UnsupportedVersion`].
    pub fn open(
        buf: &'a [u8],
        tag: &'static str,
        what: &'static str,
        max_version: u8,
    ) -> Result<(Self, u8), DecodeError> {
        let mut r = Self { buf };
        let found = r.bytes("domain tag", 64).map_err(|_| DecodeError::WrongTag { expected: tag })?;
        if found != tag.as_bytes() {
            return Err(DecodeError::WrongTag { expected: tag });
        }
        let version = r.u8("version")?;
        if version == 0 || version > max_version {
            return Err(DecodeError::UnsupportedVersion { what, found: version, supported: max_version });
        }
        Ok((r, version))
    }

    /// Starts reading raw bytes with no tag (for nested structures).
    pub fn raw(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    fn take(&mut self, field: &'static str, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::Truncated { field, needed: n - self.buf.len() });
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    /// Reads a fixed-size array.
    ///
    /// # Errors
    /// [`DecodeError::Truncated`].
    pub fn fixed<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(field, N)?);
        Ok(out)
    }

    /// Reads a byte.
    ///
    /// # Errors
    /// [`DecodeError::Truncated`].
    pub fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        Ok(self.take(field, 1)?[0])
    }

    /// Reads a big-endian `u16`.
    ///
    /// # Errors
    /// [`DecodeError::Truncated`].
    pub fn u16(&mut self, field: &'static str) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.fixed(field)?))
    }

    /// Reads a big-endian `u32`.
    ///
    /// # Errors
    /// [`DecodeError::Truncated`].
    pub fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.fixed(field)?))
    }

    /// Reads a big-endian `u64`.
    ///
    /// # Errors
    /// [`DecodeError::Truncated`].
    pub fn u64(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.fixed(field)?))
    }

    /// Reads length-prefixed bytes of at most `max` bytes.
    ///
    /// # Errors
    /// [`DecodeError::TooLarge`] before any allocation, or [`DecodeError::Truncated`].
    pub fn bytes(&mut self, field: &'static str, max: usize) -> Result<&'a [u8], DecodeError> {
        let len = self.u32(field)? as usize;
        if len > max {
            return Err(DecodeError::TooLarge { field, len, max });
        }
        self.take(field, len)
    }

    /// Reads a length-prefixed UTF-8 string of at most `max` bytes.
    ///
    /// # Errors
    /// As [`Reader::bytes`], or [`DecodeError::NotUtf8`].
    pub fn str(&mut self, field: &'static str, max: usize) -> Result<&'a str, DecodeError> {
        std::str::from_utf8(self.bytes(field, max)?).map_err(|_| DecodeError::NotUtf8 { field })
    }

    /// Takes every byte not read yet.
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.buf.len()
    }

    /// Checks that everything was read.
    ///
    /// # Errors
    /// [`DecodeError::TrailingBytes`].
    pub fn end(self) -> Result<(), DecodeError> {
        if self.buf.is_empty() { Ok(()) } else { Err(DecodeError::TrailingBytes(self.buf.len())) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writer_and_reader_agree() {
        let mut w = Writer::new("passerelle/test", 1);
        w.u8(7).u32(9).u64(11).str("été").fixed(&[1, 2, 3]);
        let bytes = w.finish();
        let (mut r, v) = Reader::open(&bytes, "passerelle/test", "test", 1).unwrap();
        assert_eq!(v, 1);
        assert_eq!(r.u8("a").unwrap(), 7);
        assert_eq!(r.u32("b").unwrap(), 9);
        assert_eq!(r.u64("c").unwrap(), 11);
        assert_eq!(r.str("d", 16).unwrap(), "été");
        assert_eq!(r.fixed::<3>("e").unwrap(), [1, 2, 3]);
        r.end().unwrap();
    }

    #[test]
    fn limits_apply_before_allocation() {
        let mut w = Writer::new("t", 1);
        w.bytes(&[0u8; 100]);
        let bytes = w.finish();
        let (mut r, _) = Reader::open(&bytes, "t", "test", 1).unwrap();
        assert!(matches!(r.bytes("x", 10), Err(DecodeError::TooLarge { len: 100, max: 10, .. })));
    }

    #[test]
    fn wrong_tag_and_future_versions_are_refused() {
        let bytes = Writer::new("a", 2).finish();
        assert!(matches!(Reader::open(&bytes, "b", "x", 2), Err(DecodeError::WrongTag { .. })));
        assert!(matches!(Reader::open(&bytes, "a", "x", 1), Err(DecodeError::UnsupportedVersion { found: 2, .. })));
    }
}
