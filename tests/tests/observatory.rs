//! Heartbeats on real nodes: every node signs its status each second here
//! (`network.heartbeat_secs = 1`); the coordinator hears of a node it is
//! not connected to, through the member in between, and shows through whom.
//! Forged, foreign and future-dated heartbeats are refused, counted by
//! reason, and never shown.
//!
//! ```text
//!   Senneval (coordinator) ── Verbois ── Tala-n-Asif
//!        ╲
//!         rogue member (sends bad heartbeats)
//! ```

use std::time::Duration;

use libp2p::Multiaddr;
use passerelle_protocol::certificate::NodeCertificate;
use passerelle_protocol::heartbeat::{Heartbeat, SignedHeartbeat};
use passerelle_protocol::keys::SecretKey;
use passerelle_protocol::sync::message::{SyncMessage, SyncReply};
use passerelle_tests::rogue::RoguePeer;
use passerelle_tests::{TestNode, disconnect_all, form_network, wait_until};

const DEADLINE: Duration = Duration::from_secs(60);

fn node(name: &str, country: &str) -> anyhow::Result<TestNode> {
    let mut n = TestNode::init_p2p(name, country)?;
    n.set_network("heartbeat_secs", "1")?;
    n.start()?;
    Ok(n)
}

#[test]
fn the_coordinator_hears_of_every_node_and_refuses_bad_heartbeats() -> anyhow::Result<()> {
    let senneval = node("Senneval", "BE")?;
    let verbois = node("Verbois", "BE")?;
    let tala = node("Tala-n-Asif", "MA")?;
    form_network(&senneval, &[&verbois, &tala])?;
    // Tala-n-Asif reaches the network through Verbois only.
    disconnect_all(&tala)?;
    tala.connect_to(&verbois)?;

    let tala_node = tala.node_id()?;
    let verbois_node = verbois.node_id()?;
    let beats = wait_until(
        "Senneval to hear of Tala-n-Asif through Verbois",
        DEADLINE,
        || Ok(serde_json::to_value(senneval.client()?.heartbeats()?)?),
        |beats| {
            beats.as_array().unwrap().iter().any(|b| {
                b["node"] == tala_node.as_str()
                    && b["via"] == verbois_node.as_str()
                    && b["peers"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|p| p["node"] == verbois_node.as_str() && p["connected"] == true)
            })
        },
    )?;
    let tala_beat = beats.as_array().unwrap().iter().find(|b| b["node"] == tala_node.as_str()).unwrap();
    assert_eq!(tala_beat["name"], "Tala-n-Asif");
    assert_eq!(tala_beat["via_name"], "Verbois");
    assert!(tala_beat["documents"].as_array().unwrap().iter().any(|d| d["kind"] == "profile"));
    // Senneval's own heartbeat is there too, and every member's.
    for n in [&senneval, &verbois] {
        let id = n.node_id()?;
        assert!(beats.as_array().unwrap().iter().any(|b| b["node"] == id.as_str()), "{} missing", n.name);
    }
    let table = senneval.cli(&["network", "status"]);
    assert_eq!(table.code, 0);
    assert!(table.stdout.contains("Tala-n-Asif") && table.stdout.contains("Verbois"), "{}", table.stdout);
    assert!(table.stdout.lines().any(|l| l.starts_with("Tala-n-Asif") && l.contains("Verbois")), "{}", table.stdout);

    // The requests board: a network request of Tala-n-Asif, an offer of
    // Verbois answering it, another matching it by dimension only.
    let request = tala.cli_json(&[
        "request",
        "create",
        "--title",
        "Appui au tri des déchets",
        "--scope",
        "network",
        "--theme",
        "THEME:waste",
        "--field",
        "dimensions=[\"SPIRAL:B\"]",
    ])?;
    let request_id = request["id"].as_str().unwrap().to_owned();
    wait_until(
        "the request to reach Verbois",
        DEADLINE,
        || Ok(verbois.cli(&["request", "show", &request_id]).code),
        |c| *c == 0,
    )?;
    let answer = verbois.cli_json(&[
        "offer",
        "create",
        "--title",
        "Deux agents de tri",
        "--field",
        &format!("request={request_id}"),
    ])?;
    let matching =
        verbois.cli_json(&["offer", "create", "--title", "Cadre de vie", "--field", "dimensions=[\"SPIRAL:B\"]"])?;
    let state = wait_until(
        "Senneval to see the request and both offers",
        DEADLINE,
        || Ok(senneval.client()?.network_state()?),
        |s| s.requests.iter().any(|r| r.id.to_string() == request_id && r.candidates.len() == 2),
    )?;
    let board = state.requests.iter().find(|r| r.id.to_string() == request_id).unwrap();
    assert_eq!(board.owner, "Tala-n-Asif");
    assert_eq!(board.candidates[0].id.to_string(), answer["id"].as_str().unwrap(), "the answering offer first");
    assert!(board.candidates[0].answers);
    assert_eq!(board.candidates[1].id.to_string(), matching["id"].as_str().unwrap());
    assert_eq!(board.candidates[1].shared, vec!["SPIRAL:B".to_owned()]);
    assert!(board.first_offer_s.is_some());
    assert_eq!(state.response_times.with_offer, 1);
    assert!(
        state.timeline.iter().any(|e| e.doc.to_string() == request_id && e.what == "created" && e.by == "Tala-n-Asif")
    );
    let names: Vec<&str> = state.members.iter().map(|m| m.name.as_str()).collect();
    for n in ["Senneval", "Verbois", "Tala-n-Asif"] {
        assert!(names.contains(&n), "{names:?}");
    }
    let tala_member = state.members.iter().find(|m| m.name == "Tala-n-Asif").unwrap();
    assert_eq!(tala_member.nodes[0].via.as_deref(), Some("Verbois"));
    assert!(
        state.links.iter().any(|l| l.from_name.as_deref() == Some("Tala-n-Asif")
            && l.to_name.as_deref() == Some("Verbois")
            && l.connected),
        "{:?}",
        state.links
    );

    // Live updates: a subscriber to /v1/events hears of a new document.
    let api = std::fs::read_to_string(senneval.home().api_addr())?.trim().to_owned();
    let api = api.trim_start_matches("http://").to_owned();
    let mut sse = std::net::TcpStream::connect(&api)?;
    sse.set_read_timeout(Some(Duration::from_secs(30)))?;
    let token = std::fs::read_to_string(senneval.home().api_token())?.trim().to_owned();
    std::io::Write::write_all(
        &mut sse,
        format!("GET /v1/events HTTP/1.1\r\nHost: {api}\r\nAuthorization: Bearer {token}\r\n\r\n").as_bytes(),
    )?;
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    let n = std::io::Read::read(&mut sse, &mut buf)?;
    seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    assert!(seen.contains("text/event-stream"), "{seen}");
    let live = tala.cli_json(&["offer", "create", "--title", "Annoncée en direct", "--scope", "network"])?;
    let live_id = live["id"].as_str().unwrap().to_owned();
    while !seen.contains(&format!("\"id\":\"{live_id}\"")) {
        let n = std::io::Read::read(&mut sse, &mut buf)?;
        anyhow::ensure!(n > 0, "the event stream ended: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(seen.contains("event: doc"), "{seen}");

    // A rogue member sends forged, foreign and future-dated heartbeats.
    let token =
        senneval.cli_json(&["invite", "--name", "Rogue", "--country", "BE"])?["token"].as_str().unwrap().to_owned();
    let rogue_commune = SecretKey::from_seed([66; 32]);
    let rogue_key = SecretKey::from_seed([67; 32]);
    let rogue_cert = NodeCertificate::issue(&rogue_commune, rogue_key.node_id(), 0);
    let verbois_cert = passerelle_node::identity::load(&verbois.home())?.certificate;
    let addr: Multiaddr = senneval.p2p_addr()?.parse()?;
    let now = passerelle_node::clock::now_ms() as u64;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let reply = rt.block_on(async {
        let mut rogue = RoguePeer::connect(&rogue_key, addr).await;
        let roster = rogue.join(&token, &rogue_cert).await;
        rogue.greet(&rogue_cert, &roster).await;
        let beat = |cert: &NodeCertificate, time_ms: u64| Heartbeat {
            network: roster.network(),
            certificate: cert.clone(),
            time_ms,
            version: "forged".into(),
            uptime_s: 999_999,
            peers: vec![],
            documents: vec![],
            disk_bytes: 0,
            rejected: vec![],
        };
        let stranger_commune = SecretKey::from_seed([70; 32]);
        let stranger = SecretKey::from_seed([71; 32]);
        let stranger_cert = NodeCertificate::issue(&stranger_commune, stranger.node_id(), 0);
        let beats = vec![
            // Verbois's status, signed by the rogue's key.
            SignedHeartbeat::sign(beat(&verbois_cert, now + 1_000), &rogue_key),
            // Its own, dated a day ahead.
            SignedHeartbeat::sign(beat(&rogue_cert, now + 86_400_000), &rogue_key),
            // A node of a commune that is not a member.
            SignedHeartbeat::sign(beat(&stranger_cert, now), &stranger),
        ];
        let first = rogue.ask(SyncMessage::Heartbeats { beats }.encode()).await;
        // A heartbeat over the 16 KiB limit: the frame is refused unread.
        let mut w = passerelle_protocol::canonical::Writer::new("passerelle/sync", 1);
        w.u8(11).u32(1).bytes(&vec![7u8; passerelle_protocol::heartbeat::MAX_HEARTBEAT_BYTES + 1]);
        let huge = rogue.ask(w.finish()).await;
        (first, huge)
    });
    assert_eq!(reply.0, Some(SyncReply::Ok));
    assert!(matches!(reply.1, Some(SyncReply::Refused(ref r)) if r.contains("heartbeat")), "{:?}", reply.1);

    let metrics = wait_until(
        "the refusals to be counted",
        DEADLINE,
        || Ok(senneval.client()?.metrics()?),
        |m| {
            ["heartbeat_bad_signature", "heartbeat_from_the_future", "heartbeat_not_a_member"]
                .iter()
                .all(|r| m.contains(&format!("passerelle_changes_rejected_total{{reason=\"{r}\"}} 1")))
        },
    )?;
    assert!(
        metrics.contains("passerelle_sync_faults_total 2"),
        "the forged and the oversized ones are faults of their sender:\n{metrics}"
    );
    for b in senneval.client()?.heartbeats()? {
        assert_ne!(b.version, "forged", "a refused heartbeat is shown: {b:?}");
    }
    assert!(senneval.log().contains("heartbeat refused"));
    Ok(())
}
