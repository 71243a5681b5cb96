//! A network emulator for loopback links: a TCP proxy that adds latency,
//! caps bandwidth, cuts connections (on demand or on a schedule) and
//! partitions, counting every byte. These machines have no netem; tests,
//! benchmarks and `passerelle demo --poor-link` put one of these between two
//! nodes (the dialling node is given the proxy's address instead of the
//! peer's).
//!
//! Latency is a pipeline delay per direction (a byte read at `t` is written
//! at `t + latency`), bandwidth a serialisation delay on the writing side
//! (a token bucket per direction), so a 64 kbit/s link with 300 ms each way
//! behaves like one: throughput is capped and round trips take 600 ms plus
//! the queue.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// How a link behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LinkShape {
    /// Added one-way delay, each direction.
    pub latency: Duration,
    /// Bytes per second, each direction; `None` for no cap.
    pub bytes_per_s: Option<u64>,
}

impl LinkShape {
    /// A link of `kbit_s` kilobits per second with a round trip of `rtt`.
    pub fn poor(kbit_s: u64, rtt: Duration) -> Self {
        Self { latency: rtt / 2, bytes_per_s: Some(kbit_s * 1000 / 8) }
    }
}

/// Shared state of one emulated link (counters are read by tests and benchmarks).
#[derive(Debug, Default)]
struct State {
    /// Bytes from the dialling side to the target.
    up: AtomicU64,
    /// Bytes from the target back.
    down: AtomicU64,
    /// Connections accepted.
    connections: AtomicU64,
    /// Cuts made (on demand or scheduled).
    cuts: AtomicU64,
    /// While set, connections are refused and existing ones are closed.
    partitioned: AtomicBool,
}

/// A running emulated link towards one target address.
#[derive(Debug)]
pub struct Link {
    addr: SocketAddr,
    state: Arc<State>,
    shape: watch::Sender<LinkShape>,
    /// Bumped to close every open connection.
    generation: watch::Sender<u64>,
    tasks: Vec<JoinHandle<()>>,
}

/// Largest read at once: small enough that a slow link is shaped smoothly.
const CHUNK: usize = 4096;
/// Chunks buffered between the reading and the writing side of a direction.
const IN_FLIGHT_CHUNKS: usize = 1024;

impl Link {
    /// Starts a proxy on an ephemeral loopback port forwarding to `target`.
    ///
    /// # Errors
    /// When no loopback port can be bound.
    pub async fn start(target: SocketAddr, shape: LinkShape) -> std::io::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State::default());
        let (shape_tx, shape_rx) = watch::channel(shape);
        let (gen_tx, gen_rx) = watch::channel(0u64);
        let accept = tokio::spawn(accept_loop(listener, target, state.clone(), shape_rx, gen_rx));
        Ok(Self { addr, state, shape: shape_tx, generation: gen_tx, tasks: vec![accept] })
    }

    /// Where to dial instead of the target.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The proxy's address as a libp2p TCP multiaddr.
    pub fn multiaddr(&self) -> String {
        format!("/ip4/127.0.0.1/tcp/{}", self.addr.port())
    }

    /// Bytes forwarded so far: (dialling side → target, target → dialling side).
    pub fn bytes(&self) -> (u64, u64) {
        (self.state.up.load(Ordering::Relaxed), self.state.down.load(Ordering::Relaxed))
    }

    /// Total bytes forwarded, both ways.
    pub fn total_bytes(&self) -> u64 {
        let (up, down) = self.bytes();
        up + down
    }

    /// Sets the counters back to zero.
    pub fn reset_counters(&self) {
        self.state.up.store(0, Ordering::Relaxed);
        self.state.down.store(0, Ordering::Relaxed);
    }

    /// Connections accepted and cuts made so far.
    pub fn connections_and_cuts(&self) -> (u64, u64) {
        (self.state.connections.load(Ordering::Relaxed), self.state.cuts.load(Ordering::Relaxed))
    }

    /// Changes latency and bandwidth (for connections open now and later).
    pub fn reshape(&self, shape: LinkShape) {
        let _ = self.shape.send(shape);
    }

    /// Closes every open connection now (the nodes will redial).
    pub fn cut(&self) {
        self.state.cuts.fetch_add(1, Ordering::Relaxed);
        self.generation.send_modify(|g| *g += 1);
    }

    /// Starts or ends a partition: while on, open connections are closed
    /// and new ones refused.
    pub fn partition(&self, on: bool) {
        self.state.partitioned.store(on, Ordering::Relaxed);
        if on {
            self.cut();
        }
    }

    /// Whether the link is partitioned.
    pub fn is_partitioned(&self) -> bool {
        self.state.partitioned.load(Ordering::Relaxed)
    }

    /// Cuts every connection every `every`, for as long as the link lives.
    pub fn cut_every(&mut self, every: Duration) {
        let generation = self.generation.clone();
        let state = self.state.clone();
        self.tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval_at(Instant::now() + every, every);
            loop {
                tick.tick().await;
                state.cuts.fetch_add(1, Ordering::Relaxed);
                generation.send_modify(|g| *g += 1);
            }
        }));
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        // Open connections end with the generation channel.
        self.generation.send_modify(|g| *g += 1);
    }
}

async fn accept_loop(
    listener: TcpListener,
    target: SocketAddr,
    state: Arc<State>,
    shape: watch::Receiver<LinkShape>,
    generation: watch::Receiver<u64>,
) {
    loop {
        let Ok((inbound, _)) = listener.accept().await else { continue };
        if state.partitioned.load(Ordering::Relaxed) {
            drop(inbound);
            continue;
        }
        state.connections.fetch_add(1, Ordering::Relaxed);
        let (state, shape, generation) = (state.clone(), shape.clone(), generation.clone());
        tokio::spawn(async move {
            let Ok(outbound) = TcpStream::connect(target).await else { return };
            let _ = inbound.set_nodelay(true);
            let _ = outbound.set_nodelay(true);
            let (ir, iw) = inbound.into_split();
            let (or, ow) = outbound.into_split();
            let born = *generation.borrow();
            let up = tokio::spawn(direction(ir, ow, state.clone(), true, shape.clone()));
            let down = tokio::spawn(direction(or, iw, state, false, shape));
            let (up_abort, down_abort) = (up.abort_handle(), down.abort_handle());
            let mut generation = generation;
            // Until a cut (or the link is dropped), or both directions end.
            let cut = async {
                while *generation.borrow() == born {
                    if generation.changed().await.is_err() {
                        break;
                    }
                }
            };
            tokio::select! {
                () = cut => {
                    // Both sockets close at once; whatever is in flight is lost.
                    up_abort.abort();
                    down_abort.abort();
                }
                _ = async { let _ = tokio::join!(up, down); } => {}
            }
        });
    }
}

/// One direction: read chunks, deliver each after the latency, paced by the bandwidth.
async fn direction(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    state: Arc<State>,
    up: bool,
    shape: watch::Receiver<LinkShape>,
) {
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(IN_FLIGHT_CHUNKS);
    let reader_shape = shape.clone();
    let reader = async move {
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let due = Instant::now() + reader_shape.borrow().latency;
            if tx.send((due, buf[..n].to_vec())).await.is_err() {
                return;
            }
        }
    };
    let writer = async move {
        // When the link is next free to send (the bandwidth's clock).
        let mut free_at = Instant::now();
        while let Some((due, bytes)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            let shape = *shape.borrow();
            if let Some(rate) = shape.bytes_per_s.filter(|r| *r > 0) {
                let start = free_at.max(Instant::now());
                free_at = start + Duration::from_secs_f64(bytes.len() as f64 / rate as f64);
                tokio::time::sleep_until(free_at).await;
            }
            if to.write_all(&bytes).await.is_err() {
                return;
            }
            let counter = if up { &state.up } else { &state.down };
            counter.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else { return };
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn latency_bandwidth_cuts_and_partitions_are_applied() {
        let target = echo_server().await;
        let link =
            Link::start(target, LinkShape { latency: Duration::from_millis(100), bytes_per_s: None }).await.unwrap();
        // A round trip takes at least twice the latency.
        let mut s = TcpStream::connect(link.addr()).await.unwrap();
        let start = Instant::now();
        s.write_all(b"ping").await.unwrap();
        let mut back = [0u8; 4];
        s.read_exact(&mut back).await.unwrap();
        assert!(start.elapsed() >= Duration::from_millis(200), "{:?}", start.elapsed());
        assert_eq!(link.bytes(), (4, 4));

        // 20 kB/s: 10 kB take half a second each way (the two directions overlap).
        link.reshape(LinkShape { latency: Duration::ZERO, bytes_per_s: Some(20_000) });
        let start = Instant::now();
        s.write_all(&[7u8; 10_000]).await.unwrap();
        let mut back = vec![0u8; 10_000];
        s.read_exact(&mut back).await.unwrap();
        assert!(start.elapsed() >= Duration::from_millis(480), "{:?}", start.elapsed());

        // A cut closes the connection; a partition refuses new ones.
        link.cut();
        let mut one = [0u8; 1];
        assert!(matches!(s.read(&mut one).await, Ok(0) | Err(_)));
        link.partition(true);
        let mut refused = TcpStream::connect(link.addr()).await.unwrap();
        assert!(matches!(refused.read(&mut one).await, Ok(0) | Err(_)));
        link.partition(false);
        let mut again = TcpStream::connect(link.addr()).await.unwrap();
        again.write_all(b"x").await.unwrap();
        again.read_exact(&mut one).await.unwrap();
        assert_eq!(link.connections_and_cuts(), (2, 2));
    }
}
