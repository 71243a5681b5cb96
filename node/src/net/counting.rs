//! Bytes as the network carries them: TCP connections wrapped so that
//! every byte read or written (Noise, Yamux, identify, ping and sync
//! alike) is counted, for `GET /metrics` and the scale benchmark. QUIC and
//! relayed connections are not counted.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use futures::{AsyncRead, AsyncWrite};

/// Bytes read and written on this node's TCP connections since it started.
#[derive(Debug, Default)]
pub struct TransportBytes {
    /// Bytes received.
    pub read: AtomicU64,
    /// Bytes sent.
    pub written: AtomicU64,
}

impl TransportBytes {
    /// (received, sent) now.
    pub fn totals(&self) -> (u64, u64) {
        (self.read.load(Ordering::Relaxed), self.written.load(Ordering::Relaxed))
    }
}

/// A connection whose bytes are counted.
#[derive(Debug)]
pub struct Counted<S> {
    inner: S,
    bytes: Arc<TransportBytes>,
}

impl<S> Counted<S> {
    /// Wraps `inner`, counting into `bytes`.
    pub fn new(inner: S, bytes: Arc<TransportBytes>) -> Self {
        Self { inner, bytes }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(n)) = &poll {
            self.bytes.read.fetch_add(*n as u64, Ordering::Relaxed);
        }
        poll
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &poll {
            self.bytes.written.fetch_add(*n as u64, Ordering::Relaxed);
        }
        poll
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}
