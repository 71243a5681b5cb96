//! The document engine: one thread that owns the store, the loaded
//! Automerge documents and the sync sessions, and carries out commands from
//! the API and events from the swarm task.
//!
//! Commands arrive on a bounded channel with a oneshot reply. The thread
//! takes whatever commands are waiting (up to [`MAX_BATCH`]), carries them
//! out, makes all their writes durable with one flush, and only then replies
//! to the writers: a write is acknowledged once it is on disk, and a burst of
//! writes costs one flush. Sled and Automerge work never runs on the async
//! workers.
//!
//! Documents are loaded on demand (latest snapshot, then later changes in
//! one batch) and the least recently used are evicted past the configured
//! cache size, so memory does not grow with the number of documents.

use std::thread::JoinHandle;

use passerelle_protocol::certificate::NodeCertificate;
use passerelle_protocol::envelope::ChangeEnvelope;
use passerelle_protocol::header::SignedHeader;
use passerelle_protocol::ids::{DocId, NodeId};
use passerelle_protocol::schema::FieldError;
use tokio::sync::{mpsc, oneshot};

use crate::identity::Identity;
use crate::net::NetOut;
use crate::store::{Store, StoreError};
use crate::views::{
    CreateDoc, DocSummary, DocView, HistoryEntry, InviteRequest, InviteView, NetworkView, UpdateDoc, VerifyReport,
};
use passerelle_protocol::network::Invitation;

mod bundles;
mod cache;
pub(crate) mod docs;
mod heartbeats;
mod ingest;
mod membership;
mod metrics;
mod observatory;
mod peers;
mod refusals;
mod replication;
mod verify;
mod worker;
mod workflow;

pub use crate::views::PeerView;

pub use bundles::{BundleSummary, ImportReport};
pub use ingest::IngestReport;
pub use metrics::{EngineMetrics, MetricsSnapshot};

/// Commands waiting for the engine; senders wait (back-pressure) when full.
pub const ENGINE_INBOX: usize = 256;
/// Most commands carried out between two flushes.
pub const MAX_BATCH: usize = 128;

/// Errors the engine reports.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// No such document.
    #[error("no document {0}")]
    NotFound(DocId),
    /// The input was refused.
    #[error(transparent)]
    Invalid(#[from] FieldError),
    /// This commune may not change the document.
    #[error("this commune is not a writer of document {0}")]
    NotAWriter(DocId),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored document cannot be loaded.
    #[error("document {doc} is damaged in the store: {reason} (run `passerelle verify`)")]
    Damaged {
        /// The document.
        doc: DocId,
        /// What is wrong.
        reason: String,
    },
    /// The engine has stopped.
    #[error("the node is shutting down")]
    Stopped,
    /// The operation needs a network and this node is in none.
    #[error(
        "this node is not in a network yet: found one with `passerelle network create` or join one with `passerelle join <token>`"
    )]
    NoNetwork,
    /// The operation is not allowed to this commune (its role, or the target).
    #[error("{0}")]
    Forbidden(String),
    /// The operation conflicts with the current state.
    #[error("{0}")]
    Conflict(String),
}

type Reply<T> = oneshot::Sender<Result<T, EngineError>>;

/// Filters of a document list.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    /// Only this kind.
    pub kind: Option<String>,
    /// Only this status.
    pub status: Option<String>,
    /// Only documents owned by this commune (hex id).
    pub owner: Option<String>,
}

/// Counts of documents by kind and by kind and status.
pub type Counts = (
    std::collections::BTreeMap<String, u64>,
    std::collections::BTreeMap<String, std::collections::BTreeMap<String, u64>>,
);

/// Counts of the documents a store holds, by kind and by kind and status.
pub(crate) fn counts_of<S: Store>(store: &S) -> Result<Counts, EngineError> {
    let mut by_kind = std::collections::BTreeMap::new();
    let mut by_status: std::collections::BTreeMap<String, std::collections::BTreeMap<String, u64>> =
        std::collections::BTreeMap::new();
    for m in store.metas()? {
        *by_kind.entry(m.kind.clone()).or_insert(0) += 1;
        if let Some(s) = m.status {
            *by_status.entry(m.kind).or_default().entry(s).or_insert(0) += 1;
        }
    }
    Ok((by_kind, by_status))
}

/// What the engine can be asked.
#[derive(Debug)]
pub(crate) enum Command {
    Create(CreateDoc, Reply<DocView>),
    Update(DocId, UpdateDoc, Reply<DocView>),
    Get(DocId, Option<String>, Reply<DocView>),
    List(ListFilter, Reply<Vec<DocSummary>>),
    History(DocId, Reply<Vec<HistoryEntry>>),
    Verify(Reply<VerifyReport>),
    Counts(Reply<Counts>),
    Metrics(Reply<MetricsSnapshot>),
    Heartbeats(Reply<Vec<crate::views::HeartbeatView>>),
    NetworkState(Reply<crate::views::NetworkState>),
    Ingest(IngestBatch, Reply<IngestReport>),
    Net(NetEvent),
    AttachNet(mpsc::Sender<NetOut>),
    Peers(Reply<Vec<PeerView>>),
    AddPeer(NodeId, Vec<String>, Reply<PeerView>),
    RemovePeer(NodeId, Reply<bool>),
    Pending(NodeId, Reply<Vec<crate::views::PendingDoc>>),
    Network(NetworkCommand),
    Relay(DocId, Option<String>, Reply<DocView>),
    Accept(DocId, DocId, Reply<DocView>),
    ExportBundle(String, bool, Reply<(Vec<u8>, BundleSummary)>),
    ImportBundle(Vec<u8>, Reply<ImportReport>),
    Shutdown(oneshot::Sender<()>),
}

/// Membership commands.
#[derive(Debug)]
pub(crate) enum NetworkCommand {
    Create(String, Vec<String>, Reply<NetworkView>),
    Show(Reply<NetworkView>),
    Invite(InviteRequest, Vec<String>, Reply<InviteView>),
    Join(Invitation, Vec<String>, Reply<NetworkView>),
    Partner(String, String, Reply<NetworkView>),
    Revoke(NodeId, Reply<NetworkView>),
    Remove(String, Reply<NetworkView>),
}

/// The engine could not take an event now (inbox full, or stopped).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineBusy;

/// What the swarm task tells the engine.
#[derive(Debug)]
pub enum NetEvent {
    /// A first connection with a peer came up.
    Connected {
        /// The peer.
        node: NodeId,
        /// Its address.
        addr: String,
    },
    /// The last connection with a peer closed.
    Disconnected {
        /// The peer.
        node: NodeId,
        /// Why, if known.
        error: Option<String>,
    },
    /// Dialling a configured peer failed.
    DialFailed {
        /// The peer.
        node: NodeId,
        /// Why.
        error: String,
    },
    /// A sync message arrived.
    Message {
        /// From whom.
        from: NodeId,
        /// The decoded message (boxed: a hello is large beside the other events).
        msg: Box<passerelle_protocol::sync::message::SyncMessage>,
        /// Its size on the stream.
        bytes: usize,
    },
    /// A frame from a peer was refused by the swarm task (malformed, oversized).
    Refused {
        /// From whom.
        from: NodeId,
        /// Why.
        reason: String,
    },
    /// The delivery rate measured towards a peer changed: frames for it
    /// are sized to take about a second.
    LinkRate {
        /// The peer.
        node: NodeId,
        /// Bytes per second it acknowledged.
        bytes_per_s: u64,
    },
    /// The peer acknowledged a tagged frame (part of a transfer).
    Delivered {
        /// The peer.
        node: NodeId,
        /// The frame's tag.
        tag: u64,
    },
    /// A tagged frame could not be delivered (the request failed).
    Lost {
        /// The peer.
        node: NodeId,
        /// The frame's tag.
        tag: u64,
    },
    /// Time passes: the replica core starts what is due (anti-entropy
    /// rounds, heartbeats).
    Tick,
}

/// Signed material received from elsewhere, to verify and store.
#[derive(Debug, Clone, Default)]
pub struct IngestBatch {
    /// Certificates of node keys the changes may be signed by.
    pub certificates: Vec<NodeCertificate>,
    /// Headers of documents the changes belong to.
    pub headers: Vec<SignedHeader>,
    /// The changes.
    pub changes: Vec<ChangeEnvelope>,
    /// The peer they came from.
    pub from: Option<NodeId>,
}

/// A cloneable handle to the engine thread.
#[derive(Debug, Clone)]
pub struct EngineHandle {
    tx: mpsc::Sender<Command>,
    events: tokio::sync::broadcast::Sender<LiveEvent>,
}

/// Something changed that a live view (the dashboard) may want to show:
/// sent to `GET /v1/events` subscribers after it is durable.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LiveEvent {
    /// `doc` (a document changed), `heartbeat` (a node's status arrived)
    /// or `peer` (a connection came up or went down).
    pub kind: &'static str,
    /// The document or node id.
    pub id: String,
}

/// Live events kept for a subscriber that reads slowly; beyond, it is told
/// it lagged.
pub const LIVE_EVENTS: usize = 256;

impl EngineHandle {
    /// Live events from now on.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<LiveEvent> {
        self.events.subscribe()
    }

    async fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, EngineError> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(make(tx)).await.map_err(|_| EngineError::Stopped)?;
        rx.await.map_err(|_| EngineError::Stopped)?
    }

    /// Creates a document; resolves once it is durable.
    /// Cancel-safe: a cancelled call may still have created the document.
    ///
    /// # Errors
    /// [`EngineError::Invalid`] for bad input, store errors.
    pub async fn create(&self, req: CreateDoc) -> Result<DocView, EngineError> {
        self.ask(|r| Command::Create(req, r)).await
    }

    /// Changes a document's fields or status; resolves once durable.
    ///
    /// # Errors
    /// [`EngineError::NotFound`], [`EngineError::Invalid`], [`EngineError::NotAWriter`].
    pub async fn update(&self, id: DocId, req: UpdateDoc) -> Result<DocView, EngineError> {
        self.ask(|r| Command::Update(id, req, r)).await
    }

    /// One document, its title in `lang` if given.
    ///
    /// # Errors
    /// [`EngineError::NotFound`], [`EngineError::Damaged`].
    pub async fn get(&self, id: DocId, lang: Option<String>) -> Result<DocView, EngineError> {
        self.ask(|r| Command::Get(id, lang, r)).await
    }

    /// Documents matching a filter, most recently changed first.
    ///
    /// # Errors
    /// Store errors.
    pub async fn list(&self, filter: ListFilter) -> Result<Vec<DocSummary>, EngineError> {
        self.ask(|r| Command::List(filter, r)).await
    }

    /// A document's changes in the order this node stored them.
    ///
    /// # Errors
    /// [`EngineError::NotFound`].
    pub async fn history(&self, id: DocId) -> Result<Vec<HistoryEntry>, EngineError> {
        self.ask(|r| Command::History(id, r)).await
    }

    /// Re-checks every stored header and change signature.
    ///
    /// # Errors
    /// Store errors (a bad record is a failure in the report, not an error).
    pub async fn verify(&self) -> Result<VerifyReport, EngineError> {
        self.ask(Command::Verify).await
    }

    /// Document counts by kind and status.
    ///
    /// # Errors
    /// Store errors.
    pub async fn counts(&self) -> Result<Counts, EngineError> {
        self.ask(Command::Counts).await
    }

    /// The latest heartbeat of every node heard of, newest first.
    ///
    /// # Errors
    /// [`EngineError::Stopped`].
    pub async fn heartbeats(&self) -> Result<Vec<crate::views::HeartbeatView>, EngineError> {
        self.ask(Command::Heartbeats).await
    }

    /// The network's state as this node knows it.
    ///
    /// # Errors
    /// Store errors.
    pub async fn network_state(&self) -> Result<crate::views::NetworkState, EngineError> {
        self.ask(Command::NetworkState).await
    }

    /// The engine's counters, peers and document counts, for `GET /metrics`.
    ///
    /// # Errors
    /// Store errors.
    pub async fn metrics(&self) -> Result<MetricsSnapshot, EngineError> {
        self.ask(Command::Metrics).await
    }

    /// Verifies and stores signed material from elsewhere; resolves once
    /// what was accepted is durable.
    ///
    /// # Errors
    /// Store errors; refused items are listed in the report.
    pub async fn ingest(&self, batch: IngestBatch) -> Result<IngestReport, EngineError> {
        self.ask(|r| Command::Ingest(batch, r)).await
    }

    /// Hands a network event to the engine without waiting: the swarm task
    /// must never block on the engine.
    ///
    /// # Errors
    /// [`EngineBusy`] when the engine's inbox is full or it has stopped; the
    /// event is dropped.
    pub fn net_event(&self, event: NetEvent) -> Result<(), EngineBusy> {
        self.tx.try_send(Command::Net(event)).map_err(|_| EngineBusy)
    }

    /// Like [`EngineHandle::net_event`], giving the event back when the
    /// engine cannot take it now, so the caller can try again later.
    ///
    /// # Errors
    /// The event, when the inbox is full or the engine stopped.
    pub fn net_event_or_back(&self, event: NetEvent) -> Result<(), Box<NetEvent>> {
        self.tx.try_send(Command::Net(event)).map_err(|e| match e.into_inner() {
            Command::Net(event) => Box::new(event),
            _ => unreachable!("a net event was sent"),
        })
    }

    /// Gives the engine the swarm task's outbox.
    ///
    /// # Errors
    /// [`EngineError::Stopped`].
    pub async fn attach_net(&self, outbox: mpsc::Sender<NetOut>) -> Result<(), EngineError> {
        self.tx.send(Command::AttachNet(outbox)).await.map_err(|_| EngineError::Stopped)
    }

    /// Every known peer with its sync state.
    ///
    /// # Errors
    /// [`EngineError::Stopped`].
    pub async fn peers(&self) -> Result<Vec<PeerView>, EngineError> {
        self.ask(Command::Peers).await
    }

    /// Records a peer to dial at `addrs` (persisted).
    ///
    /// # Errors
    /// [`EngineError::Invalid`] for an address that is not a multiaddr.
    pub async fn add_peer(&self, node: NodeId, addrs: Vec<String>) -> Result<PeerView, EngineError> {
        self.ask(|r| Command::AddPeer(node, addrs, r)).await
    }

    /// The documents a peer has not acknowledged, most recent first.
    ///
    /// # Errors
    /// [`EngineError::Invalid`] for an unknown peer.
    pub async fn pending(&self, node: NodeId) -> Result<Vec<crate::views::PendingDoc>, EngineError> {
        self.ask(|r| Command::Pending(node, r)).await
    }

    /// Forgets a peer. Returns whether it was known.
    ///
    /// # Errors
    /// [`EngineError::Stopped`].
    pub async fn remove_peer(&self, node: NodeId) -> Result<bool, EngineError> {
        self.ask(|r| Command::RemovePeer(node, r)).await
    }

    /// Relays a request addressed to this commune to the network (if the
    /// requester consented): returns the relay, a network request.
    ///
    /// # Errors
    /// [`EngineError::Conflict`] without consent or when already relayed;
    /// [`EngineError::Forbidden`] when the request is not addressed here.
    pub async fn relay(&self, request: DocId, note: Option<String>) -> Result<DocView, EngineError> {
        self.ask(|r| Command::Relay(request, note, r)).await
    }

    /// Accepts an offer answering one of this commune's requests (or a
    /// relay of it): the offer is accepted, the request and its relays answered.
    ///
    /// # Errors
    /// [`EngineError::Forbidden`] unless this commune owns the request; bad ids.
    pub async fn accept(&self, request: DocId, offer: DocId) -> Result<DocView, EngineError> {
        self.ask(|r| Command::Accept(request, offer, r)).await
    }

    /// A signed bundle of what `recipient` (a member: id, prefix or name)
    /// lacks as far as this node knows, or everything it may hold with `all`.
    ///
    /// # Errors
    /// Unknown member, no network.
    pub async fn export_bundle(&self, recipient: String, all: bool) -> Result<(Vec<u8>, BundleSummary), EngineError> {
        self.ask(|r| Command::ExportBundle(recipient, all, r)).await
    }

    /// Verifies a bundle and applies it like a sync; resolves once durable.
    ///
    /// # Errors
    /// [`EngineError::Invalid`] for a bundle that is damaged, altered, or
    /// for another commune or network.
    pub async fn import_bundle(&self, bytes: Vec<u8>) -> Result<ImportReport, EngineError> {
        self.ask(|r| Command::ImportBundle(bytes, r)).await
    }

    /// Founds a network with this commune as its coordinator, reachable
    /// at `addrs` (the founder's contact addresses in the roster).
    ///
    /// # Errors
    /// [`EngineError::Conflict`] when the node is already in a network.
    pub async fn create_network(&self, name: String, addrs: Vec<String>) -> Result<NetworkView, EngineError> {
        self.ask(|r| Command::Network(NetworkCommand::Create(name, addrs, r))).await
    }

    /// The network: members, partnerships, revocations.
    ///
    /// # Errors
    /// [`EngineError::NoNetwork`].
    pub async fn network(&self) -> Result<NetworkView, EngineError> {
        self.ask(|r| Command::Network(NetworkCommand::Show(r))).await
    }

    /// Issues an invitation redeemable at this node (listening at `addrs`).
    ///
    /// # Errors
    /// [`EngineError::Forbidden`] unless this commune is a coordinator; bad input.
    pub async fn invite(&self, req: InviteRequest, addrs: Vec<String>) -> Result<InviteView, EngineError> {
        self.ask(|r| Command::Network(NetworkCommand::Invite(req, addrs, r))).await
    }

    /// Redeems an invitation: resolves once the issuing node answered and
    /// the roster is durable here. The caller dials the issuing node.
    ///
    /// # Errors
    /// [`EngineError::Conflict`] when already in a network; the refusal's reason.
    pub async fn join(&self, invitation: Invitation, addrs: Vec<String>) -> Result<NetworkView, EngineError> {
        self.ask(|r| Command::Network(NetworkCommand::Join(invitation, addrs, r))).await
    }

    /// Proposes, accepts or ends a partnership with a member.
    ///
    /// # Errors
    /// Unknown member, same country, nothing to accept.
    pub async fn partner(&self, commune: String, action: String) -> Result<NetworkView, EngineError> {
        self.ask(|r| Command::Network(NetworkCommand::Partner(commune, action, r))).await
    }

    /// Revokes a node key (of this commune, or any as a coordinator).
    ///
    /// # Errors
    /// [`EngineError::Forbidden`].
    pub async fn revoke(&self, node: NodeId) -> Result<NetworkView, EngineError> {
        self.ask(|r| Command::Network(NetworkCommand::Revoke(node, r))).await
    }

    /// Removes a member (coordinators only).
    ///
    /// # Errors
    /// [`EngineError::Forbidden`].
    pub async fn remove_member(&self, commune: String) -> Result<NetworkView, EngineError> {
        self.ask(|r| Command::Network(NetworkCommand::Remove(commune, r))).await
    }

    /// Flushes and stops the engine thread; resolves when it has stopped.
    pub async fn shutdown(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Command::Shutdown(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

/// Starts the engine thread over `store`.
///
/// # Errors
/// Store errors while loading certificates or recording the node's own.
pub fn spawn<S: Store>(store: S, identity: &Identity) -> Result<(EngineHandle, JoinHandle<()>), EngineError> {
    let (tx, rx) = mpsc::channel(ENGINE_INBOX);
    let (events, _) = tokio::sync::broadcast::channel(LIVE_EVENTS);
    let mut worker = worker::Worker::new(store, identity)?;
    worker.events = Some(events.clone());
    let span = tracing::Span::current();
    let join = std::thread::Builder::new()
        .name("passerelle-engine".into())
        .spawn(move || {
            let _enter = span.enter();
            worker.run(rx);
        })
        .map_err(|e| EngineError::Store(StoreError::Backend(format!("cannot start the engine thread: {e}"))))?;
    Ok((EngineHandle { tx, events }, join))
}

#[cfg(test)]
mod tests;
