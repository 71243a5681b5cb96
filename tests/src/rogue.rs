//! A hand-driven peer for adversarial tests: a real libp2p swarm (TCP,
//! Noise, Yamux, the sync protocol) whose every message the test writes
//! itself, and which keeps every message the node sends it.

use std::time::Duration;

use futures::StreamExt;
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, StreamProtocol, Swarm, noise, tcp, yamux};
use passerelle_node::net::codec::SyncCodec;
use passerelle_protocol::automerge::Change;
use passerelle_protocol::certificate::NodeCertificate;
use passerelle_protocol::document::{self, Edit};
use passerelle_protocol::envelope::ChangeEnvelope;
use passerelle_protocol::ids::DocId;
use passerelle_protocol::keys::SecretKey;
use passerelle_protocol::network::{Invitation, Roster, Statement};
use passerelle_protocol::sync::message::{PROTOCOL, SyncMessage, SyncReply};

/// The rogue's swarm: the sync protocol only.
pub type Swarmed = Swarm<request_response::Behaviour<SyncCodec>>;

/// A peer connected to one node, driven message by message.
#[allow(missing_debug_implementations)]
pub struct RoguePeer {
    /// The swarm (tests that flood drive it directly).
    pub swarm: Swarmed,
    /// The node it is connected to.
    pub peer: PeerId,
    /// Every message the node sent it.
    pub inbox: Vec<SyncMessage>,
    /// Every raw frame the node sent it, decodable or not.
    pub raw: Vec<Vec<u8>>,
    /// Whether the node closed the connection at some point.
    pub closed: bool,
}

fn swarm(key: &SecretKey) -> Swarmed {
    let keypair = passerelle_node::net::identity::keypair(key);
    libp2p::SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_tcp(tcp::Config::default(), noise::Config::new, yamux::Config::default)
        .expect("tcp transport")
        .with_behaviour(|_| {
            request_response::Behaviour::with_codec(
                SyncCodec,
                [(StreamProtocol::new(PROTOCOL), ProtocolSupport::Full)],
                request_response::Config::default(),
            )
        })
        .expect("behaviour")
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build()
}

impl RoguePeer {
    /// Connects with node key `key` to the node at `addr`.
    ///
    /// # Panics
    /// When the address cannot be dialled.
    pub async fn connect(key: &SecretKey, addr: Multiaddr) -> Self {
        let mut swarm = swarm(key);
        swarm.dial(addr).expect("dial");
        loop {
            if let SwarmEvent::ConnectionEstablished { peer_id, .. } = swarm.select_next_some().await {
                return Self { swarm, peer: peer_id, inbox: Vec::new(), raw: Vec::new(), closed: false };
            }
        }
    }

    fn keep(&mut self, event: SwarmEvent<request_response::Event<std::sync::Arc<[u8]>, SyncReply>>) {
        match event {
            SwarmEvent::ConnectionClosed { num_established: 0, .. } => self.closed = true,
            SwarmEvent::Behaviour(request_response::Event::Message {
                message: request_response::Message::Request { request, channel, .. },
                ..
            }) => {
                self.raw.push(request.to_vec());
                if let Ok(msg) = SyncMessage::decode(&request) {
                    self.inbox.push(msg);
                }
                let _ = self.swarm.behaviour_mut().send_response(channel, SyncReply::Ok);
            }
            _ => {}
        }
    }

    /// Sends one raw request and waits for its reply (None if it failed).
    pub async fn ask(&mut self, bytes: Vec<u8>) -> Option<SyncReply> {
        let id = self.swarm.behaviour_mut().send_request(&self.peer, bytes.into());
        let deadline = tokio::time::sleep(Duration::from_secs(20));
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                event = self.swarm.select_next_some() => match event {
                    SwarmEvent::Behaviour(request_response::Event::Message {
                        message: request_response::Message::Response { request_id, response }, ..
                    }) if request_id == id => return Some(response),
                    SwarmEvent::Behaviour(request_response::Event::OutboundFailure { request_id, .. })
                        if request_id == id => return None,
                    other => self.keep(other),
                },
                _ = &mut deadline => return None,
            }
        }
    }

    /// Answers the node's requests for `wait`, keeping what they carry.
    pub async fn listen(&mut self, wait: Duration) {
        let deadline = tokio::time::sleep(wait);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                event = self.swarm.select_next_some() => self.keep(event),
                _ = &mut deadline => return,
            }
        }
    }

    /// Waits (at most `wait`) until the node closes the connection.
    pub async fn wait_closed(&mut self, wait: Duration) -> bool {
        let end = tokio::time::Instant::now() + wait;
        while !self.closed && tokio::time::Instant::now() < end {
            self.listen(Duration::from_millis(50)).await;
        }
        self.closed
    }

    /// Presents an invitation and waits for the node's answer: `Welcome` or
    /// `JoinRefused` (None if neither came within 10 s).
    pub async fn redeem(&mut self, invitation: &Invitation, cert: &NodeCertificate) -> Option<SyncMessage> {
        let join =
            SyncMessage::Join { invitation: Box::new(invitation.clone()), certificate: cert.clone(), addrs: vec![] };
        self.ask(join.encode()).await;
        for _ in 0..100 {
            if let Some(m) =
                self.inbox.iter().find(|m| matches!(m, SyncMessage::Welcome { .. } | SyncMessage::JoinRefused { .. }))
            {
                return Some(m.clone());
            }
            self.listen(Duration::from_millis(100)).await;
        }
        None
    }

    /// Says hello as a member, then hands over its whole roster, so a node
    /// that lacks part of it (and waits for it before documents) is served.
    pub async fn greet(&mut self, cert: &NodeCertificate, roster: &Roster) {
        self.ask(passerelle_protocol::sync::session::Session::hello(cert, roster, true, None, vec![]).encode()).await;
        let statements = roster.statements().cloned().collect();
        self.ask(SyncMessage::Roster { statements, complete: true }.encode()).await;
    }

    /// Redeems an invitation token: the rogue becomes a member like anyone.
    /// Returns the roster it was welcomed with.
    ///
    /// # Panics
    /// When the node does not welcome it.
    pub async fn join(&mut self, token: &str, cert: &NodeCertificate) -> Roster {
        let invitation = Invitation::from_token(token).expect("token");
        match self.redeem(&invitation, cert).await {
            Some(SyncMessage::Welcome { statements }) => {
                let found = statements.iter().find(|s| matches!(s.body, Statement::Found { .. })).expect("found");
                let mut roster = Roster::new(found.network);
                roster.insert_all(statements);
                roster
            }
            other => panic!("not welcomed: {other:?}"),
        }
    }
}

/// A change of `doc` setting its French title, signed by `key`, on top of
/// `base` (an earlier change) if given.
///
/// # Panics
/// On a malformed `base`.
pub fn change_envelope(doc: DocId, key: &SecretKey, base: Option<&[u8]>, text: &str) -> ChangeEnvelope {
    let mut am = document::new_document(&key.node_id());
    if let Some(first) = base {
        am.apply_changes(vec![Change::from_bytes(first.to_vec()).expect("change")]).expect("apply");
    }
    let edit = Edit::Text { field: "title".into(), lang: "fr".into(), text: text.into() };
    let change = document::commit(&mut am, &[edit], "rogue", 1_000).expect("commit").expect("a change");
    ChangeEnvelope::sign(doc, &change, key)
}
