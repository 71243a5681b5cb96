//! Figures of each attack on a real node (not a timed test: run with
//! `cargo test -p passerelle-tests --test attack_figures -- --ignored
//! --nocapture`, against a release build with `PASSERELLE_BIN`). For each
//! class, what was tried, what the victim's resident memory, CPU time and
//! store did, and how long an honest member's change took to reach the
//! victim while it went on. One JSON line per class.

use std::time::{Duration, Instant};

use libp2p::Multiaddr;
use passerelle_node::store::{SledStore, Store};
use passerelle_protocol::certificate::NodeCertificate;
use passerelle_protocol::keys::SecretKey;
use passerelle_protocol::network::statement::possession_bytes;
use passerelle_protocol::network::{Invitation, Role, Roster, SignedStatement, Statement};
use passerelle_protocol::sync::fingerprint::BUCKETS;
use passerelle_protocol::sync::message::SyncMessage;
use passerelle_tests::rogue::{RoguePeer, change_envelope};
use passerelle_tests::{TestNode, form_network, wait_until};
use serde_json::json;

/// Resident memory (KiB) and CPU time (ms) of a process, from /proc.
fn usage(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command's closing parenthesis: utime and stime are the 12th and 13th.
    let rest = stat.rsplit_once(") ").map(|(_, r)| r).unwrap_or("");
    let fields: Vec<u64> = rest.split_whitespace().filter_map(|f| f.parse().ok()).collect();
    let ticks = fields.get(10).copied().unwrap_or(0) + fields.get(11).copied().unwrap_or(0);
    (rss, ticks * 10)
}

fn store_bytes(node: &TestNode) -> u64 {
    fn walk(dir: &std::path::Path) -> u64 {
        std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| {
                let p = e.path();
                if p.is_dir() { walk(&p) } else { e.metadata().map(|m| m.len()).unwrap_or(0) }
            })
            .sum()
    }
    walk(&node.home().store())
}

/// A rogue member: redeems its invitation and says hello.
async fn joined(key: &SecretKey, cert: &NodeCertificate, token: &str, addr: Multiaddr) -> RoguePeer {
    let mut rogue = RoguePeer::connect(key, addr).await;
    let roster: Roster = rogue.join(token, cert).await;
    rogue.greet(cert, &roster).await;
    rogue
}

/// An honest change by `honest`, and how long until `victim` holds it.
fn honest_delay(honest: &TestNode, victim: &TestNode, n: usize) -> anyhow::Result<u128> {
    let started = Instant::now();
    let doc = honest.cli_json(&["practice", "create", "--title", &format!("Fiche honnête {n}")])?;
    let id = doc["id"].as_str().unwrap().to_owned();
    wait_until(
        "the honest change at the victim",
        Duration::from_secs(120),
        || Ok(victim.cli(&["practice", "show", &id]).code),
        |c| *c == 0,
    )?;
    Ok(started.elapsed().as_millis())
}

#[test]
#[ignore = "prints figures; run on purpose (see the module's documentation)"]
fn attack_figures() -> anyhow::Result<()> {
    let mut victim = TestNode::init_p2p("Senneval", "BE")?;
    let mut honest = TestNode::init_p2p("Verbois", "BE")?;
    victim.start()?;
    honest.start()?;
    form_network(&victim, &[&honest])?;
    for i in 0..200 {
        victim.cli_json(&["practice", "create", "--title", &format!("Fiche {i}"), "--scope", "network"])?;
    }
    honest.connect_to(&victim)?;
    let pid = victim.pid().expect("running");
    let addr: Multiaddr = victim.p2p_addr()?.parse()?;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let mut member_seed = 100u8;
    let mut member = |victim: &TestNode| -> anyhow::Result<(SecretKey, SecretKey, NodeCertificate, String)> {
        member_seed += 2;
        let name = format!("Rogue {member_seed}");
        let token =
            victim.cli_json(&["invite", "--name", &name, "--country", "BE"])?["token"].as_str().unwrap().to_owned();
        let commune = SecretKey::from_seed([member_seed; 32]);
        let key = SecretKey::from_seed([member_seed + 1; 32]);
        let cert = NodeCertificate::issue(&commune, key.node_id(), 0);
        Ok((commune, key, cert, token))
    };
    let baseline = honest_delay(&honest, &victim, 0)?;
    println!("{}", json!({"class": "baseline", "honest_change_ms": baseline}));

    type Attack = Box<dyn FnOnce(Multiaddr) -> std::pin::Pin<Box<dyn std::future::Future<Output = String> + Send>>>;
    let mut attacks: Vec<(&str, Attack)> = Vec::new();
    // A member sends summaries as fast as it can.
    let (_, key, cert, token) = member(&victim)?;
    attacks.push((
        "summary flood",
        Box::new(move |addr| {
            Box::pin(async move {
                let mut rogue = joined(&key, &cert, &token, addr).await;
                let summary = SyncMessage::Summary {
                    count: 1,
                    fingerprint: [1; 16],
                    roster_count: 1,
                    roster_fingerprint: [1; 16],
                    pending: 0,
                };
                let mut sent = 0;
                let started = Instant::now();
                while started.elapsed() < Duration::from_secs(20) && !rogue.closed {
                    if rogue.ask(summary.encode()).await.is_none() {
                        break;
                    }
                    sent += 1;
                }
                format!("{sent} summaries in {:.1} s, cut off: {}", started.elapsed().as_secs_f64(), rogue.closed)
            })
        }),
    ));
    // A member claims to hold nothing, slowly enough for the request budget.
    let (_, key, cert, token) = member(&victim)?;
    attacks.push((
        "claims to hold nothing",
        Box::new(move |addr| {
            Box::pin(async move {
                let mut rogue = joined(&key, &cert, &token, addr).await;
                let empty = SyncMessage::Buckets { buckets: vec![Default::default(); BUCKETS] };
                let mut sent = 0;
                let started = Instant::now();
                while started.elapsed() < Duration::from_secs(60) && !rogue.closed {
                    rogue.ask(empty.encode()).await;
                    rogue.listen(Duration::from_millis(250)).await;
                    sent += 1;
                }
                let received: usize = rogue.raw.iter().map(Vec::len).sum();
                format!("{sent} empty bucket lists in 60 s; received {received} bytes")
            })
        }),
    ));
    // A member signs 3,000 statements: registrations of new node keys,
    // partnerships with communes that are not members, and admissions only
    // a coordinator may sign.
    let (commune, key, cert, token) = member(&victim)?;
    attacks.push((
        "roster flood",
        Box::new(move |addr| {
            Box::pin(async move {
                let mut rogue = RoguePeer::connect(&key, addr).await;
                let roster = rogue.join(&token, &cert).await;
                rogue.greet(&cert, &roster).await;
                let network = roster.network();
                let now = passerelle_node::clock::now_ms() as u64;
                let mut statements = Vec::new();
                for i in 0..1_000u32 {
                    let mut seed = [7u8; 32];
                    seed[..4].copy_from_slice(&i.to_le_bytes());
                    let node_key = SecretKey::from_seed(seed);
                    let node = node_key.node_id();
                    let possession = node_key.sign(&possession_bytes(&network, &commune.commune_id(), &node));
                    let at = now - 60_000 + u64::from(i);
                    statements.push(SignedStatement::sign(
                        &commune,
                        network,
                        at,
                        Statement::Node { node, addrs: vec![], possession },
                    ));
                    seed[4] = 1;
                    let other = SecretKey::from_seed(seed);
                    statements.push(SignedStatement::sign(
                        &commune,
                        network,
                        at,
                        Statement::Partner { with: other.commune_id() },
                    ));
                    statements.push(SignedStatement::sign(
                        &commune,
                        network,
                        at,
                        Statement::Admit {
                            member: other.commune_id(),
                            name: format!("Fantôme {i}"),
                            country: "BE".into(),
                            role: Role::Coordinator,
                            invitation: [0; 16],
                            node: other.node_id(),
                            addrs: vec![],
                        },
                    ));
                }
                let n = statements.len();
                for chunk in statements.chunks(100) {
                    if rogue.ask(SyncMessage::Roster { statements: chunk.to_vec(), complete: true }.encode()).await.is_none()
                    {
                        break;
                    }
                }
                rogue.listen(Duration::from_secs(2)).await;
                format!("{n} statements in messages of 100 (node keys, partnerships with non-members, admissions by a member)")
            })
        }),
    ));
    // A member certifies 500 new keys of its own and signs changes of the
    // victim's documents with them, then heartbeats of those keys.
    let (commune, key, cert, token) = member(&victim)?;
    attacks.push((
        "unregistered keys",
        Box::new(move |addr| {
            Box::pin(async move {
                let mut rogue = joined(&key, &cert, &token, addr).await;
                // The victim's documents, to forge changes of.
                rogue.ask(SyncMessage::Buckets { buckets: vec![Default::default(); BUCKETS] }.encode()).await;
                rogue.listen(Duration::from_secs(2)).await;
                let (mut docs, mut firsts) = (Vec::new(), Vec::new());
                for m in &rogue.inbox {
                    if let SyncMessage::Docs { changes, .. } = m {
                        for c in changes {
                            if !docs.contains(&c.doc) {
                                docs.push(c.doc);
                                firsts.push(c.change.clone());
                            }
                        }
                    }
                }
                let mut sent = 0;
                for i in 0..500u32 {
                    let mut seed = [9u8; 32];
                    seed[..4].copy_from_slice(&i.to_le_bytes());
                    let forged = SecretKey::from_seed(seed);
                    let forged_cert = NodeCertificate::issue(&commune, forged.node_id(), 0);
                    let k = i as usize % docs.len().max(1);
                    let Some(doc) = docs.get(k) else { break };
                    let change = change_envelope(*doc, &forged, Some(&firsts[k]), "falsifié");
                    let msg =
                        SyncMessage::Docs { certificates: vec![forged_cert], headers: vec![], changes: vec![change] };
                    if rogue.ask(msg.encode()).await.is_none() || rogue.closed {
                        break;
                    }
                    sent += 1;
                }
                format!(
                    "{sent} changes of {} documents, each by a new key the member certified itself; cut off: {}",
                    docs.len(),
                    rogue.closed
                )
            })
        }),
    ));
    // Strangers: forged joins on 20 connections, and 50 silent connections.
    let token =
        victim.cli_json(&["invite", "--name", "Quelqu'un", "--country", "BE"])?["token"].as_str().unwrap().to_owned();
    attacks.push((
        "strangers: forged joins and silent connections",
        Box::new(move |addr| {
            Box::pin(async move {
                let mut forged = Invitation::from_token(&token).expect("token");
                forged.terms.name = "Autre".into();
                let mut refused = 0;
                let mut silent = Vec::new();
                for i in 0..50u8 {
                    silent.push(RoguePeer::connect(&SecretKey::from_seed([200u8.wrapping_add(i); 32]), addr.clone()).await);
                }
                for i in 0..20u8 {
                    let key = SecretKey::from_seed([i + 1; 32]);
                    let cert = NodeCertificate::issue(&SecretKey::from_seed([i + 50; 32]), key.node_id(), 0);
                    let mut rogue = RoguePeer::connect(&key, addr.clone()).await;
                    let join = SyncMessage::Join {
                        invitation: Box::new(forged.clone()),
                        certificate: cert.clone(),
                        addrs: vec![],
                    };
                    for _ in 0..10 {
                        if rogue.ask(join.encode()).await.is_none() || rogue.closed {
                            break;
                        }
                    }
                    rogue.wait_closed(Duration::from_secs(5)).await;
                    refused += rogue.inbox.iter().filter(|m| matches!(m, SyncMessage::JoinRefused { .. })).count();
                }
                let mut dropped = 0;
                for s in &mut silent {
                    if s.wait_closed(Duration::from_secs(40)).await {
                        dropped += 1;
                    }
                }
                format!("20 connections × up to 10 forged joins: {refused} refusals sent; 50 silent connections: {dropped} closed")
            })
        }),
    ));

    let statements =
        |v: &TestNode| v.cli_json(&["network", "show"]).map(|n| n["statements"].clone()).unwrap_or_default();
    for (n, (class, attack)) in attacks.into_iter().enumerate() {
        let (rss0, cpu0) = usage(pid);
        let disk0 = store_bytes(&victim);
        let roster0 = statements(&victim);
        let started = Instant::now();
        let handle = rt.spawn(attack(addr.clone()));
        std::thread::sleep(Duration::from_secs(2));
        let during = honest_delay(&honest, &victim, n + 1)?;
        let (rss_peak, _) = usage(pid);
        let tried = rt.block_on(handle)?;
        let (rss1, cpu1) = usage(pid);
        println!(
            "{}",
            json!({
                "class": class,
                "tried": tried,
                "seconds": started.elapsed().as_secs(),
                "victim_rss_kib": {"before": rss0, "during": rss_peak, "after": rss1},
                "victim_cpu_ms": cpu1 - cpu0,
                "victim_store_bytes": {"before": disk0, "after": store_bytes(&victim)},
                "victim_roster_statements": {"before": roster0, "after": statements(&victim)},
                "honest_change_ms": during,
            })
        );
    }

    // Damage: the victim stops, some of its records (documents' metadata,
    // changes, heartbeats) are overwritten with garbage, and it starts.
    victim.terminate()?;
    let damaged = {
        let store = SledStore::open(&victim.home().store())?;
        let tree = store.raw_tree();
        let mut n = 0;
        for prefix in [b'm', b'c', b'b'] {
            let keys: Vec<_> = tree.scan_prefix([prefix]).keys().take(20).collect::<Result<_, _>>()?;
            for key in keys {
                tree.insert(key, b"\x00not a record".to_vec())?;
                n += 1;
            }
        }
        store.flush()?;
        n
    };
    let started = Instant::now();
    victim.start()?;
    let up_ms = started.elapsed().as_millis();
    // `verify` exits 1 when it finds damage: its report is what counts here.
    let reported = victim.cli(&["verify", "--json"]).json()["damaged"].as_array().map_or(0, Vec::len);
    let during = honest_delay(&honest, &victim, 99)?;
    let (rss, _) = usage(victim.pid().expect("running"));
    println!(
        "{}",
        json!({
            "class": "damaged store at start",
            "tried": format!("{damaged} records overwritten with garbage while stopped"),
            "started_ms": up_ms,
            "damaged_reported_by_verify": reported,
            "victim_rss_kib": {"after": rss},
            "honest_change_ms": during,
        })
    );
    victim.terminate()?;
    honest.terminate()?;
    Ok(())
}
