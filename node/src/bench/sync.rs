//! The sync benchmark (`passerelle bench sync`): two node processes on
//! loopback, node B reaching node A through a TCP proxy that counts every
//! byte both ways, running the shared workload's scenarios: catch-up, idle
//! re-sync, one-change latency. Prints JSON lines; never fails on a figure.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::{signed_workload_by, workload};
use passerelle_protocol::network::{Role, SignedStatement, Statement};

use crate::api::types::UpdateDoc;
use crate::client::ApiClient;
use crate::home::Home;
use crate::identity;
use crate::store::{SledStore, Store};

/// How long any one scenario may take before the benchmark gives up.
const SCENARIO_DEADLINE: Duration = Duration::from_secs(600);

/// One printed figure, in the shape of `BENCH.md`.
#[derive(Debug, Clone, Serialize)]
pub struct SyncFigure {
    /// Always "passerelle".
    pub system: &'static str,
    /// catch-up, idle-resync or one-change-latency.
    pub scenario: &'static str,
    /// Documents in the workload.
    pub n_docs: usize,
    /// Wall time in seconds (the median, for latency).
    pub wall_s: f64,
    /// Bytes through the TCP connection, both directions.
    pub bytes_total: u64,
    /// Peak resident memory of node A, MB.
    pub rss_a_mb: f64,
    /// Peak resident memory of node B, MB.
    pub rss_b_mb: f64,
}

/// Counts bytes crossing the proxy in both directions.
#[derive(Debug, Default)]
struct Counter(AtomicU64);

async fn pipe(mut from: tokio::net::tcp::OwnedReadHalf, mut to: tokio::net::tcp::OwnedWriteHalf, count: Arc<Counter>) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                count.0.fetch_add(n as u64, Ordering::Relaxed);
                if to.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown().await;
}

/// A loopback TCP proxy to `target` that counts bytes.
async fn proxy(target: std::net::SocketAddr, count: Arc<Counter>) -> std::io::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move {
        while let Ok((inbound, _)) = listener.accept().await {
            let Ok(outbound) = TcpStream::connect(target).await else { continue };
            let _ = inbound.set_nodelay(true);
            let _ = outbound.set_nodelay(true);
            let (ri, wi) = inbound.into_split();
            let (ro, wo) = outbound.into_split();
            tokio::spawn(pipe(ri, wo, count.clone()));
            tokio::spawn(pipe(ro, wi, count.clone()));
        }
    });
    Ok(port)
}

struct Proc {
    child: Child,
    home: Home,
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Proc {
    fn start(bin: &Path, home: &Home) -> Result<Self, Box<dyn std::error::Error>> {
        let _ = std::fs::remove_file(home.api_addr());
        let child = Command::new(bin)
            .args(["run", "--home"])
            .arg(home.root())
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::OpenOptions::new().create(true).append(true).open(home.root().join("node.log"))?)
            .spawn()?;
        let p = Self { child, home: home.clone() };
        wait("the node to answer", Duration::from_secs(60), Duration::from_millis(20), || {
            Ok(p.client()?.status().is_ok())
        })?;
        Ok(p)
    }

    fn client(&self) -> Result<ApiClient, Box<dyn std::error::Error>> {
        Ok(ApiClient::for_home(&self.home)?)
    }

    fn rss_mb(&self) -> f64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmHWM:"))
                    .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
            })
            .map_or(0.0, |kb| kb / 1024.0)
    }

    /// SIGTERM, then wait.
    fn stop(&mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let end = Instant::now() + Duration::from_secs(30);
        while Instant::now() < end {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait(
    what: &str,
    deadline: Duration,
    every: Duration,
    mut probe: impl FnMut() -> Result<bool, Box<dyn std::error::Error>>,
) -> Result<(), Box<dyn std::error::Error>> {
    let end = Instant::now() + deadline;
    loop {
        if probe().unwrap_or(false) {
            return Ok(());
        }
        if Instant::now() > end {
            return Err(format!("gave up waiting for {what} after {deadline:?}").into());
        }
        std::thread::sleep(every);
    }
}

fn heads_map(
    client: &ApiClient,
) -> Result<std::collections::BTreeMap<String, Vec<String>>, Box<dyn std::error::Error>> {
    Ok(client.list(Some("request"), None, None)?.into_iter().map(|d| (d.id.to_string(), d.heads)).collect())
}

/// Runs the three scenarios with `n_docs` documents, using the `passerelle`
/// binary at `bin` for the two nodes, and calls `emit` with each figure.
///
/// # Errors
/// When a node cannot be set up or a scenario does not complete.
pub async fn run(
    bin: PathBuf,
    n_docs: usize,
    mut emit: impl FnMut(&SyncFigure),
) -> Result<(), Box<dyn std::error::Error>> {
    let root =
        std::env::temp_dir().join(format!("passerelle-bench-sync-{}", hex::encode(crate::clock::random_bytes::<4>())));
    let a_home = Home::new(root.join("a"));
    let b_home = Home::new(root.join("b"));
    for (home, name, country) in [(&a_home, "Senneval", "BE"), (&b_home, "Tala-n-Asif", "MA")] {
        identity::init_with_listen(home, name, country, 0, Some(vec!["/ip4/127.0.0.1/tcp/0".into()]))?;
        // No periodic rounds: every round measured is one the scenario caused.
        let config = std::fs::read_to_string(home.config())?;
        std::fs::write(home.config(), config.replace("anti_entropy_secs = 30", "anti_entropy_secs = 86400"))?;
    }

    // Both nodes are members of one network and partners, set up offline
    // (the same signed statements `network create`, `invite`/`join` and
    // `partner` would produce), so every measured byte is sync traffic.
    let a_id = identity::load(&a_home)?;
    let b_id = identity::load(&b_home)?;
    let statements = offline_network(&a_id, &b_id);
    for home in [&a_home, &b_home] {
        let store = SledStore::open(&home.store())?;
        store.write(statements.iter().cloned().map(crate::store::WriteOp::Statement).collect())?;
        store.flush()?;
    }

    // Node A's documents: the workload, written and signed by A.
    eprintln!("bench sync: writing {n_docs} documents ({} signed changes) into node A", n_docs * 11);
    let work = signed_workload_by(n_docs, &a_id.commune_key, &a_id.node_key, a_id.certificate.clone());
    let (engine, thread) = crate::engine::spawn(SledStore::open(&a_home.store())?, &a_id)?;
    super::ingest_workload(&engine, &work).await?;
    engine.shutdown().await;
    let _ = thread.join();
    drop(work);

    let count = Arc::new(Counter::default());
    let result = tokio::task::spawn_blocking({
        let count = count.clone();
        let bin = bin.clone();
        let (a_home, b_home) = (a_home.clone(), b_home.clone());
        let handle = tokio::runtime::Handle::current();
        move || -> Result<Vec<SyncFigure>, String> {
            scenarios(&bin, &a_home, &b_home, n_docs, &count, &handle).map_err(|e| e.to_string())
        }
    })
    .await?;
    match &result {
        Ok(_) => {
            let _ = std::fs::remove_dir_all(&root);
        }
        Err(_) => eprintln!("bench sync: node homes and logs kept in {}", root.display()),
    }
    for f in result? {
        emit(&f);
    }
    Ok(())
}

/// A network founded by A, with B admitted and the two partners.
fn offline_network(a: &identity::Identity, b: &identity::Identity) -> Vec<SignedStatement> {
    let now = crate::clock::now_ms() as u64;
    let found = SignedStatement::found(&a.commune_key, "Banc d'essai", &a.config.commune.name, "BE", now);
    let net = found.network;
    let admit = Statement::Admit {
        member: b.commune_id(),
        name: b.config.commune.name.clone(),
        country: b.config.commune.country.clone(),
        role: Role::Commune,
        invitation: [0; 16],
        node: b.node_id(),
        addrs: vec![],
    };
    vec![
        SignedStatement::sign(&a.commune_key, net, now + 1, admit),
        SignedStatement::sign(&a.commune_key, net, now + 2, Statement::Partner { with: b.commune_id() }),
        SignedStatement::sign(&b.commune_key, net, now + 3, Statement::Partner { with: a.commune_id() }),
        found,
    ]
}

fn scenarios(
    bin: &Path,
    a_home: &Home,
    b_home: &Home,
    n_docs: usize,
    count: &Arc<Counter>,
    rt: &tokio::runtime::Handle,
) -> Result<Vec<SyncFigure>, Box<dyn std::error::Error>> {
    let mut figures = Vec::new();
    let mut a = Proc::start(bin, a_home)?;
    let a_status = a.client()?.status()?;
    let target: std::net::SocketAddr = {
        let addr = a_status.listen.first().ok_or("node A has no listen address")?;
        // /ip4/127.0.0.1/tcp/PORT
        let port = addr.rsplit('/').next().ok_or("bad address")?.parse::<u16>()?;
        ([127, 0, 0, 1], port).into()
    };
    let proxy_port = rt.block_on(proxy(target, count.clone()))?;
    let mut b = Proc::start(bin, b_home)?;
    let a_heads = heads_map(&a.client()?)?;
    let figure = |scenario, wall_s: f64, a: &Proc, b: &Proc, bytes| SyncFigure {
        system: "passerelle",
        scenario,
        n_docs,
        wall_s,
        bytes_total: bytes,
        rss_a_mb: a.rss_mb(),
        rss_b_mb: b.rss_mb(),
    };

    // 1. Catch-up: B, empty, fetches every document until it has A's heads.
    count.0.store(0, Ordering::Relaxed);
    let start = Instant::now();
    b.client()?.add_peer(&a_status.node_id, &format!("/ip4/127.0.0.1/tcp/{proxy_port}"))?;
    // Listing every document costs the node a scan: poll gently so the
    // measurement does not slow down what it measures.
    wait("catch-up", SCENARIO_DEADLINE, Duration::from_millis(100), || Ok(heads_map(&b.client()?)? == a_heads))?;
    figures.push(figure("catch-up", start.elapsed().as_secs_f64(), &a, &b, count.0.load(Ordering::Relaxed)));
    eprintln!("bench sync: catch-up done");

    // 2. Idle re-sync: B restarts on its own store and reconnects.
    b.stop();
    std::thread::sleep(Duration::from_millis(200));
    count.0.store(0, Ordering::Relaxed);
    let restarted_ms = crate::clock::now_ms();
    b = Proc::start(bin, b_home)?;
    let start = Instant::now();
    let in_sync = |p: &Proc| -> Result<bool, Box<dyn std::error::Error>> {
        Ok(p.client()?.peers()?.iter().any(|peer| peer.record.last_sync_ms.is_some_and(|t| t >= restarted_ms)))
    };
    wait("idle re-sync", SCENARIO_DEADLINE, Duration::from_millis(1), || Ok(in_sync(&b)? && in_sync(&a)?))?;
    let wall = start.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(300));
    figures.push(figure("idle-resync", wall, &a, &b, count.0.load(Ordering::Relaxed)));

    // 3. One-change latency: A edits one field of one document; time until B has it.
    let a_client = a.client()?;
    let b_client = b.client()?;
    let ids: Vec<String> = a_heads.keys().cloned().collect();
    let mut samples = Vec::new();
    count.0.store(0, Ordering::Relaxed);
    for k in 0..20 {
        let id: passerelle_protocol::ids::DocId = ids[workload::latency_doc(k, ids.len())].parse()?;
        let mut fields = serde_json::Map::new();
        // A field of the request schema the workload does not set: one scalar put.
        fields.insert("deadline".into(), json!(format!("2027-01-{:02}", k + 1)));
        let start = Instant::now();
        let view = a_client.update(&id, &UpdateDoc { fields, ..UpdateDoc::default() })?;
        wait("one change", Duration::from_secs(30), Duration::from_millis(1), || {
            Ok(b_client.show(&id, None)?.heads == view.heads)
        })?;
        samples.push(start.elapsed().as_secs_f64());
    }
    samples.sort_by(f64::total_cmp);
    let median = (samples[9] + samples[10]) / 2.0;
    figures.push(figure("one-change-latency", median, &a, &b, count.0.load(Ordering::Relaxed) / 20));
    b.stop();
    a.stop();
    Ok(figures)
}
