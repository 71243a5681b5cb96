//! The engine thread's loop: take waiting commands, carry them out, flush
//! once, then acknowledge the writes.

use passerelle_protocol::book::CertificateBook;
use passerelle_protocol::certificate::NodeCertificate;
use passerelle_protocol::ids::{CommuneId, NodeId};
use passerelle_protocol::keys::SecretKey;
use tokio::sync::mpsc;

use super::cache::DocCache;
use super::{Command, EngineError, MAX_BATCH, Reply};
use crate::identity::Identity;
use crate::store::{Store, StoreError, WriteOp};

/// A reply held until the batch's flush; told whether the flush failed.
type Deferred = Box<dyn FnOnce(Option<&StoreError>) + Send>;

fn defer<T: Send + 'static>(reply: Reply<T>, value: T) -> Deferred {
    Box::new(move |flush_error| {
        let _ = reply.send(match flush_error {
            None => Ok(value),
            Some(e) => Err(EngineError::Store(StoreError::Backend(format!("the write was not made durable: {e}")))),
        });
    })
}

/// State owned by the engine thread.
#[derive(Debug)]
pub(crate) struct Worker<S> {
    pub store: S,
    pub node_key: SecretKey,
    pub node_id: NodeId,
    pub certificate: NodeCertificate,
    pub commune: CommuneId,
    pub language: String,
    pub book: CertificateBook,
    pub cache: DocCache,
}

impl<S: Store> Worker<S> {
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
            language: identity.config.commune.language.clone(),
            book,
            cache: DocCache::new(identity.config.store.cached_documents),
        };
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
            if !deferred.is_empty() {
                let flushed = self.store.flush();
                if let Err(e) = &flushed {
                    tracing::error!(error = %e, "flush failed; dropping loaded documents");
                    self.cache.clear();
                }
                for reply in deferred {
                    reply(flushed.as_ref().err());
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
            Command::Update(id, req, reply) => match self.update(id, req) {
                Ok((view, wrote)) if wrote => deferred.push(defer(reply, view)),
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
            Command::Shutdown(_) => unreachable!("handled by the loop"),
        }
    }
}
