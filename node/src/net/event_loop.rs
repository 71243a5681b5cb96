//! The swarm owner task.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use libp2p::Transport as _;
use libp2p::core::ConnectedPoint;
use libp2p::core::transport::ListenerId;
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, Message, OutboundRequestId};
use libp2p::swarm::SwarmEvent;
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::{Multiaddr, PeerId, Swarm, autonat, dcutr, mdns, noise, relay, tcp, yamux};
use passerelle_protocol::ids::NodeId;
use passerelle_protocol::sync::message::{SyncMessage, SyncReply};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::behaviour::{Behaviour, BehaviourEvent, Options};
use super::counting::{Counted, TransportBytes};
use super::guard::{GuardCounts, MAX_QUEUED_BYTES, MAX_TIMEOUTS_IN_A_ROW, PerIp};
use super::identity::{keypair, node_id, peer_id};
use super::{
    IDLE_CONNECTION_TIMEOUT, MAX_REDIAL_DELAY, MIN_REDIAL_DELAY, NET_INBOX, NET_OUTBOX, NetCommand, NetError,
    NetHandle, NetInfo, NetOut, SEND_WINDOW,
};
use crate::engine::{EngineHandle, NetEvent};
use crate::identity::Identity;
use crate::store::PeerRecord;

#[derive(Debug)]
struct Known {
    node: NodeId,
    addrs: Vec<Multiaddr>,
    /// Added by an operator: redialled whenever disconnected.
    configured: bool,
    attempts: u32,
    next_dial: Instant,
    /// When the current connection came up.
    connected_at: Option<Instant>,
}

impl Known {
    fn new(node: NodeId, addrs: Vec<Multiaddr>, configured: bool) -> Self {
        Self { node, addrs, configured, attempts: 0, next_dial: Instant::now(), connected_at: None }
    }
}

/// A request on its way: the frame (kept to send again if the peer is
/// busy), when it left, and how much had been delivered then.
#[derive(Debug)]
struct InFlight {
    kind: &'static str,
    /// The engine's tag (frames of a transfer), reported on delivery or loss.
    tag: Option<u64>,
    bytes: Arc<[u8]>,
    sent_at: Instant,
    delivered_at_send: u64,
    /// When the last acknowledgement before this frame left arrived: the
    /// sample interval starts there (or at the send, if later).
    delivered_time_at_send: Option<Instant>,
    /// Sent with nothing else in flight or queued: its delivery time says
    /// more about the round trip than about the link's rate.
    app_limited: bool,
}

/// A message waiting for room in a peer's window.
#[derive(Debug)]
struct Queued {
    kind: &'static str,
    bytes: Arc<[u8]>,
    tag: Option<u64>,
}

#[derive(Debug, Default)]
struct Outgoing {
    queue: VecDeque<Queued>,
    /// Requests sent and not yet answered.
    in_flight: HashMap<OutboundRequestId, InFlight>,
    /// After a `Busy` reply, nothing is sent to the peer before this.
    paused_until: Option<Instant>,
    /// Bytes the peer acknowledged on this connection.
    delivered: u64,
    /// When the latest acknowledgement arrived.
    last_ack: Option<Instant>,
    /// Estimated delivery rate (bytes/s): the highest delivery-rate
    /// sample of the last [`RATE_WINDOW`] (BBR's bottleneck bandwidth). An
    /// average would be self-limiting: frames sized and paced by a low
    /// estimate can only ever measure that low rate.
    rate: Option<f64>,
    /// Recent samples: when taken, and the rate measured.
    samples: VecDeque<(Instant, f64)>,
    /// The rate last reported to the engine.
    reported: Option<f64>,
    /// Bytes that may still leave under the per-peer budget, and when it
    /// was last topped up.
    budget: Option<(f64, Instant)>,
    /// The budget's rate (bytes/s), when there is one.
    budget_per_s: Option<f64>,
    /// Bytes in `queue` (bounded by [`MAX_QUEUED_BYTES`]).
    queued_bytes: usize,
    /// Requests that timed out since the last answer.
    timeouts: u32,
}

impl Outgoing {
    /// A new connection's state, starting from the rate measured on the
    /// previous one (if any).
    fn starting_at(rate: Option<f64>) -> Self {
        let mut out = Self { rate, ..Self::default() };
        if let Some(r) = rate {
            out.samples.push_back((Instant::now(), r));
        }
        out
    }

    fn in_flight_bytes(&self) -> usize {
        self.in_flight.values().map(|f| f.bytes.len()).sum()
    }

    /// Whether one more frame of `len` bytes may leave now: two frames
    /// always, at most [`SEND_WINDOW`], and beyond two only while no more
    /// than about [`IN_FLIGHT_TIME`] of data (at the measured rate) is in
    /// flight, so a cut loses little and a slow link is not flooded with
    /// frames that cannot arrive in time.
    fn may_send(&self, len: usize) -> bool {
        // Under a budget, a frame waits until it fits (a frame larger than
        // a second of budget waits for a full second's worth).
        if let Some((tokens, per_s)) = self.budget.map(|(t, _)| t).zip(self.budget_per_s)
            && tokens < (len as f64).min(per_s)
        {
            return false;
        }
        // Two frames always: one crosses the link while the other's
        // acknowledgement comes back, so the link never waits on a round trip.
        if self.in_flight.len() < 2 {
            return true;
        }
        if self.in_flight.len() >= SEND_WINDOW {
            return false;
        }
        self.rate.is_some_and(|rate| (self.in_flight_bytes() + len) as f64 <= rate * IN_FLIGHT_TIME.as_secs_f64())
    }

    /// Tops up the budget at `per_s` bytes a second, up to one second's worth.
    fn refill(&mut self, per_s: Option<u64>) {
        let Some(per_s) = per_s.filter(|b| *b > 0).map(|b| b as f64) else {
            self.budget = None;
            self.budget_per_s = None;
            return;
        };
        self.budget_per_s = Some(per_s);
        let now = Instant::now();
        let (tokens, at) = self.budget.unwrap_or((per_s, now));
        self.budget = Some(((tokens + per_s * now.duration_since(at).as_secs_f64()).min(per_s), now));
    }

    /// A frame was acknowledged: take a delivery-rate sample (bytes
    /// delivered since it left, over the time it took).
    fn acknowledged(&mut self, f: &InFlight) {
        self.delivered += f.bytes.len() as u64;
        // BBR-style: over the interval since the acknowledgement that
        // preceded the send, so acknowledgements of frames sent earlier do
        // not look like they crossed the link in no time.
        let start = f.delivered_time_at_send.map_or(f.sent_at, |t| t.min(f.sent_at));
        let elapsed = start.elapsed().as_secs_f64().max(1e-3);
        self.last_ack = Some(Instant::now());
        let sample = (self.delivered - f.delivered_at_send) as f64 / elapsed;
        // Small or lone messages (a summary, a hello) measure the round
        // trip, not the link: they may only raise the estimate.
        let limited = f.app_limited || f.bytes.len() < 1024;
        if limited && self.rate.is_none_or(|r| sample <= r) {
            return;
        }
        let now = Instant::now();
        self.samples.push_back((now, sample));
        while self.samples.front().is_some_and(|(t, _)| now.duration_since(*t) > RATE_WINDOW) {
            self.samples.pop_front();
        }
        self.rate = self.samples.iter().map(|(_, r)| *r).reduce(f64::max);
    }
}

/// How long dialling and upgrading a connection may take: TCP, Noise and
/// Yamux (or the QUIC handshake) need several round trips, which on a 2 s
/// round trip exceed the 10 s default.
pub const CONNECTION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(45);

/// How long a delivery-rate sample counts towards the estimate.
const RATE_WINDOW: std::time::Duration = std::time::Duration::from_secs(10);

/// How much data may be in flight to a peer, in seconds of its delivery rate.
/// Data queued at a slow link's bottleneck costs nothing at a cut (it was
/// never delivered), while too little in flight leaves the link idle for
/// a round trip after each frame.
const IN_FLIGHT_TIME: std::time::Duration = std::time::Duration::from_secs(3);
/// A connection that stays up this long resets the redial backoff; one that
/// drops sooner counts as a failed attempt (a flapping link backs off).
pub const HEALTHY_CONNECTION: std::time::Duration = std::time::Duration::from_secs(10);

/// How long to wait before sending again to a peer that answered `Busy`.
const BUSY_PAUSE: std::time::Duration = std::time::Duration::from_millis(200);

/// A relay this node stays reachable through.
#[derive(Debug)]
struct RelayListen {
    /// The relay's address, ending in `/p2p/<its peer id>`.
    addr: Multiaddr,
    peer: PeerId,
    /// The listener while the reservation holds.
    listener: Option<ListenerId>,
    /// When to ask for a reservation again after losing it.
    retry_at: Instant,
}

/// How long to wait before asking a relay for a reservation again.
const RELAY_RETRY: std::time::Duration = std::time::Duration::from_secs(5);
/// How long a peer may use this node's relay before it must be known as a
/// member's registered node: shorter than the sync layer's hello deadline
/// (30 s), so a stranger that holds a reservation is refused (and counted)
/// by the relay's guard rather than dropped for its silence first.
pub const RELAY_GRACE: std::time::Duration = std::time::Duration::from_secs(20);

/// Parses a relay's address; it must name the relay's peer id.
fn relay_addr(text: &str) -> Result<(Multiaddr, PeerId), NetError> {
    let bad = |reason: String| NetError::Listen { addr: text.to_owned(), reason };
    let addr: Multiaddr = text.parse().map_err(|e| bad(format!("not a multiaddr: {e}")))?;
    match addr.iter().last() {
        Some(Protocol::P2p(peer)) => Ok((addr, peer)),
        _ => Err(bad("a relay's address must end with /p2p/<its peer id>".into())),
    }
}

struct EventLoop {
    swarm: Swarm<Behaviour>,
    /// Bytes on this node's TCP connections.
    bytes: Arc<TransportBytes>,
    commands: mpsc::Receiver<NetCommand>,
    outbound: mpsc::Receiver<NetOut>,
    engine: EngineHandle,
    known: HashMap<PeerId, Known>,
    outgoing: HashMap<PeerId, Outgoing>,
    listen: Vec<Multiaddr>,
    /// Every 250 ms: redials due, relay reservations, the engine's tick.
    redial: tokio::time::Interval,
    /// Relays this node listens through.
    relays: Vec<RelayListen>,
    /// What AutoNAT found of this node's reachability.
    reachability: &'static str,
    /// The per-peer send budget (bytes/s), if any.
    peer_budget: Option<u64>,
    /// The delivery rate each peer had when its last connection closed: a
    /// new connection starts from it (and forgets it after [`RATE_WINDOW`]
    /// unless fresh samples confirm it).
    last_rates: HashMap<PeerId, f64>,
    /// Reports the engine could not take yet (its inbox was full); sent
    /// again, in order, on the next tick: a lost delivery report would
    /// stall a transfer.
    unreported: VecDeque<NetEvent>,
    /// Incoming connections per IP address.
    per_ip: PerIp,
    /// What the guard refused or dropped.
    guard: GuardCounts,
    /// Whom the relay server serves: the members' registered nodes, once
    /// the engine said (`None`: anyone, with `relay_for_anyone`).
    relay_members: Option<HashSet<PeerId>>,
    /// Peers holding a reservation or a circuit here, since when.
    relay_users: HashMap<PeerId, Instant>,
}

/// An error and its causes in words, the empty ones left out (libp2p's
/// transport errors often say nothing themselves and put the cause in
/// their source), with a hint when the port is taken.
fn causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(e);
    while let Some(err) = next {
        let text = err.to_string();
        if !text.trim().is_empty() && !parts.iter().any(|p| p.contains(text.trim())) {
            parts.push(text.trim().to_owned());
        }
        next = err.source();
    }
    if parts.is_empty() {
        parts.push(format!("{e:?}"));
    }
    let mut out = parts.join(": ");
    if out.contains("in use") {
        out.push_str(" (another program, or another node, already uses this port: change [network] listen)");
    }
    out
}

/// Checks that a TCP listen address's port is free. libp2p's TCP listener
/// sets `SO_REUSEPORT` (for hole punching), so a second node on the same
/// port would bind without an error and share the port with the first,
/// whose peers' dials then reach the wrong node ("did not answer"). A plain
/// bind, without that option, fails while another socket listens there.
/// Port 0 (any port) and non-TCP addresses pass.
fn tcp_port_free(addr: &Multiaddr) -> Result<(), String> {
    use libp2p::multiaddr::Protocol;
    let mut parts = addr.iter();
    let ip: std::net::IpAddr = match parts.next() {
        Some(Protocol::Ip4(ip)) => ip.into(),
        Some(Protocol::Ip6(ip)) => ip.into(),
        _ => return Ok(()),
    };
    let Some(Protocol::Tcp(port)) = parts.next() else { return Ok(()) };
    if port == 0 {
        return Ok(());
    }
    match std::net::TcpListener::bind((ip, port)) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Err(format!(
            "TCP port {port} is in use (another program, or another node, already uses this port: change [network] listen)"
        )),
        Err(e) => Err(causes(&e)),
    }
}

fn build_err(e: impl std::fmt::Display) -> NetError {
    NetError::Build(e.to_string())
}

/// Builds the swarm, starts listening, and spawns the task that owns it.
/// Returns once every listener has an address, so callers can show them.
///
/// # Errors
/// [`NetError`] when an address is invalid or cannot be listened on.
pub async fn spawn(
    identity: &Identity,
    engine: EngineHandle,
    peers: Vec<PeerRecord>,
) -> Result<(NetHandle, JoinHandle<()>), NetError> {
    let config = identity.config.network.clone();
    let options = Options {
        mdns: config.mdns,
        relay_server: config.relay_server,
        autonat: config.relay_server || !config.relays.is_empty(),
    };
    let relay_addrs = config.relays.iter().map(|r| relay_addr(r)).collect::<Result<Vec<_>, _>>()?;
    let bytes = Arc::new(TransportBytes::default());
    let counted = bytes.clone();
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(keypair(&identity.node_key))
        .with_tokio()
        .with_quic_config(|mut c| {
            // Defaults (5 s handshake, 10 s idle) give up on a 2 s round trip.
            c.handshake_timeout = CONNECTION_TIMEOUT;
            // As long as TCP connections stay up; a keep-alive well within it
            // (every packet costs bytes on an idle link).
            c.max_idle_timeout = IDLE_CONNECTION_TIMEOUT.as_millis() as u32;
            c.keep_alive_interval = std::time::Duration::from_secs(10 * 60);
            c
        })
        // TCP as `with_tcp` builds it, every byte counted on the way.
        .with_other_transport(|key| -> Result<_, Box<dyn std::error::Error + Send + Sync>> {
            let noise = noise::Config::new(key)?;
            Ok(tcp::tokio::Transport::new(tcp::Config::default().nodelay(true))
                .map(move |s, _| Counted::new(s, counted.clone()))
                .upgrade(libp2p::core::upgrade::Version::V1Lazy)
                .authenticate(noise)
                .multiplex(yamux::Config::default()))
        })
        .map_err(build_err)?
        .with_relay_client(noise::Config::new, yamux::Config::default)
        .map_err(build_err)?
        .with_behaviour(|key, relay_client| {
            Behaviour::new(key, relay_client, options)
                .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)
        })
        .map_err(build_err)?
        .with_swarm_config(|c| {
            // Each request opens a stream; negotiating its protocol before
            // sending (multistream-select V1) costs a round trip per frame,
            // which on a 600 ms link halves what a window of frames carries.
            // Both ends speak the same protocols, so the data follows the
            // proposal at once (V1Lazy).
            c.with_idle_connection_timeout(IDLE_CONNECTION_TIMEOUT)
                .with_substream_upgrade_protocol_override(libp2p::core::upgrade::Version::V1Lazy)
        })
        .with_connection_timeout(CONNECTION_TIMEOUT)
        .build();

    let mut listeners = Vec::new();
    for text in &config.listen {
        let addr: Multiaddr = text
            .parse()
            .map_err(|e| NetError::Listen { addr: text.clone(), reason: format!("not a multiaddr: {e}") })?;
        tcp_port_free(&addr).map_err(|reason| NetError::Listen { addr: text.clone(), reason })?;
        let id = swarm.listen_on(addr).map_err(|e| NetError::Listen { addr: text.clone(), reason: causes(&e) })?;
        listeners.push(id);
    }
    let mut listen = Vec::new();
    let mut pending: Vec<_> = listeners.clone();
    let deadline = tokio::time::sleep(std::time::Duration::from_secs(10));
    tokio::pin!(deadline);
    while !pending.is_empty() {
        tokio::select! {
            event = swarm.select_next_some() => match event {
                SwarmEvent::NewListenAddr { listener_id, address } => {
                    pending.retain(|l| *l != listener_id);
                    listen.push(address);
                }
                SwarmEvent::ListenerClosed { listener_id, reason, .. } if pending.contains(&listener_id) => {
                    let reason = reason.err().map(|e| causes(&e)).unwrap_or_else(|| "closed".into());
                    return Err(NetError::Listen { addr: format!("{listener_id:?}"), reason });
                }
                SwarmEvent::ListenerError { error, .. } => {
                    return Err(NetError::Listen { addr: "listener".into(), reason: causes(&error) });
                }
                _ => {}
            },
            _ = &mut deadline => {
                return Err(NetError::Listen { addr: config.listen.join(", "), reason: "no address after 10 s".into() });
            }
        }
    }

    // Reachable through each relay too. A relay that cannot be reached now
    // is asked again later: it does not stop the node from starting.
    let now = Instant::now();
    let relays =
        relay_addrs.into_iter().map(|(addr, peer)| RelayListen { addr, peer, listener: None, retry_at: now }).collect();

    let (tx, commands) = mpsc::channel(NET_INBOX);
    let (out_tx, outbound) = mpsc::channel(NET_OUTBOX);
    engine.attach_net(out_tx).await.map_err(|_| NetError::Stopped)?;
    let mut known = HashMap::new();
    for p in peers.into_iter().filter(|p| p.configured) {
        let Some(pid) = peer_id(&p.node) else { continue };
        let addrs = p.addrs.iter().filter_map(|a| a.parse().ok()).collect();
        known.insert(pid, Known::new(p.node, addrs, true));
    }
    let mut redial = tokio::time::interval(std::time::Duration::from_millis(250));
    redial.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let event_loop = EventLoop {
        swarm,
        commands,
        outbound,
        engine,
        known,
        outgoing: HashMap::new(),
        listen,
        redial,
        relays,
        reachability: if options.autonat { "unknown" } else { "not checked" },
        bytes,
        peer_budget: config.peer_budget_bytes_per_s,
        last_rates: HashMap::new(),
        unreported: VecDeque::new(),
        per_ip: PerIp::default(),
        guard: GuardCounts::default(),
        relay_members: (!config.relay_for_anyone).then(HashSet::new),
        relay_users: HashMap::new(),
    };
    let span = tracing::Span::current();
    let join = tokio::spawn(tracing::Instrument::instrument(event_loop.run(), span));
    Ok((NetHandle { tx }, join))
}

fn jitter_ms(max: u64) -> u64 {
    let r: [u8; 8] = crate::clock::random_bytes();
    u64::from_le_bytes(r) % max.max(1)
}

impl EventLoop {
    async fn run(mut self) {
        loop {
            tokio::select! {
                biased;
                command = self.commands.recv() => match command {
                    Some(NetCommand::Shutdown(ack)) => {
                        self.close_all();
                        let _ = ack.send(());
                        return;
                    }
                    None => {
                        self.close_all();
                        return;
                    }
                    Some(c) => self.on_command(c),
                },
                Some(out) = self.outbound.recv() => self.on_outbound(out),
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                _ = self.redial.tick() => {
                    // The replica core starts whatever is due (rounds, heartbeats).
                    let _ = self.engine.net_event(NetEvent::Tick);
                    self.report_again();
                    self.listen_through_relays();
                    self.redial_due();
                    self.check_relay_users();
                    self.pump_all();
                }
            }
        }
    }

    /// Tells the engine something it must not miss, keeping it for later
    /// (in order) when its inbox is full.
    fn report(&mut self, event: NetEvent) {
        if !self.unreported.is_empty() {
            self.unreported.push_back(event);
            return;
        }
        if let Err(event) = self.engine.net_event_or_back(event) {
            self.unreported.push_back(*event);
        }
    }

    fn report_again(&mut self) {
        while let Some(event) = self.unreported.pop_front() {
            if let Err(event) = self.engine.net_event_or_back(event) {
                self.unreported.push_front(*event);
                return;
            }
        }
    }

    /// Asks each relay without a reservation for one (again).
    fn listen_through_relays(&mut self) {
        let now = Instant::now();
        for r in self.relays.iter_mut().filter(|r| r.listener.is_none() && r.retry_at <= now) {
            r.retry_at = now + RELAY_RETRY;
            match self.swarm.listen_on(r.addr.clone().with(Protocol::P2pCircuit)) {
                Ok(id) => r.listener = Some(id),
                Err(e) => tracing::warn!(relay = %r.addr, error = %e, "cannot listen through relay"),
            }
        }
    }

    fn close_all(&mut self) {
        let connected: Vec<PeerId> = self.swarm.connected_peers().copied().collect();
        for p in connected {
            let _ = self.swarm.disconnect_peer_id(p);
        }
    }

    fn on_command(&mut self, command: NetCommand) {
        match command {
            NetCommand::Dial(node, addrs, reply) => {
                self.remember_and_dial(node, addrs);
                let _ = reply.send(());
            }
            NetCommand::Forget(node, reply) => {
                self.forget(node);
                let _ = reply.send(());
            }
            NetCommand::Info(reply) => {
                let connected = self.swarm.connected_peers().filter_map(node_id).collect();
                let _ = reply.send(NetInfo {
                    peer_id: self.swarm.local_peer_id().to_string(),
                    listen: self.listen.iter().map(ToString::to_string).collect(),
                    connected,
                    reachability: self.reachability,
                    transport_bytes: self.bytes.totals(),
                    guard: self.guard,
                });
            }
            NetCommand::Shutdown(_) => unreachable!("handled by the loop"),
        }
    }

    /// The relay server serves members only (unless `relay_for_anyone`).
    /// libp2p's relay accepts first and has no hook before, so whoever
    /// holds a reservation or opens a circuit is watched: once it has had
    /// [`RELAY_GRACE`] to become known as a member's registered node (a
    /// joining node, or a start before the roster reached the swarm task),
    /// it is disconnected if it is not one.
    fn on_relay_event(&mut self, event: relay::Event) {
        match &event {
            relay::Event::ReservationReqAccepted { src_peer_id, .. } => self.watch_relay_user(*src_peer_id),
            relay::Event::CircuitReqAccepted { src_peer_id, dst_peer_id } => {
                self.watch_relay_user(*src_peer_id);
                self.watch_relay_user(*dst_peer_id);
            }
            relay::Event::ReservationClosed { src_peer_id } | relay::Event::ReservationTimedOut { src_peer_id } => {
                self.relay_users.remove(src_peer_id);
            }
            _ => {}
        }
        tracing::debug!(?event, "relay server");
    }

    fn watch_relay_user(&mut self, pid: PeerId) {
        if self.relay_members.is_some() {
            self.relay_users.entry(pid).or_insert_with(Instant::now);
        }
    }

    /// Disconnects relay users that are not (or no longer) members' nodes
    /// after their grace.
    fn check_relay_users(&mut self) {
        let Some(members) = &self.relay_members else { return };
        let now = Instant::now();
        let out: Vec<PeerId> = self
            .relay_users
            .iter()
            .filter(|(pid, since)| !members.contains(pid) && now.duration_since(**since) >= RELAY_GRACE)
            .map(|(pid, _)| *pid)
            .collect();
        for pid in out {
            self.relay_users.remove(&pid);
            if self.swarm.is_connected(&pid) {
                self.guard.relay_refused += 1;
                tracing::info!(peer = %pid, "relay: not a registered node of a member: disconnected");
                let _ = self.swarm.disconnect_peer_id(pid);
            }
        }
    }

    fn forget(&mut self, node: NodeId) {
        if let Some(pid) = peer_id(&node) {
            self.known.remove(&pid);
            let _ = self.swarm.disconnect_peer_id(pid);
        }
    }

    fn remember_and_dial(&mut self, node: NodeId, addrs: Vec<Multiaddr>) {
        let Some(pid) = peer_id(&node) else { return };
        let entry = self.known.entry(pid).or_insert_with(|| Known::new(node, Vec::new(), true));
        entry.configured = true;
        for a in addrs {
            if !entry.addrs.contains(&a) {
                entry.addrs.push(a);
            }
        }
        entry.attempts = 0;
        entry.next_dial = Instant::now();
        self.dial(pid);
    }
    fn dial(&mut self, pid: PeerId) {
        if self.swarm.is_connected(&pid) {
            return;
        }
        let Some(k) = self.known.get_mut(&pid) else { return };
        if k.addrs.is_empty() && self.relays.iter().all(|r| r.peer == pid) {
            return;
        }
        k.attempts += 1;
        let base = MIN_REDIAL_DELAY.as_millis() as u64 * 2u64.saturating_pow(k.attempts.min(16) - 1);
        let delay = base.min(MAX_REDIAL_DELAY.as_millis() as u64);
        k.next_dial = Instant::now() + std::time::Duration::from_millis(delay + jitter_ms(delay / 5 + 1));
        // Its own addresses first, then through each relay (the swarm adds
        // `/p2p/<peer>` after `/p2p-circuit`).
        let mut addrs = k.addrs.clone();
        for r in self.relays.iter().filter(|r| r.peer != pid) {
            let circuit = r.addr.clone().with(Protocol::P2pCircuit);
            if !addrs.contains(&circuit) {
                addrs.push(circuit);
            }
        }
        let opts = DialOpts::peer_id(pid).addresses(addrs).build();
        if let Err(e) = self.swarm.dial(opts) {
            tracing::debug!(peer = %k.node.short(), error = %e, "dial not started");
        }
    }

    fn pump_all(&mut self) {
        let peers: Vec<PeerId> = self.outgoing.keys().copied().collect();
        for pid in peers {
            self.pump(pid);
        }
    }

    fn redial_due(&mut self) {
        let now = Instant::now();
        let due: Vec<PeerId> = self
            .known
            .iter()
            .filter(|(pid, k)| k.configured && k.next_dial <= now && !self.swarm.is_connected(pid))
            .map(|(pid, _)| *pid)
            .collect();
        for pid in due {
            self.dial(pid);
        }
    }

    fn on_outbound(&mut self, out: NetOut) {
        match out {
            NetOut::Send { to, kind, bytes, tag } => {
                let Some(pid) = peer_id(&to) else { return };
                if !self.swarm.is_connected(&pid) {
                    tracing::debug!(peer = %to.short(), kind, "not connected: message dropped (anti-entropy will resend)");
                    if let Some(tag) = tag {
                        self.report(NetEvent::Lost { node: to, tag });
                    }
                    return;
                }
                let last_rate = self.last_rates.get(&pid).copied();
                let out = self.outgoing.entry(pid).or_insert_with(|| Outgoing::starting_at(last_rate));
                if out.queued_bytes + bytes.len() > MAX_QUEUED_BYTES {
                    // The peer reads slower than we write: drop, count, and
                    // let anti-entropy (or the transfer's loss) repair.
                    self.guard.messages_dropped += 1;
                    tracing::debug!(peer = %to.short(), kind, "queue full: message dropped");
                    if let Some(tag) = tag {
                        self.report(NetEvent::Lost { node: to, tag });
                    }
                    return;
                }
                out.queued_bytes += bytes.len();
                out.queue.push_back(Queued { kind, bytes: bytes.into(), tag });
                self.pump(pid);
            }
            NetOut::Dial { node, addrs } => self.remember_and_dial(node, addrs),
            NetOut::Forget { node } => self.forget(node),
            NetOut::Disconnect { to, reason } => {
                if let Some(pid) = peer_id(&to) {
                    tracing::warn!(peer = %to.short(), %reason, "disconnecting peer");
                    let _ = self.swarm.disconnect_peer_id(pid);
                }
            }
            NetOut::Members(nodes) => {
                if let Some(members) = &mut self.relay_members {
                    *members = nodes.iter().filter_map(peer_id).collect();
                }
            }
        }
    }

    fn pump(&mut self, pid: PeerId) {
        let Some(out) = self.outgoing.get_mut(&pid) else { return };
        out.refill(self.peer_budget);
        if out.paused_until.is_some_and(|t| t > Instant::now()) {
            return;
        }
        out.paused_until = None;
        while out.queue.front().is_some_and(|q| out.may_send(q.bytes.len())) {
            let Some(Queued { kind, bytes, tag }) = out.queue.pop_front() else { break };
            out.queued_bytes = out.queued_bytes.saturating_sub(bytes.len());
            tracing::trace!(kind, len = bytes.len(), "sending");
            let id = self.swarm.behaviour_mut().sync.send_request(&pid, bytes.clone());
            if let Some((tokens, _)) = &mut out.budget {
                *tokens -= bytes.len() as f64;
            }
            let delivered_at_send = out.delivered;
            let app_limited = out.in_flight.is_empty() && out.queue.is_empty();
            let f = InFlight {
                kind,
                tag,
                bytes,
                sent_at: Instant::now(),
                delivered_at_send,
                // After an idle spell the interval starts at the send.
                delivered_time_at_send: if out.in_flight.is_empty() { None } else { out.last_ack },
                app_limited,
            };
            out.in_flight.insert(id, f);
        }
    }

    /// Tells the engine a peer's delivery rate when it moved by a quarter
    /// or more, so it sizes the frames it builds for that peer.
    fn report_rate(&mut self, pid: PeerId) {
        let Some(out) = self.outgoing.get_mut(&pid) else { return };
        let Some(rate) = out.rate else { return };
        if out.reported.is_some_and(|r| (rate - r).abs() < r * 0.25) {
            return;
        }
        let Some(node) = node_id(&pid) else { return };
        if self.engine.net_event(NetEvent::LinkRate { node, bytes_per_s: rate as u64 }).is_ok() {
            out.reported = Some(rate);
        }
    }

    /// A frame from `pid` was dropped. The engine counts it with the peer's
    /// other faults and asks for a disconnect when they add up; if the engine
    /// cannot take the report, the peer is disconnected here.
    fn fault(&mut self, pid: PeerId, reason: String) {
        let node = node_id(&pid);
        tracing::warn!(peer = %node.map(|n| n.short()).unwrap_or_else(|| pid.to_string()), %reason, "peer fault: frame dropped");
        let reported = node.is_some_and(|node| self.engine.net_event(NetEvent::Refused { from: node, reason }).is_ok());
        if !reported {
            let _ = self.swarm.disconnect_peer_id(pid);
        }
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        if let SwarmEvent::ConnectionClosed { connection_id, .. } = &event {
            self.per_ip.closed(*connection_id);
        }
        match event {
            SwarmEvent::NewListenAddr { address, .. } if !self.listen.contains(&address) => {
                if address.iter().any(|p| p == Protocol::P2pCircuit) {
                    tracing::info!(%address, "reachable through a relay");
                }
                self.listen.push(address);
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => self.listen.retain(|a| *a != address),
            SwarmEvent::ListenerClosed { listener_id, reason, .. } => {
                if let Some(r) = self.relays.iter_mut().find(|r| r.listener == Some(listener_id)) {
                    let reason = reason.err().map_or_else(|| "closed".to_owned(), |e| e.to_string());
                    tracing::info!(relay = %r.addr, %reason, "relay reservation lost; asking again shortly");
                    r.listener = None;
                    r.retry_at = Instant::now() + RELAY_RETRY;
                }
            }
            SwarmEvent::ConnectionEstablished { peer_id: pid, num_established, endpoint, connection_id, .. } => {
                if let ConnectedPoint::Listener { send_back_addr, .. } = &endpoint
                    && !self.per_ip.admit(connection_id, send_back_addr)
                {
                    self.guard.connections_refused += 1;
                    tracing::debug!(peer = %pid, addr = %send_back_addr, "too many connections from one address: closing");
                    let _ = self.swarm.close_connection(connection_id);
                    return;
                }
                let Some(node) = node_id(&pid) else {
                    tracing::warn!(peer = %pid, "peer without an ed25519 key: disconnecting");
                    let _ = self.swarm.disconnect_peer_id(pid);
                    return;
                };
                if let Some(k) = self.known.get_mut(&pid) {
                    k.connected_at = Some(Instant::now());
                }
                if num_established.get() == 1 {
                    let addr = endpoint.get_remote_address().to_string();
                    tracing::info!(peer = %node.short(), %addr, "connected");
                    if self.engine.net_event(NetEvent::Connected { node, addr }).is_err() {
                        tracing::warn!(peer = %node.short(), "engine busy: closing the new connection");
                        let _ = self.swarm.disconnect_peer_id(pid);
                    }
                }
            }
            SwarmEvent::ConnectionClosed { peer_id: pid, num_established: 0, cause, .. } => {
                // Remembered for the peers this node dials only: strangers
                // leave nothing here.
                if let Some(rate) = self.outgoing.remove(&pid).and_then(|o| o.rate)
                    && self.known.contains_key(&pid)
                {
                    self.last_rates.insert(pid, rate);
                }
                if let Some(k) = self.known.get_mut(&pid)
                    && let Some(since) = k.connected_at.take()
                    && since.elapsed() >= HEALTHY_CONNECTION
                {
                    // A healthy connection: the next redial starts from the shortest delay.
                    k.attempts = 0;
                    k.next_dial = Instant::now();
                }
                if let Some(node) = node_id(&pid) {
                    let error = cause.map(|c| c.to_string());
                    tracing::info!(peer = %node.short(), error = error.as_deref().unwrap_or("none"), "disconnected");
                    // Never dropped: the engine would keep a dead session.
                    self.report(NetEvent::Disconnected { node, error });
                }
            }
            SwarmEvent::OutgoingConnectionError { peer_id: Some(pid), error, .. } => {
                if let Some(k) = self.known.get(&pid) {
                    tracing::debug!(peer = %k.node.short(), %error, "dial failed");
                    let _ = self.engine.net_event(NetEvent::DialFailed { node: k.node, error: error.to_string() });
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Sync(event)) => self.on_sync_event(event),
            SwarmEvent::Behaviour(BehaviourEvent::Ping(libp2p::ping::Event { peer, connection, result: Err(e) })) => {
                // Pings do not close a connection that stopped answering: we do.
                tracing::info!(%peer, error = %e, "ping failed: closing the connection");
                let _ = self.swarm.close_connection(connection);
            }
            SwarmEvent::Behaviour(BehaviourEvent::RelayClient(event)) => match event {
                relay::client::Event::ReservationReqAccepted { relay_peer_id, renewal, .. } => {
                    tracing::debug!(relay = %relay_peer_id, renewal, "relay reservation accepted");
                }
                relay::client::Event::OutboundCircuitEstablished { relay_peer_id, .. } => {
                    tracing::info!(relay = %relay_peer_id, "connected to a peer through a relay");
                }
                relay::client::Event::InboundCircuitEstablished { src_peer_id, .. } => {
                    tracing::info!(peer = %src_peer_id, "a peer reached this node through a relay");
                }
            },
            SwarmEvent::Behaviour(BehaviourEvent::Relay(event)) => self.on_relay_event(event),
            SwarmEvent::Behaviour(BehaviourEvent::Dcutr(dcutr::Event { remote_peer_id, result })) => match result {
                Ok(_) => tracing::info!(peer = %remote_peer_id, "relayed connection upgraded to a direct one"),
                Err(e) => tracing::debug!(peer = %remote_peer_id, error = %e, "hole punching failed: staying relayed"),
            },
            SwarmEvent::Behaviour(BehaviourEvent::Autonat(autonat::Event::StatusChanged { new, .. })) => {
                self.reachability = match new {
                    autonat::NatStatus::Public(_) => "public",
                    autonat::NatStatus::Private => "private",
                    autonat::NatStatus::Unknown => "unknown",
                };
                tracing::info!(reachability = self.reachability, "reachability from the outside");
            }
            SwarmEvent::Behaviour(BehaviourEvent::Mdns(mdns::Event::Discovered(found))) => {
                for (pid, addr) in found {
                    let Some(node) = node_id(&pid) else { continue };
                    let k = self.known.entry(pid).or_insert_with(|| Known::new(node, Vec::new(), false));
                    if !k.addrs.contains(&addr) {
                        k.addrs.push(addr);
                    }
                    self.dial(pid);
                }
            }
            _ => {}
        }
    }

    fn on_sync_event(&mut self, event: request_response::Event<Arc<[u8]>, SyncReply>) {
        match event {
            request_response::Event::Message { peer, message, .. } => match message {
                Message::Request { request, channel, .. } => {
                    let reply = match (node_id(&peer), SyncMessage::decode(&request)) {
                        (None, _) => SyncReply::Refused("no ed25519 identity".into()),
                        (_, Err(e)) => {
                            self.fault(peer, format!("malformed sync message: {e}"));
                            SyncReply::Refused(e.to_string())
                        }
                        (Some(from), Ok(msg)) => {
                            let bytes = request.len() + 4;
                            match self.engine.net_event(NetEvent::Message { from, msg: Box::new(msg), bytes }) {
                                Ok(()) => SyncReply::Ok,
                                Err(_) => SyncReply::Busy,
                            }
                        }
                    };
                    let _ = self.swarm.behaviour_mut().sync.send_response(channel, reply);
                }
                Message::Response { request_id, response } => {
                    let mut delivered = None;
                    if let Some(out) = self.outgoing.get_mut(&peer) {
                        let sent = out.in_flight.remove(&request_id);
                        match response {
                            SyncReply::Ok => {
                                out.timeouts = 0;
                                if let Some(f) = &sent {
                                    out.acknowledged(f);
                                    delivered = f.tag;
                                }
                            }
                            SyncReply::Busy => {
                                // The peer could not take it: send it again shortly.
                                tracing::debug!(%peer, "peer busy: pausing");
                                if let Some(f) = sent {
                                    out.queued_bytes += f.bytes.len();
                                    out.queue.push_front(Queued { kind: f.kind, bytes: f.bytes, tag: f.tag });
                                }
                                out.paused_until = Some(Instant::now() + BUSY_PAUSE);
                            }
                            SyncReply::Refused(reason) => {
                                // Sending it again would be refused again.
                                tracing::warn!(%peer, %reason, "peer refused our message");
                                delivered = sent.and_then(|f| f.tag);
                            }
                        }
                    }
                    if let (Some(tag), Some(node)) = (delivered, node_id(&peer)) {
                        self.report(NetEvent::Delivered { node, tag });
                    }
                    self.report_rate(peer);
                    self.pump(peer);
                }
            },
            request_response::Event::OutboundFailure { peer, error, request_id, .. } => {
                let mut silent = false;
                let lost = self.outgoing.get_mut(&peer).and_then(|out| {
                    if matches!(error, request_response::OutboundFailure::Timeout) {
                        out.timeouts += 1;
                        silent = out.timeouts >= MAX_TIMEOUTS_IN_A_ROW;
                    }
                    out.in_flight.remove(&request_id)
                });
                if let (Some(tag), Some(node)) = (lost.and_then(|f| f.tag), node_id(&peer)) {
                    self.report(NetEvent::Lost { node, tag });
                }
                if silent {
                    // It takes our requests and never answers: it does not read.
                    self.guard.slow_peers_disconnected += 1;
                    tracing::warn!(%peer, "{MAX_TIMEOUTS_IN_A_ROW} requests in a row unanswered: disconnecting");
                    let _ = self.swarm.disconnect_peer_id(peer);
                    return;
                }
                tracing::debug!(%peer, %error, "sync request failed");
                self.pump(peer);
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                // Oversized or truncated frames end here: the stream is dropped.
                if let request_response::InboundFailure::Io(e) = &error {
                    self.fault(peer, format!("bad frame: {e}"));
                    return;
                }
                tracing::debug!(%peer, %error, "inbound sync stream failed");
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{causes, tcp_port_free};

    #[derive(Debug)]
    struct Silent(std::io::Error);

    impl std::fmt::Display for Silent {
        fn fmt(&self, _: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            Ok(())
        }
    }

    impl std::error::Error for Silent {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn a_silent_error_gives_its_cause_and_a_taken_port_a_hint() {
        let taken = Silent(std::io::Error::from(std::io::ErrorKind::AddrInUse));
        let text = causes(&taken);
        assert!(text.starts_with("address in use"), "{text}");
        assert!(text.contains("change [network] listen"), "{text}");
        let other = Silent(std::io::Error::other("no route"));
        assert_eq!(causes(&other), "no route");
    }

    #[test]
    fn a_tcp_port_another_socket_listens_on_is_refused_by_name() {
        // A listener with SO_REUSEPORT, as libp2p's is: a second one with it
        // would bind; the check's plain bind does not.
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket.set_reuse_address(true).unwrap();
        socket.set_reuse_port(true).unwrap();
        socket.bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into()).unwrap();
        socket.listen(16).unwrap();
        let port = socket.local_addr().unwrap().as_socket().unwrap().port();
        let taken: libp2p::Multiaddr = format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap();
        let reason = tcp_port_free(&taken).unwrap_err();
        assert!(reason.contains(&format!("TCP port {port} is in use")), "{reason}");
        assert!(reason.contains("change [network] listen"), "{reason}");
        drop(socket);
        assert_eq!(tcp_port_free(&taken), Ok(()), "free once the other listener is gone");
        for free in ["/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/7421/quic-v1"] {
            assert_eq!(tcp_port_free(&free.parse().unwrap()), Ok(()));
        }
    }
}
