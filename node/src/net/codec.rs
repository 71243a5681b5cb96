//! Framing of `/passerelle/sync/6` on libp2p request-response streams: a
//! request is one frame (u32 BE length, then the encoded message), bounded
//! before anything is read; the response is one small encoded reply.

use std::io;
use std::sync::Arc;

use futures::prelude::*;
use libp2p::StreamProtocol;
use passerelle_protocol::sync::message::{MAX_FRAME_BYTES, SyncReply};

/// Largest reply accepted.
const MAX_REPLY_BYTES: usize = 2048;

/// The codec: raw request frames (decoded by the event loop, which can
/// penalise the peer) and decoded replies. Frames are shared (`Arc`) so the
/// copy kept for a resend after `Busy` costs nothing.
#[derive(Debug, Clone, Default)]
pub struct SyncCodec;

async fn read_frame<T: AsyncRead + Unpin + Send>(io: &mut T, max: usize) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes over the limit of {max}"),
        ));
    }
    let mut buf = vec![0u8; len];
    io.read_exact(&mut buf).await?;
    Ok(buf)
}

async fn write_frame<T: AsyncWrite + Unpin + Send>(io: &mut T, bytes: &[u8]) -> io::Result<()> {
    let len = u32::try_from(bytes.len()).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "frame too large"))?;
    io.write_all(&len.to_be_bytes()).await?;
    io.write_all(bytes).await?;
    io.close().await
}

impl libp2p::request_response::Codec for SyncCodec {
    type Protocol = StreamProtocol;
    type Request = Arc<[u8]>;
    type Response = SyncReply;

    async fn read_request<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<Arc<[u8]>> {
        Ok(read_frame(io, MAX_FRAME_BYTES).await?.into())
    }

    async fn read_response<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<SyncReply> {
        let bytes = read_frame(io, MAX_REPLY_BYTES).await?;
        SyncReply::decode(&bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))
    }

    async fn write_request<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Arc<[u8]>,
    ) -> io::Result<()> {
        write_frame(io, &req).await
    }

    async fn write_response<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: SyncReply,
    ) -> io::Result<()> {
        write_frame(io, &res.encode()).await
    }
}
