//! Wiring a node together: identity, store, engine thread, API server; and
//! taking it apart again on shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::oneshot;

use crate::api::{self, ApiState, types::NodeStatus};
use crate::engine::{self, EngineError, EngineHandle};
use crate::home::Home;
use crate::identity::{self, IdentityError};
use crate::net::NetHandle;
use crate::store::{SledStore, StoreError};

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The identity is missing or damaged.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// The store cannot be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The engine failed to start.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The network failed to start.
    #[error(transparent)]
    Net(#[from] crate::net::NetError),
    /// The API address cannot be bound.
    #[error("cannot listen on {addr}: {source} (change [api] listen in the configuration)")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// A run-time file cannot be written.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
}

/// A started node.
#[derive(Debug)]
pub struct RunningNode {
    /// Where the API listens.
    pub api_addr: SocketAddr,
    /// The engine, for in-process callers (tests, demo, benchmarks).
    pub engine: EngineHandle,
    /// The API token.
    pub token: Arc<str>,
    /// Login links and browser sessions of the API.
    pub logins: Arc<api::access::Logins>,
    /// The swarm task.
    pub net: NetHandle,
    net_task: tokio::task::JoinHandle<()>,
    home: Home,
    stop_api: oneshot::Sender<()>,
    api_task: tokio::task::JoinHandle<()>,
    engine_thread: std::thread::JoinHandle<()>,
}

fn io_err(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> NodeError + '_ {
    move |source| NodeError::Io { path: path.display().to_string(), source }
}

/// The API token in the home, created (mode 0600) on the first run.
fn api_token(home: &Home) -> Result<String, NodeError> {
    let path = home.api_token();
    match std::fs::read_to_string(&path) {
        Ok(t) if !t.trim().is_empty() => Ok(t.trim().to_owned()),
        _ => {
            let _ = std::fs::remove_file(&path);
            let token = hex::encode(crate::clock::random_bytes::<32>());
            identity::write_private(&path, format!("{token}\n").as_bytes())?;
            Ok(token)
        }
    }
}

/// Starts a node on `home`: opens its store, starts the engine and serves
/// the API. Must be called within a tokio runtime.
///
/// # Errors
/// [`NodeError`] saying what failed; nothing keeps running then.
pub async fn start(home: &Home) -> Result<RunningNode, NodeError> {
    let identity = identity::load(home)?;
    for path in [home.root().to_path_buf(), home.api_token()] {
        if path.exists() && identity::keep_private(&path)? {
            tracing::warn!(path = %path.display(), "others could read this: made it readable by the node's user only");
        }
    }
    let store = SledStore::open(&home.store())?;
    let (engine, engine_thread) = engine::spawn(store, &identity)?;
    let peers = engine.peers().await?;
    let records = peers.into_iter().map(|p| p.record).collect();
    let (net, net_task) = match crate::net::spawn(&identity, engine.clone(), records).await {
        Ok(n) => n,
        Err(e) => {
            engine.shutdown().await;
            return Err(e.into());
        }
    };
    let token: Arc<str> = api_token(home)?.into();
    let listener = match tokio::net::TcpListener::bind(identity.config.api.listen).await {
        Ok(l) => l,
        Err(source) => {
            net.shutdown().await;
            engine.shutdown().await;
            return Err(NodeError::Bind { addr: identity.config.api.listen, source });
        }
    };
    let api_addr =
        listener.local_addr().map_err(|source| NodeError::Bind { addr: identity.config.api.listen, source })?;
    let status = NodeStatus {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        name: identity.config.commune.name.clone(),
        country: identity.config.commune.country.clone(),
        commune_id: identity.commune_id(),
        node_id: identity.node_id(),
        api_addr: api_addr.to_string(),
        uptime_s: 0,
        documents: Default::default(),
        statuses: Default::default(),
        peer_id: String::new(),
        listen: Vec::new(),
        reachability: String::new(),
        peers_connected: 0,
        network: None,
        role: None,
    };
    let logins = Arc::new(api::access::Logins::new(api_addr.port()));
    let state = ApiState {
        engine: engine.clone(),
        net: net.clone(),
        token: token.clone(),
        logins: logins.clone(),
        event_streams: Arc::new(tokio::sync::Semaphore::new(api::MAX_EVENT_STREAMS)),
        hosts: identity.config.api.hosts.iter().map(|h| h.trim_end_matches('.').to_ascii_lowercase()).collect(),
        status: Arc::new(status),
        started: Instant::now(),
    };
    let (stop_api, stopped) = oneshot::channel::<()>();
    let app = api::router(state);
    let api_task = tokio::spawn(async move {
        let served = axum::serve(listener, app).with_graceful_shutdown(async {
            let _ = stopped.await;
        });
        if let Err(e) = served.await {
            tracing::error!(error = %e, "the API server failed");
        }
    });
    // Written last, so a CLI that finds the file finds a node ready to answer.
    let addr_path = home.api_addr();
    let tmp = addr_path.with_extension("addr.tmp");
    std::fs::write(&tmp, format!("{api_addr}\n")).map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, &addr_path).map_err(io_err(&addr_path))?;
    tracing::info!(commune = %identity.config.commune.name, node = %identity.node_id().short(), api = %api_addr, "node started");
    Ok(RunningNode {
        api_addr,
        engine,
        token,
        logins,
        net,
        net_task,
        home: home.clone(),
        stop_api,
        api_task,
        engine_thread,
    })
}

impl RunningNode {
    /// A one-time link that opens a browser session on this node's pages,
    /// going on to `next` (a path such as `/?lang=en`).
    pub fn login_url(&self, next: &str) -> String {
        let (code, _) = self.logins.new_link(crate::clock::now_ms());
        let next: String = next
            .chars()
            .map(|c| match c {
                '?' | '&' | '=' | '%' | '#' | '+' => format!("%{:02X}", c as u32),
                c if c.is_ascii_graphic() => c.to_string(),
                c => c.to_string().bytes().map(|b| format!("%{b:02X}")).collect(),
            })
            .collect();
        format!("http://{}/login?code={code}&next={next}", self.api_addr)
    }

    /// Stops gracefully: no new API requests, those under way finish, the
    /// engine flushes and stops, `api.addr` is removed.
    pub async fn shutdown(self) {
        tracing::info!("shutting down");
        let _ = self.stop_api.send(());
        let _ = self.api_task.await;
        self.net.shutdown().await;
        let _ = self.net_task.await;
        self.engine.shutdown().await;
        let _ = tokio::task::spawn_blocking(move || self.engine_thread.join()).await;
        let _ = std::fs::remove_file(self.home.api_addr());
        tracing::info!("stopped");
    }
}

/// Resolves at the first SIGINT or SIGTERM.
///
/// # Panics
/// If signal handlers cannot be installed, which only happens when the
/// process is out of resources at start-up.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Runs a node until SIGINT or SIGTERM, then shuts it down.
///
/// # Errors
/// [`NodeError`] if it cannot start.
pub async fn run(home: &Home) -> Result<(), NodeError> {
    let node = start(home).await?;
    shutdown_signal().await;
    node.shutdown().await;
    Ok(())
}

/// How long a join waits for the coordinator's node to answer.
pub const JOIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Why a join did not complete.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// The engine refused or the coordinator's node answered with a refusal.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The node is stopping.
    #[error(transparent)]
    Net(#[from] crate::net::NetError),
    /// The invitation names no usable address.
    #[error("the invitation names no address of the coordinator's node")]
    NoAddress,
    /// The coordinator's node did not answer in time.
    #[error(
        "the coordinator's node {0} did not answer within {secs} s: is it running and reachable? (this node keeps dialling it)",
        secs = JOIN_TIMEOUT.as_secs()
    )]
    Timeout(String),
}

/// Redeems an invitation: dials the issuing node, sends the join, and waits
/// (at most [`JOIN_TIMEOUT`]) until the roster it answers is durable here.
///
/// # Errors
/// [`JoinError`].
pub async fn join(
    engine: &EngineHandle,
    net: &NetHandle,
    invitation: passerelle_protocol::network::Invitation,
) -> Result<crate::views::NetworkView, JoinError> {
    let addrs: Vec<libp2p::Multiaddr> = invitation.addrs.iter().filter_map(|a| a.parse().ok()).collect();
    if addrs.is_empty() {
        return Err(JoinError::NoAddress);
    }
    let issuer = invitation.issuer_node;
    let listen = net.info().await?.listen;
    let engine = engine.clone();
    let answer = tokio::spawn(async move { engine.join(invitation, listen).await });
    net.dial(issuer, addrs).await?;
    match tokio::time::timeout(JOIN_TIMEOUT, answer).await {
        Ok(Ok(result)) => Ok(result?),
        Ok(Err(_)) => Err(JoinError::Engine(EngineError::Stopped)),
        Err(_) => Err(JoinError::Timeout(issuer.short())),
    }
}

/// Re-checks a stopped node's store: every signature, as `verify` does on a
/// running node, and every record's encoding.
///
/// # Errors
/// [`NodeError`]: no identity, or the store is in use (the node runs) or
/// cannot be opened.
pub async fn verify_stopped(home: &Home) -> Result<crate::views::VerifyReport, NodeError> {
    let identity = identity::load(home)?;
    let store = SledStore::open(&home.store())?;
    let (engine, engine_thread) = engine::spawn(store, &identity)?;
    let report = engine.verify().await;
    engine.shutdown().await;
    let _ = tokio::task::spawn_blocking(move || engine_thread.join()).await;
    Ok(report?)
}

/// Sets a stopped node's damaged records aside (`passerelle repair`; see
/// `store::repair`).
///
/// # Errors
/// [`NodeError`]: the store is in use (the node runs) or cannot be read.
pub fn repair_stopped(home: &Home) -> Result<crate::store::RepairReport, NodeError> {
    let store = SledStore::open(&home.store())?;
    Ok(store.repair()?)
}
