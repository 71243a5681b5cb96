//! The sync benchmark (`passerelle bench sync`): two node processes on
//! loopback, node B reaching node A through an emulated link
//! ([`crate::netem`]) that counts every byte both ways, running the shared
//! workload's scenarios: catch-up, idle re-sync, one-change latency; and,
//! with `--poor-link`, a third node C catching up over 64 kbit/s with a
//! 600 ms round trip, cut every 20 s. Prints JSON lines; never fails on a
//! figure.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::json;

use super::{signed_workload_by, workload};
use passerelle_protocol::network::{Role, SignedStatement, Statement};

use crate::client::ApiClient;
use crate::home::Home;
use crate::identity;
use crate::netem::{Link, LinkShape};
use crate::store::{SledStore, Store};
use crate::views::UpdateDoc;

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
    /// Poor link only: useful bytes (a clean catch-up's) over what the
    /// link could carry in the time taken, both directions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub goodput: Option<f64>,
    /// Poor link only: bytes beyond a clean catch-up's, as a fraction of all bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resent_fraction: Option<f64>,
    /// Poor link only: cuts during the transfer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cuts: Option<u64>,
    /// Where the bytes went: the transport's own (handshakes, identify,
    /// ping, stream framing), sync messages by kind, and what the document
    /// frames carried before compression.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub breakdown: Option<serde_json::Value>,
}

/// A node's counters, `name{labels}` to value, from `GET /metrics`.
type Counters = std::collections::BTreeMap<String, u64>;

fn counters(p: &Proc) -> Counters {
    let text = p.client().and_then(|c| Ok(c.metrics()?)).unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with("passerelle_sync_message") || l.starts_with("passerelle_docs_frames_sent"))
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            Some((key.trim_start_matches("passerelle_").to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// The breakdown of `link_bytes`, from A's and B's counters before and
/// after (B's messages are every sync frame on the link: A is its one peer).
fn breakdown(link_bytes: u64, a: (&Counters, &Counters), b: (&Counters, &Counters)) -> serde_json::Value {
    let delta = |(before, after): (&Counters, &Counters), key: &str| {
        after.get(key).copied().unwrap_or(0).saturating_sub(before.get(key).copied().unwrap_or(0))
    };
    let mut sync = serde_json::Map::new();
    let mut messages = serde_json::Map::new();
    let mut sync_total = 0;
    for key in b.1.keys() {
        let Some(kind) = key.split("kind=\"").nth(1).and_then(|k| k.split('"').next()) else { continue };
        let n = delta(b, key);
        let into = if key.starts_with("sync_message_bytes_total") {
            sync_total += n;
            &mut sync
        } else if key.starts_with("sync_messages_total") {
            &mut messages
        } else {
            continue;
        };
        if n > 0 {
            let entry = into.entry(kind.to_owned()).or_insert(json!(0));
            *entry = json!(entry.as_u64().unwrap_or(0) + n);
        }
    }
    let part = |p: &str| delta(a, &format!("docs_frames_sent_bytes_total{{part=\"{p}\"}}"));
    let own = delta(a, "docs_frames_sent_changes_total{signed=\"own\"}");
    let covered = delta(a, "docs_frames_sent_changes_total{signed=\"covered\"}");
    json!({
        "transport": link_bytes.saturating_sub(sync_total),
        "sync": sync,
        "messages": messages,
        "docs_frames_from_a": {
            "wire": part("wire"),
            "plain": part("plain"),
            "headers": part("headers"),
            "change_bytes": part("change_bytes"),
            "signatures": own * 64,
            "changes_signed": own,
            "changes_covered": covered,
        },
    })
}

/// The poor link of the benchmark: 64 kbit/s, 600 ms round trip, cut every 20 s.
pub const POOR_LINK_KBIT_S: u64 = 64;
/// Round trip of the poor link.
pub const POOR_LINK_RTT: Duration = Duration::from_millis(600);
/// How often the poor link is cut.
pub const POOR_LINK_CUT_EVERY: Duration = Duration::from_secs(20);
/// How long the poor-link catch-up may take.
const POOR_LINK_DEADLINE: Duration = Duration::from_secs(3600);

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
            // `PASSERELLE_BENCH_LOG` (a `RUST_LOG` filter) to see what the nodes did.
            .env("RUST_LOG", std::env::var("PASSERELLE_BENCH_LOG").unwrap_or_else(|_| "warn".into()))
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

/// Runs the scenarios with `n_docs` documents, using the `passerelle`
/// binary at `bin` for the nodes, and calls `emit` with each figure. With
/// `poor_link`, a third node catches up over the benchmark's poor link.
///
/// # Errors
/// When a node cannot be set up or a scenario does not complete.
pub async fn run(
    bin: PathBuf,
    n_docs: usize,
    poor_link: bool,
    mut emit: impl FnMut(&SyncFigure),
) -> Result<(), Box<dyn std::error::Error>> {
    let root =
        std::env::temp_dir().join(format!("passerelle-bench-sync-{}", hex::encode(crate::clock::random_bytes::<4>())));
    let homes = [Home::new(root.join("a")), Home::new(root.join("b")), Home::new(root.join("c"))];
    for (home, name, country) in
        [(&homes[0], "Senneval", "BE"), (&homes[1], "Tala-n-Asif", "MA"), (&homes[2], "Imzouren", "MA")]
    {
        identity::init_with_listen(home, name, country, 0, Some(vec!["/ip4/127.0.0.1/tcp/0".into()]))?;
        // No periodic rounds: every round measured is one the scenario caused.
        let config = std::fs::read_to_string(home.config())?;
        std::fs::write(home.config(), config.replace("anti_entropy_secs = 30", "anti_entropy_secs = 86400"))?;
    }

    // The nodes are members of one network and A's partners, set up offline
    // (the same signed statements `network create`, `invite`/`join` and
    // `partner` would produce), so every measured byte is sync traffic.
    let ids = [identity::load(&homes[0])?, identity::load(&homes[1])?, identity::load(&homes[2])?];
    let statements = offline_network(&ids[0], &ids[1..]);
    for home in &homes {
        let store = SledStore::open(&home.store())?;
        store.write(statements.iter().cloned().map(crate::store::WriteOp::Statement).collect())?;
        store.flush()?;
    }

    // Node A's documents: the workload, written and signed by A.
    eprintln!("bench sync: writing {n_docs} documents ({} signed changes) into node A", n_docs * 11);
    let a_id = &ids[0];
    let work = signed_workload_by(n_docs, &a_id.commune_key, &a_id.node_key, a_id.certificate.clone());
    let (engine, thread) = crate::engine::spawn(SledStore::open(&homes[0].store())?, a_id)?;
    super::ingest_workload(&engine, &work).await?;
    engine.shutdown().await;
    let _ = thread.join();
    drop(work);

    let result = tokio::task::spawn_blocking({
        let bin = bin.clone();
        let homes = homes.clone();
        let handle = tokio::runtime::Handle::current();
        move || -> Result<Vec<SyncFigure>, String> {
            scenarios(&bin, &homes, n_docs, poor_link, &handle).map_err(|e| e.to_string())
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

/// A network founded by A, with the others admitted and A's partners.
fn offline_network(a: &identity::Identity, others: &[identity::Identity]) -> Vec<SignedStatement> {
    let now = crate::clock::now_ms() as u64;
    let found = SignedStatement::found(&a.commune_key, "Banc d'essai", &a.config.commune.name, "BE", now);
    let net = found.network;
    let mut out = vec![found];
    for (i, b) in others.iter().enumerate() {
        let t = now + 1 + 3 * i as u64;
        let admit = Statement::Admit {
            member: b.commune_id(),
            name: b.config.commune.name.clone(),
            country: b.config.commune.country.clone(),
            role: Role::Commune,
            invitation: [0; 16],
            node: b.node_id(),
            addrs: vec![],
        };
        out.push(SignedStatement::sign(&a.commune_key, net, t, admit));
        out.push(SignedStatement::sign(&a.commune_key, net, t + 1, Statement::Partner { with: b.commune_id() }));
        out.push(SignedStatement::sign(&b.commune_key, net, t + 2, Statement::Partner { with: a.commune_id() }));
    }
    out
}

fn scenarios(
    bin: &Path,
    homes: &[Home; 3],
    n_docs: usize,
    poor_link: bool,
    rt: &tokio::runtime::Handle,
) -> Result<Vec<SyncFigure>, Box<dyn std::error::Error>> {
    let mut figures = Vec::new();
    let mut a = Proc::start(bin, &homes[0])?;
    let a_status = a.client()?.status()?;
    let target: std::net::SocketAddr = {
        let addr = a_status.listen.first().ok_or("node A has no listen address")?;
        // /ip4/127.0.0.1/tcp/PORT
        let port = addr.rsplit('/').next().ok_or("bad address")?.parse::<u16>()?;
        ([127, 0, 0, 1], port).into()
    };
    let link = rt.block_on(Link::start(target, LinkShape::default()))?;
    let mut b = Proc::start(bin, &homes[1])?;
    let a_heads = heads_map(&a.client()?)?;
    let figure = |scenario, wall_s: f64, a: &Proc, b: &Proc, bytes| SyncFigure {
        system: "passerelle",
        scenario,
        n_docs,
        wall_s,
        bytes_total: bytes,
        rss_a_mb: a.rss_mb(),
        rss_b_mb: b.rss_mb(),
        goodput: None,
        resent_fraction: None,
        cuts: None,
        breakdown: None,
    };

    // 1. Catch-up: B, empty, fetches every document until it has A's heads.
    let (a0, b0) = (counters(&a), counters(&b));
    link.reset_counters();
    let start = Instant::now();
    b.client()?.add_peer(&a_status.node_id, &link.multiaddr())?;
    // Listing every document costs the node a scan: poll gently so the
    // measurement does not slow down what it measures.
    wait("catch-up", SCENARIO_DEADLINE, Duration::from_millis(100), || Ok(heads_map(&b.client()?)? == a_heads))?;
    let clean_bytes = link.total_bytes();
    let wall = start.elapsed().as_secs_f64();
    let mut f = figure("catch-up", wall, &a, &b, clean_bytes);
    f.breakdown = Some(breakdown(clean_bytes, (&a0, &counters(&a)), (&b0, &counters(&b))));
    figures.push(f);
    eprintln!("bench sync: catch-up done");

    // 2. Idle re-sync: B restarts on its own store and reconnects.
    b.stop();
    std::thread::sleep(Duration::from_millis(200));
    link.reset_counters();
    let a0 = counters(&a);
    let restarted_ms = crate::clock::now_ms();
    b = Proc::start(bin, &homes[1])?;
    let start = Instant::now();
    let in_sync = |p: &Proc| -> Result<bool, Box<dyn std::error::Error>> {
        Ok(p.client()?.peers()?.iter().any(|peer| peer.record.last_sync_ms.is_some_and(|t| t >= restarted_ms)))
    };
    wait("idle re-sync", SCENARIO_DEADLINE, Duration::from_millis(1), || Ok(in_sync(&b)? && in_sync(&a)?))?;
    let wall = start.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(300));
    let bytes = link.total_bytes();
    let mut f = figure("idle-resync", wall, &a, &b, bytes);
    f.breakdown = Some(breakdown(bytes, (&a0, &counters(&a)), (&Counters::new(), &counters(&b))));
    figures.push(f);

    // 3. One-change latency: A edits one field of one document; time until B has it.
    let a_client = a.client()?;
    let b_client = b.client()?;
    let ids: Vec<String> = a_heads.keys().cloned().collect();
    let mut samples = Vec::new();
    link.reset_counters();
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
    figures.push(figure("one-change-latency", median, &a, &b, link.total_bytes() / 20));
    b.stop();

    // 4. Poor link: C, empty, catches up over 64 kbit/s, 600 ms round trip, cut every 20 s.
    if poor_link {
        let shape = LinkShape::poor(POOR_LINK_KBIT_S, POOR_LINK_RTT);
        let mut poor = rt.block_on(Link::start(target, shape))?;
        let c = Proc::start(bin, &homes[2])?;
        let a_heads = heads_map(&a.client()?)?;
        let _guard = rt.enter();
        poor.cut_every(POOR_LINK_CUT_EVERY);
        let start = Instant::now();
        c.client()?.add_peer(&a_status.node_id, &poor.multiaddr())?;
        let mut last_report = Instant::now();
        wait("poor-link catch-up", POOR_LINK_DEADLINE, Duration::from_millis(500), || {
            if last_report.elapsed() > Duration::from_secs(30) {
                last_report = Instant::now();
                let (_, cuts) = poor.connections_and_cuts();
                eprintln!(
                    "bench sync: poor link, {:.0} s, {} bytes so far, {cuts} cuts",
                    start.elapsed().as_secs_f64(),
                    poor.total_bytes()
                );
            }
            Ok(heads_map(&c.client()?)? == a_heads)
        })?;
        let wall = start.elapsed().as_secs_f64();
        let bytes = poor.total_bytes();
        let capacity = shape.bytes_per_s.unwrap_or(1) as f64 * wall;
        let mut f = figure("poor-link-catch-up", wall, &a, &c, bytes);
        f.goodput = Some(clean_bytes as f64 / capacity);
        f.resent_fraction = Some(bytes.saturating_sub(clean_bytes) as f64 / bytes.max(1) as f64);
        f.cuts = Some(poor.connections_and_cuts().1);
        figures.push(f);
    }
    a.stop();
    Ok(figures)
}
