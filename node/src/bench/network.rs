//! `passerelle bench network`: real `passerelle` processes on loopback,
//! formed into a network the way communes do it (a founder, invitations
//! redeemed with `join`, partnerships proposed and accepted, two more
//! coordinators), with default settings. After the network settles it
//! idles; every byte of every TCP connection is counted by the nodes
//! themselves (`passerelle_transport_bytes_total`), then one commune
//! writes and the change is timed to every node. Prints one JSON line.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::client::ApiClient;
use crate::home::Home;
use crate::identity;
use crate::views::{CreateDoc, InviteRequest};

type Error = Box<dyn std::error::Error>;

struct Proc {
    child: Child,
    home: Home,
    name: String,
    country: String,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    fn start(bin: &Path, home: Home, name: &str, country: &str) -> Result<Self, Error> {
        let child = Command::new(bin)
            .args(["run", "--home"])
            .arg(home.root())
            .env("RUST_LOG", std::env::var("PASSERELLE_BENCH_LOG").unwrap_or_else(|_| "warn".into()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(home.root().join("node.log"))?)
            .spawn()?;
        let p = Self { child, home, name: name.to_owned(), country: country.to_owned() };
        wait("a node to answer", Duration::from_secs(60), || Ok(p.client()?.status().is_ok()))?;
        Ok(p)
    }

    fn client(&self) -> Result<ApiClient, Error> {
        Ok(ApiClient::for_home(&self.home)?)
    }

    fn rss_mb(&self) -> f64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .ok()
            .and_then(|s| {
                s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            })
            .map_or(0.0, |kb: f64| kb / 1024.0)
    }

    /// Bytes received and sent on its TCP connections so far.
    fn transport_bytes(&self) -> Result<u64, Error> {
        let text = self.client()?.metrics()?;
        let mut total = 0;
        for line in text.lines().filter(|l| l.starts_with("passerelle_transport_bytes_total{")) {
            total += line.rsplit(' ').next().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        }
        Ok(total)
    }
}

fn wait(what: &str, deadline: Duration, mut probe: impl FnMut() -> Result<bool, Error>) -> Result<(), Error> {
    let end = Instant::now() + deadline;
    loop {
        if probe().unwrap_or(false) {
            return Ok(());
        }
        if Instant::now() > end {
            return Err(format!("gave up waiting for {what} after {deadline:?}").into());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn spread(mut v: Vec<f64>) -> Value {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return json!(null);
    }
    let mean = v.iter().sum::<f64>() / v.len() as f64;
    let p99 = v[((v.len() as f64 * 0.99).ceil() as usize).saturating_sub(1)];
    json!({"mean": mean.round(), "p99": p99.round(), "max": v[v.len() - 1].round()})
}

/// The network's members: Belgian, Moroccan and Tunisian communes
/// (60 / 35 / 5 %), as the simulator's scale scenario.
fn members(n: usize) -> Vec<(String, &'static str)> {
    let be = (n * 60 / 100).max(1);
    let ma = n * 35 / 100;
    (0..n)
        .map(|i| {
            let country = if i < be {
                "BE"
            } else if i < be + ma {
                "MA"
            } else {
                "TN"
            };
            (format!("{country} {i}"), country)
        })
        .collect()
}

/// Runs the benchmark with `n` nodes, warming up for `warmup`, measuring
/// `idle` of idle traffic.
///
/// # Errors
/// When a node cannot be set up or a step does not complete.
pub fn run(bin: PathBuf, n: usize, warmup: Duration, idle: Duration) -> Result<Value, Error> {
    let root = std::env::temp_dir()
        .join(format!("passerelle-bench-network-{}", hex::encode(crate::clock::random_bytes::<4>())));
    let result = run_in(&bin, &root, n, warmup, idle);
    match &result {
        Ok(_) => {
            let _ = std::fs::remove_dir_all(&root);
        }
        Err(_) => eprintln!("bench network: node homes and logs kept in {}", root.display()),
    }
    result
}

fn run_in(bin: &Path, root: &Path, n: usize, warmup: Duration, idle: Duration) -> Result<Value, Error> {
    let started = Instant::now();
    let mut nodes: Vec<Proc> = Vec::with_capacity(n);
    for (i, (name, country)) in members(n).into_iter().enumerate() {
        let home = Home::new(root.join(format!("n{i}")));
        identity::init_with_listen(&home, &name, country, 0, Some(vec!["/ip4/127.0.0.1/tcp/0".into()]))?;
        nodes.push(Proc::start(bin, home, &name, country)?);
    }
    eprintln!("bench network: {n} nodes started in {:.0} s; forming the network", started.elapsed().as_secs_f64());
    let founder = nodes[0].client()?;
    founder.create_network("Réseau de mesure")?;
    for (i, node) in nodes.iter().enumerate().skip(1) {
        // Two more coordinators among the Belgian communes.
        let role = (i <= 2).then(|| "coordinator".to_owned());
        let req = InviteRequest {
            name: node.name.clone(),
            country: node.country.to_owned(),
            role,
            expires_in_hours: Some(1),
        };
        let token = founder.invite(&req)?.token;
        node.client()?.join(&token)?;
    }
    // Each Moroccan and Tunisian commune partners a Belgian one (not a coordinator).
    let mut be: Vec<usize> = (3..n).filter(|i| nodes[*i].country == "BE").collect();
    if be.is_empty() {
        // A small network: coordinators partner too.
        be = (0..n).filter(|i| nodes[*i].country == "BE").collect();
    }
    for (k, i) in (0..n).filter(|i| nodes[*i].country != "BE").enumerate() {
        let j = be[k % be.len().max(1)];
        let (a, b) = (nodes[i].client()?, nodes[j].client()?);
        let a_commune = identity::load(&nodes[i].home)?.commune_id().to_string();
        let b_commune = identity::load(&nodes[j].home)?.commune_id().to_string();
        wait("a partner to be known", Duration::from_secs(120), || Ok(a.partner(&b_commune, "propose").is_ok()))?;
        wait("a proposal to arrive", Duration::from_secs(120), || Ok(b.partner(&a_commune, "accept").is_ok()))?;
    }
    wait("every node to know every member", Duration::from_secs(300), || {
        for node in &nodes {
            if node.client()?.network()?.members.len() != n {
                return Ok(false);
            }
        }
        Ok(true)
    })?;
    eprintln!("bench network: formed in {:.0} s; settling for {} s", started.elapsed().as_secs_f64(), warmup.as_secs());
    std::thread::sleep(warmup);

    // Idle.
    let before: Vec<u64> = nodes.iter().map(Proc::transport_bytes).collect::<Result<_, _>>()?;
    let idle_start = Instant::now();
    eprintln!("bench network: measuring {} s of idle traffic", idle.as_secs());
    std::thread::sleep(idle);
    let after: Vec<u64> = nodes.iter().map(Proc::transport_bytes).collect::<Result<_, _>>()?;
    let over = idle_start.elapsed().as_secs_f64();
    let per_day: Vec<f64> = before.iter().zip(&after).map(|(b, a)| (a - b) as f64 * 86_400.0 / over).collect();
    let links: Vec<f64> =
        nodes.iter().map(|p| Ok(p.client()?.status()?.peers_connected as f64)).collect::<Result<_, Error>>()?;
    let now = crate::clock::now_ms() as f64;
    let beats = founder.heartbeats()?;
    let ages: Vec<f64> =
        beats.iter().filter(|b| b.via.is_some()).map(|b| ((now - b.heard_ms as f64) / 1000.0).max(0.0)).collect();
    let heard = ages.len();
    // Whoever the founder has not heard of, by name (for the record).
    let unheard: Vec<&str> = nodes
        .iter()
        .skip(1)
        .filter(|p| !beats.iter().any(|b| b.via.is_some() && b.name.as_deref() == Some(p.name.as_str())))
        .map(|p| p.name.as_str())
        .collect();
    if !unheard.is_empty() {
        eprintln!("bench network: the founder has no heartbeat of {}", unheard.join(", "));
    }

    // One change, written by a Belgian commune that is not a coordinator.
    let writer = be.first().copied().unwrap_or(0);
    let fields = json!({"title": "Mesure de propagation", "description": "bench network"});
    let req = CreateDoc {
        kind: "request".into(),
        scope: Some("network".into()),
        fields: fields.as_object().cloned().unwrap_or_default(),
        ..Default::default()
    };
    let written = Instant::now();
    let id = nodes[writer].client()?.create(&req)?.id;
    let mut reached: Vec<Option<f64>> = vec![None; n];
    reached[writer] = Some(0.0);
    while reached.iter().any(Option::is_none) && written.elapsed() < Duration::from_secs(600) {
        for (i, node) in nodes.iter().enumerate() {
            if reached[i].is_none() && node.client()?.show(&id, None).is_ok() {
                reached[i] = Some(written.elapsed().as_secs_f64() * 1000.0);
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut times: Vec<f64> = reached.iter().map(|r| r.unwrap_or(f64::INFINITY)).collect();
    times.sort_by(f64::total_cmp);
    let pct = |p: f64| times[((n as f64 * p).ceil() as usize).saturating_sub(1).min(n - 1)];
    let rss: Vec<f64> = nodes.iter().map(Proc::rss_mb).collect();
    Ok(json!({
        "system": "passerelle",
        "scenario": "scale-real",
        "nodes": n,
        "idle_s": over.round(),
        "idle_transport_bytes_per_node_per_day": spread(per_day),
        "links_per_node": spread(links),
        "coordinator_hears_nodes": heard,
        "coordinator_unheard": unheard,
        "coordinator_view_age_s": spread(ages),
        "change_reach_ms": {"p50": pct(0.5).round(), "p99": pct(0.99).round(), "p100": pct(1.0).round()},
        "rss_mb_per_node": spread(rss),
        "wall_s": started.elapsed().as_secs(),
    }))
}
