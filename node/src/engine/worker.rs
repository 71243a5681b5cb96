//! The engine thread's loop: take waiting commands, carry them out, flush
//! once, then acknowledge the writes.

use passerelle_protocol::book::CertificateBook;
use passerelle_protocol::certificate::NodeCertificate;
use passerelle_protocol::ids::{CommuneId, NodeId};
use passerelle_protocol::keys::SecretKey;
use tokio::sync::mpsc;

use super::cache::DocCache;
use super::sync::SyncState;
use super::{Command, EngineError, MAX_BATCH, NetworkCommand, Reply};
use crate::identity::Identity;
use crate::store::{Store, StoreError, WriteOp};

/// A reply held until the batch's flush; told whether the flush failed.
pub(crate) type Deferred = Box<dyn FnOnce(Option<&StoreError>) + Send>;

pub(crate) fn defer<T: Send + 'static>(reply: Reply<T>, value: T) -> Deferred {
    Box::new(move |flush_error| {
        let _ = reply.send(match flush_error {
            None => Ok(value),
            Some(e) => Err(EngineError::Store(StoreError::Backend(format!("the write was not made durable: {e}")))),
        });
    })
}

/// Replies held by the engine until the next flush.
#[derive(Default)]
pub(crate) struct Later(pub Vec<Deferred>);

impl std::fmt::Debug for Later {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Later({} replies)", self.0.len())
    }
}

/// State owned by the engine thread.
#[derive(Debug)]
pub(crate) struct Worker<S> {
    pub store: S,
    pub node_key: SecretKey,
    pub node_id: NodeId,
    pub certificate: NodeCertificate,
    pub commune: CommuneId,
    pub commune_key: SecretKey,
    pub commune_name: String,
    pub country: String,
    pub language: String,
    /// The network's roster; `None` until this node founds or joins one.
    pub roster: Option<passerelle_protocol::network::Roster>,
    /// Whether to link on its own with partners and same-country members.
    pub auto_links: bool,
    /// Relays are configured: a member without a contact address can still
    /// be dialled, through them.
    pub uses_relays: bool,
    /// The per-peer send budget (bytes/s), which also bounds frame sizes.
    pub peer_budget: Option<u64>,
    /// Counters since start, for `GET /metrics`.
    pub metrics: super::EngineMetrics,
    /// Heartbeats known here.
    pub heartbeats: super::heartbeats::Heartbeats,
    /// When the engine started (uptime in heartbeats).
    pub started: std::time::Instant,
    /// Live events for `GET /v1/events`.
    pub events: Option<tokio::sync::broadcast::Sender<super::LiveEvent>>,
    /// A join waiting for the issuing node's answer.
    pub joining: Option<super::membership::Joining>,
    /// Replies to send once the current batch is durable (from events).
    pub later: Later,
    pub book: CertificateBook,
    pub cache: DocCache,
    pub sync: SyncState,
}

impl<S: Store> Worker<S> {
    /// Tells live views something changed (no subscriber: nothing happens).
    pub(crate) fn live(&self, kind: &'static str, id: String) {
        if let Some(events) = &self.events {
            let _ = events.send(super::LiveEvent { kind, id });
        }
    }

    pub fn new(store: S, identity: &Identity) -> Result<Self, EngineError> {
        let mut book = CertificateBook::new();
        for cert in store.certificates()? {
            if let Err(e) = book.insert(cert.clone()) {
                tracing::warn!(node = %cert.node.short(), error = %e, "ignoring a stored certificate that does not verify");
            }
        }
        if book.insert(identity.certificate.clone()).unwrap_or(false) {
            store.write(vec![WriteOp::Certificate(identity.certificate.clone())])?;
            store.flush()?;
        }
        let mut worker = Self {
            store,
            node_key: identity.node_key.clone(),
            node_id: identity.node_id(),
            certificate: identity.certificate.clone(),
            commune: identity.commune_id(),
            commune_key: identity.commune_key.clone(),
            commune_name: identity.config.commune.name.clone(),
            country: identity.config.commune.country.clone(),
            roster: None,
            joining: None,
            auto_links: identity.config.network.auto_links,
            uses_relays: !identity.config.network.relays.is_empty(),
            peer_budget: identity.config.network.peer_budget_bytes_per_s.filter(|b| *b > 0),
            metrics: super::EngineMetrics::default(),
            heartbeats: super::heartbeats::Heartbeats::default(),
            started: std::time::Instant::now(),
            events: None,
            later: Later::default(),
            language: identity.config.commune.language.clone(),
            book,
            cache: DocCache::new(identity.config.store.cached_documents),
            sync: SyncState::default(),
        };
        worker.roster = super::membership::load_roster(&worker.store)?;
        for meta in worker.store.metas()? {
            worker.sync.index.set(meta.id, meta.audience(), meta.head_bytes());
        }
        for peer in worker.store.peers()? {
            worker.sync.peers.insert(peer.node, peer);
        }
        for h in worker.store.heartbeats()? {
            worker.heartbeats.latest.insert(h.beat.heartbeat.node(), h);
        }
        worker.ensure_profile(&identity.config.commune.name, &identity.config.commune.country)?;
        Ok(worker)
    }

    /// Carries out commands until shutdown or until every handle is dropped.
    pub fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        tracing::debug!("engine started");
        while let Some(first) = rx.blocking_recv() {
            let mut commands = vec![first];
            while commands.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(c) => commands.push(c),
                    Err(_) => break,
                }
            }
            let mut deferred: Vec<Deferred> = Vec::new();
            let mut shutdown = None;
            for command in commands {
                if let Command::Shutdown(ack) = command {
                    shutdown = Some(ack);
                    break;
                }
                self.handle(command, &mut deferred);
            }
            deferred.append(&mut self.later.0);
            let peer_ops = self.dirty_peer_ops();
            if !peer_ops.is_empty() {
                if let Err(e) = self.store.write(peer_ops) {
                    tracing::warn!(error = %e, "peer records not saved");
                }
                self.sync.wrote = true;
            }
            if !deferred.is_empty() || std::mem::take(&mut self.sync.wrote) {
                let flushed = self.store.flush();
                if let Err(e) = &flushed {
                    tracing::error!(error = %e, "flush failed; dropping loaded documents");
                    self.cache.clear();
                }
                let ok = flushed.is_ok();
                for reply in deferred {
                    reply(flushed.as_ref().err());
                }
                if ok {
                    self.after_flush();
                } else {
                    self.sync.announcements.clear();
                    self.sync.roster_news.clear();
                }
            }
            if let Some(ack) = shutdown {
                if let Err(e) = self.store.flush() {
                    tracing::error!(error = %e, "final flush failed");
                }
                let _ = ack.send(());
                tracing::debug!("engine stopped");
                return;
            }
        }
        let _ = self.store.flush();
    }

    fn handle(&mut self, command: Command, deferred: &mut Vec<Deferred>) {
        match command {
            Command::Create(req, reply) => match self.create(req) {
                Ok(view) => deferred.push(defer(reply, view)),
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            },
            Command::Update(id, req, reply) => match self.update(id, req.clone()) {
                Ok((view, wrote)) if wrote => {
                    if let Err(e) = self.mirror_to_relays(id, &req) {
                        tracing::warn!(doc = %id.short(), error = %e, "the change did not reach the request's relays");
                    }
                    deferred.push(defer(reply, view));
                }
                other => {
                    let _ = reply.send(other.map(|(v, _)| v));
                }
            },
            Command::Ingest(batch, reply) => match self.ingest(batch) {
                Ok(report) => deferred.push(defer(reply, report)),
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            },
            Command::Get(id, lang, reply) => {
                let _ = reply.send(self.get(id, lang));
            }
            Command::List(filter, reply) => {
                let _ = reply.send(self.list(&filter));
            }
            Command::History(id, reply) => {
                let _ = reply.send(self.history(id));
            }
            Command::Verify(reply) => {
                let _ = reply.send(self.verify());
            }
            Command::Counts(reply) => {
                let _ = reply.send(self.counts());
            }
            Command::NetworkState(reply) => {
                let _ = reply.send(self.network_state());
            }
            Command::Heartbeats(reply) => {
                let _ = reply.send(Ok(self.heartbeat_views()));
            }
            Command::Metrics(reply) => {
                let snapshot = self.counts().map(|counts| super::MetricsSnapshot {
                    counters: self.metrics.clone(),
                    sessions_ready: self
                        .sync
                        .sessions
                        .values()
                        .filter(|s| s.phase() == passerelle_protocol::sync::session::Phase::Ready)
                        .count() as u64,
                    peers: self.peer_views(),
                    counts,
                });
                let _ = reply.send(snapshot);
            }
            Command::Net(event) => {
                if let Err(e) = self.on_net(event) {
                    tracing::error!(error = %e, "network event failed");
                }
            }
            Command::AttachNet(outbox) => self.sync.net = Some(outbox),
            Command::Peers(reply) => {
                let _ = reply.send(Ok(self.peer_views()));
            }
            Command::AddPeer(node, addrs, reply) => match self.add_peer(node, addrs) {
                Ok(view) => deferred.push(defer(reply, view)),
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            },
            Command::RemovePeer(node, reply) => match self.remove_peer(node) {
                Ok(known) => deferred.push(defer(reply, known)),
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            },
            Command::Network(command) => self.handle_network(command, deferred),
            Command::Pending(node, reply) => {
                let _ = reply.send(self.pending_for(node));
            }
            Command::Relay(id, note, reply) => match self.relay_request(id, note) {
                Ok(view) => deferred.push(defer(reply, view)),
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            },
            Command::ExportBundle(recipient, all, reply) => {
                let _ = reply.send(self.export_bundle(&recipient, all));
            }
            Command::ImportBundle(bytes, reply) => match self.import_bundle(&bytes) {
                Ok(report) => deferred.push(defer(reply, report)),
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            },
            Command::Accept(request, offer, reply) => match self.accept_offer(request, offer) {
                Ok(view) => deferred.push(defer(reply, view)),
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            },
            Command::Shutdown(_) => unreachable!("handled by the loop"),
        }
    }
}

impl<S: Store> Worker<S> {
    fn handle_network(&mut self, command: NetworkCommand, deferred: &mut Vec<Deferred>) {
        fn durable<T: Send + 'static>(deferred: &mut Vec<Deferred>, reply: Reply<T>, result: Result<T, EngineError>) {
            match result {
                Ok(v) => deferred.push(defer(reply, v)),
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            }
        }
        match command {
            NetworkCommand::Create(name, reply) => durable(deferred, reply, self.create_network(name)),
            NetworkCommand::Show(reply) => {
                let _ = reply.send(self.network_view());
            }
            NetworkCommand::Invite(req, addrs, reply) => durable(deferred, reply, self.invite(req, addrs)),
            NetworkCommand::Join(invitation, addrs, reply) => {
                if let Err((e, reply)) = self.begin_join(invitation, addrs, reply) {
                    let _ = reply.send(Err(e));
                }
            }
            NetworkCommand::Partner(commune, action, reply) => {
                durable(deferred, reply, self.partner(&commune, &action));
            }
            NetworkCommand::Revoke(node, reply) => durable(deferred, reply, self.revoke(node)),
            NetworkCommand::Remove(commune, reply) => durable(deferred, reply, self.remove_member(&commune)),
        }
    }
}
