//! The engine thread's loop: take waiting commands, carry them out, flush
//! once, then acknowledge the writes.

use passerelle_protocol::book::CertificateBook;
use passerelle_protocol::certificate::NodeCertificate;
use passerelle_protocol::ids::{CommuneId, NodeId};
use passerelle_protocol::keys::SecretKey;
use passerelle_protocol::replica::{Announcement, Me, Persisted, Replica, ReplicaConfig};
use tokio::sync::mpsc;

use super::cache::DocCache;
use super::{Command, EngineError, MAX_BATCH, NetworkCommand, Reply};
use crate::clock;
use crate::identity::Identity;
use crate::net::NetOut;
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
    /// Counters since start, for `GET /metrics`.
    pub metrics: super::EngineMetrics,
    /// Live events for `GET /v1/events`.
    pub events: Option<tokio::sync::broadcast::Sender<super::LiveEvent>>,
    /// The caller of a join waiting for the issuing node's answer.
    pub joining: Option<Reply<crate::views::NetworkView>>,
    /// Replies to send once the current batch is durable (from events).
    pub later: Later,
    pub cache: DocCache,
    /// Every replication decision: the sans-IO core this engine drives.
    pub replica: Replica,
    /// The swarm task's inbox.
    pub net: Option<mpsc::Sender<NetOut>>,
    /// What this batch stored, to pass on once it is durable.
    pub announcements: Vec<Announcement>,
    /// Set when an event wrote to the store: the batch must flush.
    pub wrote: bool,
    /// Items refused before, and the refusal log's budget.
    pub refusals: super::refusals::Refusals,
    /// The roster whose members' nodes the swarm task last heard of (its
    /// relay server serves those).
    pub members_sent: Option<passerelle_protocol::sync::fingerprint::Fingerprint>,
}

impl<S: Store> Worker<S> {
    /// The engine's counters and the replica core's, together.
    pub(crate) fn counters(&self) -> super::EngineMetrics {
        let core = self.replica.counters();
        let mut all = self.metrics.clone();
        all.faults = core.faults;
        all.sessions_opened = core.sessions_opened;
        all.rounds_in_sync = core.rounds_in_sync;
        all.traffic = core.traffic;
        all.frames_sent = core.frames_sent;
        for (code, n) in &core.rejected {
            *all.rejected.entry(code.clone()).or_default() += n;
        }
        all
    }

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
        let network = &identity.config.network;
        let config = ReplicaConfig {
            anti_entropy_ms: network.anti_entropy_secs.max(1) * 1000,
            heartbeat_ms: network.heartbeat_secs.max(1) * 1000,
            auto_links: network.auto_links,
            uses_relays: !network.relays.is_empty(),
            peer_budget: network.peer_budget_bytes_per_s.filter(|b| *b > 0),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            seed: u64::from_le_bytes(clock::random_bytes()),
        };
        let me = Me {
            node_key: identity.node_key.clone(),
            certificate: identity.certificate.clone(),
            country: identity.config.commune.country.clone(),
        };
        let roster = super::membership::load_roster(&store)?;
        let stored = Persisted {
            roster,
            book,
            peers: store.peers()?,
            heartbeats: store.heartbeats()?,
            chains: store.pulse_chains()?,
        };
        let replica = Replica::new(me, config, clock::now_ms(), stored);
        let mut worker = Self {
            store,
            node_key: identity.node_key.clone(),
            node_id: identity.node_id(),
            certificate: identity.certificate.clone(),
            commune: identity.commune_id(),
            commune_key: identity.commune_key.clone(),
            commune_name: identity.config.commune.name.clone(),
            country: identity.config.commune.country.clone(),
            joining: None,
            metrics: super::EngineMetrics::default(),
            events: None,
            later: Later::default(),
            language: identity.config.commune.language.clone(),
            cache: DocCache::new(identity.config.store.cached_documents),
            replica,
            net: None,
            announcements: Vec::new(),
            wrote: false,
            refusals: Default::default(),
            members_sent: None,
        };
        for meta in worker.store.metas()? {
            let audience = worker.audience_of(&meta)?;
            worker.replica.doc_changed(meta.id, audience, meta.head_bytes(), meta.stored_ms);
        }
        worker.register_node_key()?;
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
                self.wrote = true;
            }
            if !deferred.is_empty() || std::mem::take(&mut self.wrote) {
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
                    self.announcements.clear();
                    self.replica.flush_failed();
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
                // Strangers are not worth a metric series each.
                let mut peers = self.peer_views();
                peers.retain(|p| self.replica.is_known_peer(&p.record.node));
                let snapshot = self.counts().map(|counts| super::MetricsSnapshot {
                    counters: self.counters(),
                    sessions_ready: self.replica.ready_peers().len() as u64,
                    peers,
                    counts,
                });
                let _ = reply.send(snapshot);
            }
            Command::Net(event) => self.on_net(event),
            Command::AttachNet(outbox) => self.net = Some(outbox),
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
            NetworkCommand::Create(name, addrs, reply) => durable(deferred, reply, self.create_network(name, addrs)),
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
