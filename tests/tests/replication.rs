//! Real nodes replicating over libp2p on loopback.

use std::time::Duration;

use passerelle_tests::{TestNode, disconnect_all, form_network, make_partners, wait_converged, wait_until};

const DEADLINE: Duration = Duration::from_secs(60);

/// ```text
///   Senneval ─── Tala-n-Asif      partners; Tala-n-Asif joined through Senneval
/// ```
#[test]
fn two_nodes_exchange_what_each_wrote() -> anyhow::Result<()> {
    let mut a = TestNode::init_p2p("Senneval", "BE")?;
    let mut b = TestNode::init_p2p("Tala-n-Asif", "MA")?;
    a.start()?;
    b.start()?;
    a.cli_json(&["offer", "create", "--title", "Fiche compostage", "--theme", "THEME:waste"])?;
    // A partnership-scope request, written before the two are partners.
    let req = b.cli_json(&["request", "create", "--title", "Expertise tri des déchets", "--theme", "THEME:waste"])?;
    form_network(&a, &[&b])?;
    make_partners(&a, &b)?;
    // Two profiles, the offer and the request.
    wait_converged(&[&a, &b], 4, DEADLINE)?;
    // A change made after the first sync is pushed at once.
    let id = req["id"].as_str().unwrap();
    b.cli_json(&["request", "update", id, "--deadline", "2026-05-31"])?;
    wait_until(
        "the update to reach Senneval",
        DEADLINE,
        || Ok(a.cli_json(&["request", "show", id])?["fields"]["deadline"].clone()),
        |v| v == "2026-05-31",
    )?;
    let peers = a.cli_json(&["peers"])?;
    assert_eq!(peers[0]["node"], b.node_id()?);
    assert_eq!(peers[0]["connected"], true);
    assert_eq!(peers[0]["commune"], b.commune_id()?);
    wait_until("a reconciliation in sync", DEADLINE, || b.cli_json(&["peers"]), |p| !p[0]["last_sync_ms"].is_null())?;
    assert!(a.cli_json(&["verify"])?["failures"].as_array().unwrap().is_empty());

    // The same state in Prometheus's format.
    let metrics = a.client()?.metrics()?;
    let value = |prefix: &str| -> f64 {
        metrics
            .lines()
            .filter(|l| !l.starts_with('#'))
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or_else(|| panic!("{prefix} missing from:\n{metrics}"))
    };
    assert!(value("passerelle_changes_applied_total{origin=\"remote\"}") >= 3.0);
    assert!(value("passerelle_changes_applied_total{origin=\"local\"}") >= 2.0);
    assert_eq!(value("passerelle_peers_connected"), 1.0);
    assert_eq!(value("passerelle_documents{kind=\"offer\",status=\"proposed\"}"), 1.0);
    let b_short = &b.node_id()?[..8];
    assert!(value(&format!("passerelle_sync_bytes_total{{peer=\"{b_short}\",")) > 0.0);
    assert!(metrics.lines().any(|l| l.starts_with(&format!("passerelle_peer_lag_seconds{{peer=\"{b_short}\""))));
    for l in metrics.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        assert!(l.starts_with("passerelle_"), "{l}");
    }
    Ok(())
}

/// ```text
///   Senneval ═══ Tala-n-Asif       over QUIC only
/// ```
#[test]
fn nodes_sync_over_quic() -> anyhow::Result<()> {
    let mut a = TestNode::init_p2p("Senneval", "BE")?;
    let mut b = TestNode::init_p2p("Tala-n-Asif", "MA")?;
    for n in [&a, &b] {
        n.set_listen(&["/ip4/127.0.0.1/udp/0/quic-v1"])?;
    }
    a.start()?;
    b.start()?;
    assert!(a.p2p_addr()?.contains("quic-v1"), "{}", a.p2p_addr()?);
    b.cli_json(&["request", "create", "--title", "Par QUIC", "--scope", "network"])?;
    // Joining dials the coordinator's QUIC address from the invitation.
    form_network(&a, &[&b])?;
    wait_converged(&[&a, &b], 3, DEADLINE)?;
    Ok(())
}

/// ```text
///   Tala-n-Asif ─── Senneval ─── Hautrieu
///        (never connected to each other; both joined through Senneval)
/// ```
#[test]
fn a_middle_node_relays_signed_documents() -> anyhow::Result<()> {
    let mut a = TestNode::init_p2p("Tala-n-Asif", "MA")?;
    let mut b = TestNode::init_p2p("Senneval", "BE")?;
    let mut c = TestNode::init_p2p("Hautrieu", "BE")?;
    for n in [&mut a, &mut b, &mut c] {
        n.start()?;
    }
    let req = a.cli_json(&["request", "create", "--title", "Compostage de quartier", "--scope", "network"])?;
    let id = req["id"].as_str().unwrap().to_owned();
    form_network(&b, &[&a, &c])?;
    wait_converged(&[&a, &b, &c], 4, DEADLINE)?;
    // C holds A's request, signed by A's node, received from B.
    let history = c.cli_json(&["history", &id])?;
    assert_eq!(history[0]["author_node"], a.node_id()?);
    assert_eq!(history[0]["author_commune"], a.commune_id()?);
    assert_eq!(history[0]["received_from"], b.node_id()?);
    let c_peers = c.cli_json(&["peers"])?;
    assert!(c_peers.as_array().unwrap().iter().all(|p| p["node"] != a.node_id().unwrap()), "C never met A: {c_peers}");
    // Live edits travel the line too.
    a.cli_json(&["request", "update", &id, "--status", "matched"])?;
    wait_until(
        "the status to reach Hautrieu",
        DEADLINE,
        || Ok(c.cli_json(&["request", "show", &id])?["status"].clone()),
        |s| s == "matched",
    )?;
    assert!(c.cli_json(&["verify"])?["failures"].as_array().unwrap().is_empty());
    Ok(())
}

/// ```text
///        A
///      /   \
///     E     B        five communes, one shared request they all may edit,
///     |     |        concurrent edits everywhere, then convergence
///     D ─── C
/// ```
#[test]
fn a_ring_converges_with_concurrent_edits_of_the_same_documents() -> anyhow::Result<()> {
    let names =
        [("Senneval", "BE"), ("Verbois", "BE"), ("Hautrieu", "BE"), ("Tala-n-Asif", "MA"), ("Secretariat", "BE")];
    let mut nodes: Vec<TestNode> =
        names.iter().map(|(n, c)| TestNode::init_p2p(n, c)).collect::<anyhow::Result<_>>()?;
    for n in nodes.iter_mut() {
        n.start()?;
    }
    let members: Vec<&TestNode> = nodes[1..].iter().collect();
    form_network(&nodes[0], &members)?;
    let communes: Vec<String> = nodes.iter().map(|n| n.commune_id()).collect::<anyhow::Result<_>>()?;
    let mut args = vec!["request", "create", "--title", "Demande partagée", "--scope", "network"];
    for c in &communes[1..] {
        args.push("--writer");
        args.push(c);
    }
    let shared = nodes[0].cli_json(&args)?["id"].as_str().unwrap().to_owned();
    for i in 0..nodes.len() {
        nodes[i].connect_to(&nodes[(i + 1) % nodes.len()])?;
    }
    let refs: Vec<&TestNode> = nodes.iter().collect();
    wait_converged(&refs, 6, DEADLINE)?;

    // Cut every link (the ring and those made by joining), so the edits
    // below are truly concurrent.
    for n in &nodes {
        for p in n.cli_json(&["peers"])?.as_array().unwrap() {
            n.cli(&["peer", "remove", p["node"].as_str().unwrap()]);
        }
    }
    for n in &nodes {
        disconnect_all(n)?;
    }
    // Concurrent edits: every node edits the shared request and writes its own offer.
    let statuses = ["matched", "answered", "matched", "open", "answered"];
    for (i, n) in nodes.iter().enumerate() {
        let lang = ["fr", "nl", "en", "ar", "fr"][i];
        n.cli_json(&["request", "update", &shared, "--lang", lang, "--description", &format!("texte du nœud {i}")])?;
        n.cli_json(&["request", "update", &shared, "--dimension", ["SPIRAL:A", "SPIRAL:B"][i % 2]])?;
        if statuses[i] != "open" {
            n.cli_json(&["request", "update", &shared, "--status", statuses[i]])?;
        }
        n.cli_json(&["offer", "create", "--title", &format!("Offre {i}")])?;
    }
    for i in 0..nodes.len() {
        nodes[i].connect_to(&nodes[(i + 1) % nodes.len()])?;
    }
    wait_converged(&refs, 11, DEADLINE)?;
    let views: Vec<serde_json::Value> =
        nodes.iter().map(|n| n.cli_json(&["request", "show", &shared])).collect::<anyhow::Result<_>>()?;
    for v in &views[1..] {
        assert_eq!(v["fields"], views[0]["fields"]);
        assert_eq!(v["status"], views[0]["status"]);
    }
    assert_eq!(views[0]["status"], "answered", "the most advanced status wins");
    assert_eq!(views[0]["status_log"].as_array().unwrap().len(), 5);
    Ok(())
}

/// ```text
///   Senneval ─── Verbois      Verbois stops, Senneval writes, Verbois restarts:
///                             only what changed crosses the link again.
/// ```
#[test]
fn a_restarted_node_resumes_without_receiving_everything_again() -> anyhow::Result<()> {
    let mut a = TestNode::init_p2p("Senneval", "BE")?;
    let mut b = TestNode::init_p2p("Verbois", "BE")?;
    a.start()?;
    b.start()?;
    form_network(&a, &[&b])?;
    for i in 0..40 {
        a.cli_json(&[
            "practice",
            "create",
            "--title",
            &format!("Fiche pratique numéro {i} sur le compostage de quartier"),
        ])?;
    }
    b.connect_to(&a)?;
    wait_converged(&[&a, &b], 42, DEADLINE)?;
    let first = b.cli_json(&["peers"])?[0]["bytes_in"].as_u64().unwrap();

    b.terminate()?;
    let fresh = a.cli_json(&["request", "create", "--title", "Écrite pendant l'absence", "--scope", "network"])?;
    b.start()?;
    wait_converged(&[&a, &b], 43, DEADLINE)?;
    let fresh_id = fresh["id"].as_str().unwrap();
    assert_eq!(b.cli_json(&["request", "show", fresh_id])?["title"], "Écrite pendant l'absence");
    let total = b.cli_json(&["peers"])?[0]["bytes_in"].as_u64().unwrap();
    let resent = total - first;
    println!("initial sync {first} bytes; resume {resent} bytes");
    assert!(resent * 5 < first, "resuming received {resent} bytes, the first sync {first}: too much sent again");
    Ok(())
}
