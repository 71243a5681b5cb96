//! Real nodes over an emulated poor link (`passerelle_node::netem`):
//! latency, a bandwidth cap, cuts in the middle of a transfer and a
//! partition with writes on both sides. After healing, both hold the same
//! documents with the same heads, and what crossed the link is printed.
//!
//! ```text
//!   Senneval ══ emulated link (150 ms each way, 256 kbit/s) ══ Tala-n-Asif
//! ```

use std::time::Duration;

use passerelle_node::netem::{Link, LinkShape};
use passerelle_tests::{TestNode, disconnect_all, federation, make_partners, wait_converged, wait_until};

const DEADLINE: Duration = Duration::from_secs(90);

/// Forgets every peer of both nodes, then has `b` reach `a` through an
/// emulated link only.
fn route_through(rt: &tokio::runtime::Runtime, a: &TestNode, b: &TestNode, shape: LinkShape) -> anyhow::Result<Link> {
    disconnect_all(a)?;
    disconnect_all(b)?;
    let target: std::net::SocketAddr = {
        let addr = a.p2p_addr()?;
        let port: u16 = addr.rsplit('/').next().unwrap_or_default().parse()?;
        ([127, 0, 0, 1], port).into()
    };
    let link = rt.block_on(Link::start(target, shape))?;
    let r = b.cli(&["peer", "add", &a.node_id()?, &link.multiaddr()]);
    anyhow::ensure!(r.code == 0, "peer add: {}", r.stderr);
    Ok(link)
}

/// Writes `count` practice sheets on `node`, each with `topic` repeated
/// `repeat` times as its steps (a backlog of a known size).
fn write_sheets(node: &TestNode, count: u64, topic: &str, repeat: usize) -> anyhow::Result<()> {
    for i in 0..count {
        let text = format!("Fiche {i} : {topic} ");
        let steps = format!("steps={}", text.repeat(repeat));
        node.cli_json(&["practice", "create", "--title", &format!("Fiche {i}"), "--field", &steps])?;
    }
    Ok(())
}

/// Like [`write_sheets`], with `len` characters of text that does not
/// compress much (frames are compressed: repeated text would shrink to
/// little on the wire).
fn write_varied_sheets(node: &TestNode, count: u64, len: usize) -> anyhow::Result<()> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in 0..count {
        let text: String = (0..len)
            .map(|k| {
                x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                if k % 7 == 6 { ' ' } else { char::from(b'a' + ((x >> 33) % 26) as u8) }
            })
            .collect();
        node.cli_json(&["practice", "create", "--title", &format!("Fiche {i}"), "--field", &format!("steps={text}")])?;
    }
    Ok(())
}

#[test]
fn sync_survives_latency_cuts_and_a_partition() -> anyhow::Result<()> {
    let rt = tokio::runtime::Runtime::new()?;
    let [senneval, tala] = federation([("Senneval", "BE"), ("Tala-n-Asif", "MA")])?;
    make_partners(&senneval, &tala)?;
    let shape = LinkShape { latency: Duration::from_millis(150), bytes_per_s: Some(32_000) };
    let link = route_through(&rt, &senneval, &tala, shape)?;
    wait_converged(&[&senneval, &tala], 2, DEADLINE)?;

    // A backlog on each side; the link is cut twice during the transfer.
    write_sheets(&senneval, 25, "compostage, tri, réemploi et sensibilisation des habitants du quartier.", 8)?;
    for i in 0..5 {
        tala.cli_json(&["request", "create", "--title", &format!("Demande {i}")])?;
    }
    std::thread::sleep(Duration::from_millis(700));
    link.cut();
    std::thread::sleep(Duration::from_millis(1500));
    link.cut();
    wait_converged(&[&senneval, &tala], 32, DEADLINE)?;
    let (connections, cuts) = link.connections_and_cuts();
    println!("backlog across {cuts} cuts: {} bytes on the link, {connections} connections", link.total_bytes());

    // A partition: both sides write; nothing crosses; after healing, everything.
    link.partition(true);
    let during = senneval.cli_json(&["offer", "create", "--title", "Écrite pendant la coupure"])?;
    let request = tala.cli_json(&["request", "create", "--title", "Hors ligne"])?;
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(tala.cli(&["offer", "show", during["id"].as_str().unwrap()]).code, 1, "nothing crosses a partition");
    // Delivery receipts: Senneval knows Tala-n-Asif has not acknowledged the offer.
    let tala_node = tala.node_id()?;
    let pending = senneval.cli_json(&["peer", "pending", &tala_node])?;
    assert!(pending.as_array().unwrap().iter().any(|d| d["id"] == during["id"]), "{pending}");
    link.partition(false);
    wait_converged(&[&senneval, &tala], 34, DEADLINE)?;
    wait_until(
        "Tala-n-Asif to acknowledge everything",
        DEADLINE,
        || senneval.cli_json(&["peers"]),
        |peers| {
            peers.as_array().unwrap().iter().any(|p| {
                p["node"] == tala_node.as_str() && p["receipts"]["pending"] == 0 && p["receipts"]["shared"] == 34
            })
        },
    )?;
    assert_eq!(senneval.cli_json(&["request", "show", request["id"].as_str().unwrap()])?["title"], "Hors ligne");
    for n in [&senneval, &tala] {
        assert!(n.cli_json(&["verify"])?["failures"].as_array().unwrap().is_empty());
    }
    println!("after the partition: {} bytes on the link in all", link.total_bytes());
    Ok(())
}

/// Keep-alive and timeouts hold on a 2 s round trip: the connection comes
/// up, stays up, and documents cross.
#[test]
fn a_two_second_round_trip_still_syncs() -> anyhow::Result<()> {
    let rt = tokio::runtime::Runtime::new()?;
    let [senneval, tala] = federation([("Senneval", "BE"), ("Tala-n-Asif", "MA")])?;
    make_partners(&senneval, &tala)?;
    let shape = LinkShape { latency: Duration::from_millis(1000), bytes_per_s: Some(8_000) };
    let link = route_through(&rt, &senneval, &tala, shape)?;
    let request = tala.cli_json(&["request", "create", "--title", "Par une liaison très lente"])?;
    senneval.cli_json(&["offer", "create", "--title", "Réponse lente"])?;
    wait_converged(&[&senneval, &tala], 4, DEADLINE)?;
    assert_eq!(senneval.cli_json(&["request", "show", request["id"].as_str().unwrap()])?["scope"], "partnership");
    let (connections, _) = link.connections_and_cuts();
    assert_eq!(connections, 1, "one connection held throughout");
    println!("2 s round trip: {} bytes on the link", link.total_bytes());
    Ok(())
}

/// A transfer cut halfway resumes where it stopped, even after the sending
/// node was killed: what the peer acknowledged left the queue on disk, the
/// rest is sent after the restart, and both end with the same documents.
#[test]
fn a_transfer_resumes_after_the_sender_is_killed() -> anyhow::Result<()> {
    let rt = tokio::runtime::Runtime::new()?;
    let [mut senneval, tala] = federation([("Senneval", "BE"), ("Tala-n-Asif", "MA")])?;
    // Senneval dials Tala-n-Asif through the link, so it finds it again after a restart.
    let shape = LinkShape { latency: Duration::from_millis(50), bytes_per_s: Some(16_000) };
    let link = route_through(&rt, &tala, &senneval, shape)?;
    wait_converged(&[&senneval, &tala], 2, DEADLINE)?;

    // A backlog written while the link is down, found missing on reconnection.
    link.partition(true);
    const SHEETS: u64 = 40;
    write_sheets(&senneval, SHEETS, "accueil des nouveaux arrivants, cours de langue, permanence sociale.", 30)?;
    link.partition(false);
    let tala_node = tala.node_id()?;
    let queued = |node: &TestNode| -> anyhow::Result<u64> {
        let peers = node.cli_json(&["peers"])?;
        Ok(peers
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["node"] == tala_node.as_str())
            .map_or(0, |p| p["queued"].as_u64().unwrap_or(0)))
    };
    // Part of the transfer is acknowledged...
    wait_until(
        "part of the transfer to be acknowledged",
        DEADLINE,
        || queued(&senneval),
        |q| (1..=SHEETS * 3 / 4).contains(q),
    )?;
    // ...then the sender dies without a word.
    senneval.kill9();
    senneval.start()?;
    let left = queued(&senneval)?;
    assert!(left > 0 && left <= SHEETS * 3 / 4, "the queue survived the restart, acknowledged part removed: {left}");
    wait_converged(&[&senneval, &tala], 2 + SHEETS as usize, DEADLINE)?;
    wait_until("the queue to drain", DEADLINE, || queued(&senneval), |q| *q == 0)?;
    let (connections, _) = link.connections_and_cuts();
    println!(
        "transfer resumed after kill -9 with {left} of {SHEETS} documents left: {} bytes on the link, {connections} connections",
        link.total_bytes()
    );
    Ok(())
}

/// `network.peer_budget_bytes_per_s` caps what a node sends to each peer,
/// even over a fast link.
#[test]
fn a_per_peer_budget_caps_the_sending_rate() -> anyhow::Result<()> {
    const BUDGET: u64 = 20_000;
    let rt = tokio::runtime::Runtime::new()?;
    let [mut senneval, tala] = federation([("Senneval", "BE"), ("Tala-n-Asif", "MA")])?;
    senneval.terminate()?;
    senneval.set_network("peer_budget_bytes_per_s", &BUDGET.to_string())?;
    senneval.start()?;
    let link =
        route_through(&rt, &tala, &senneval, LinkShape { latency: Duration::from_millis(10), bytes_per_s: None })?;
    wait_converged(&[&senneval, &tala], 2, DEADLINE)?;

    link.partition(true);
    write_varied_sheets(&senneval, 30, 4_000)?;
    link.reset_counters();
    let start = std::time::Instant::now();
    link.partition(false);
    wait_converged(&[&senneval, &tala], 32, DEADLINE)?;
    let elapsed = start.elapsed().as_secs_f64();
    let rate = link.total_bytes() as f64 / elapsed;
    println!("budget {BUDGET} B/s: {} bytes in {elapsed:.1} s = {rate:.0} B/s", link.total_bytes());
    assert!(link.total_bytes() > 4 * BUDGET, "a backlog of several seconds' budget crossed");
    // One second of budget may be spent at once; the rest is paced.
    assert!(rate <= 1.3 * BUDGET as f64, "{rate:.0} B/s over a budget of {BUDGET} B/s");
    Ok(())
}

/// A document too large for one frame goes in chunks; after a cut in its
/// middle, the transfer resumes after the last chunk that arrived instead
/// of sending the document again.
#[test]
fn a_large_document_resumes_after_the_last_chunk_that_arrived() -> anyhow::Result<()> {
    let rt = tokio::runtime::Runtime::new()?;
    let [senneval, tala] = federation([("Senneval", "BE"), ("Tala-n-Asif", "MA")])?;
    let shape = LinkShape { latency: Duration::from_millis(30), bytes_per_s: Some(16_000) };
    let link = route_through(&rt, &tala, &senneval, shape)?;
    wait_converged(&[&senneval, &tala], 2, DEADLINE)?;

    // A practice sheet with a long history (70 versions of a few kB that
    // do not compress away), written while the link is down.
    let write_large = |title: &str| -> anyhow::Result<String> {
        link.partition(true);
        let id = senneval.cli_json(&["practice", "create", "--title", title])?["id"].as_str().unwrap().to_owned();
        for v in 0..70u64 {
            let text: String = (0..30u64)
                .map(|k| format!("{:x} ", (v * 7919 + k * 104_729 + 1).wrapping_mul(2_654_435_761) % 1_000_003_259))
                .collect();
            senneval.cli_json(&["practice", "update", &id, "--field", &format!("steps={text}")])?;
        }
        Ok(id)
    };
    let history_len = |id: &str| -> anyhow::Result<usize> {
        let r = tala.cli(&["history", id, "--json"]);
        Ok(if r.code == 0 { r.json().as_array().map_or(0, Vec::len) } else { 0 })
    };

    // Without a cut: the reference.
    let first = write_large("Fiche de référence")?;
    link.reset_counters();
    link.partition(false);
    wait_converged(&[&senneval, &tala], 3, DEADLINE)?;
    let clean = link.total_bytes();

    // With a cut once about half of the history has arrived.
    let second = write_large("Fiche coupée")?;
    link.reset_counters();
    link.partition(false);
    passerelle_tests::wait_until("half of the history to arrive", DEADLINE, || history_len(&second), |n| *n >= 35)?;
    let before_cut = history_len(&second)?;
    link.cut();
    wait_converged(&[&senneval, &tala], 4, DEADLINE)?;
    let with_cut = link.total_bytes();
    println!(
        "large document: {clean} bytes without a cut, {with_cut} with a cut after {before_cut} of 71 changes (first: {})",
        &first[..8]
    );
    // Sending it again from the start would cost half of it again at least;
    // resuming costs a reconnection and the chunks in flight at the cut.
    assert!((with_cut as f64) < 1.4 * clean as f64, "{with_cut} bytes with a cut, {clean} without");
    Ok(())
}
