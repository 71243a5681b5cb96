//! A peer that speaks the sync protocol badly on purpose: malformed and
//! oversized frames, forged signatures, unknown authors, a member that is
//! not a writer, a hello that lies about its key. The rogue is a member of
//! the network (it redeemed an invitation like anyone), so its messages
//! get past admission. Nothing it sends is applied, each fault is counted
//! against it, it is disconnected after repeated faults, and the node keeps
//! serving its honest peers.
//!
//! ```text
//!   rogue (libp2p, hand-made messages) ──▶ Senneval ◀── Verbois (honest)
//! ```

use std::time::Duration;

use futures::StreamExt;
use libp2p::Multiaddr;
use libp2p::request_response;
use libp2p::swarm::SwarmEvent;
use passerelle_protocol::certificate::NodeCertificate;
use passerelle_protocol::header::{DocHeader, DocKind, Scope, SignedHeader};
use passerelle_protocol::ids::DocId;
use passerelle_protocol::keys::SecretKey;
use passerelle_protocol::sync::message::{SyncMessage, SyncReply};
use passerelle_protocol::sync::session::Session;
use passerelle_tests::rogue::{RoguePeer, change_envelope};
use passerelle_tests::{TestNode, form_network, wait_converged, wait_until};

#[test]
fn bad_input_on_the_wire_is_refused_and_the_node_keeps_serving() -> anyhow::Result<()> {
    let mut a = TestNode::init_p2p("Senneval", "BE")?;
    let mut b = TestNode::init_p2p("Verbois", "BE")?;
    a.start()?;
    b.start()?;
    form_network(&a, &[])?;
    let token = a.cli_json(&["invite", "--name", "Rogue", "--country", "BE"])?["token"].as_str().unwrap().to_owned();
    let target = a.cli_json(&["request", "create", "--title", "Demande honnête", "--scope", "network"])?;
    let target_id: DocId = target["id"].as_str().unwrap().parse()?;
    let before = a.doc_heads()?;
    let addr: Multiaddr = a.p2p_addr()?.to_string().parse()?;
    let history = a.cli_json(&["history", &target_id.to_string()])?;
    let first_change_hash = history[0]["hash"].as_str().unwrap().to_owned();

    let rogue_commune = SecretKey::from_seed([66; 32]);
    let rogue_key = SecretKey::from_seed([67; 32]);
    let rogue_cert = NodeCertificate::issue(&rogue_commune, rogue_key.node_id(), 0);
    let stranger = SecretKey::from_seed([68; 32]);

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let replies = rt.block_on(async {
        let mut rogue = RoguePeer::connect(&rogue_key, addr.clone()).await;
        let roster = rogue.join(&token, &rogue_cert).await;
        let mut replies = Vec::new();
        // 1. A hello that certifies another key than the connection's.
        let lying = NodeCertificate::issue(&rogue_commune, stranger.node_id(), 0);
        replies.push(("lying hello", rogue.ask(Session::hello(&lying, &roster, true, None, vec![]).encode()).await));
        // 2. A proper hello, so the rest is processed.
        replies.push(("hello", rogue.ask(Session::hello(&rogue_cert, &roster, true, None, vec![]).encode()).await));
        // 3. Its own document, properly signed: accepted (it is a member); then
        //    changes that must all be refused.
        let header = DocHeader::new(DocKind::Request, rogue_commune.commune_id(), Scope::Network, 1_000, [1; 16]);
        let signed = SignedHeader::sign(header, &rogue_key, rogue_cert.clone());
        let own = signed.id();
        let mut forged = change_envelope(own, &rogue_key, None, "forgé");
        forged.signature.as_mut().unwrap()[10] ^= 1;
        let unknown_author = change_envelope(own, &stranger, None, "inconnu");
        // A change to Senneval's request by a certified node whose commune is not a writer.
        let not_writer = change_envelope(target_id, &rogue_key, None, "détourné");
        let docs = SyncMessage::Docs {
            certificates: vec![rogue_cert.clone()],
            headers: vec![signed],
            changes: vec![forged, unknown_author, not_writer],
        };
        replies.push(("bad docs", rogue.ask(docs.encode()).await));
        // 4. A message of a protocol version from the future, a frame announcing more
        //    than the limit, then garbage.
        let mut future = passerelle_protocol::canonical::Writer::new("passerelle/sync", 9);
        future.u8(2).u64(0).fixed(&[0; 16]);
        replies.push(("future version", rogue.ask(future.finish()).await));
        replies.push(("oversized", rogue.ask(vec![0u8; 5 * 1024 * 1024]).await));
        replies.push(("garbage again", rogue.ask(b"not a frame".to_vec()).await));
        // 5. By now the node has closed the connection (it may accept a new one).
        let closed = rogue.wait_closed(Duration::from_secs(10)).await;
        (replies, closed)
    });
    let (replies, closed) = replies;
    println!("{replies:?}");
    assert!(matches!(replies[0].1, Some(SyncReply::Ok)), "a hello is acknowledged, then checked");
    // The third fault (lying hello, unverifiable changes, garbage) closes the
    // connection: the garbage's refusal may not even reach the rogue.
    assert!(matches!(replies[3].1, Some(SyncReply::Refused(_)) | None), "a future version is refused: {replies:?}");
    assert!(replies[4].1.is_none(), "a frame over the limit is never answered: {replies:?}");
    assert!(closed, "the rogue was disconnected; node log:\n{}", a.log());

    // Nothing of Senneval's changed; the rogue's faults are on record.
    let after = a.doc_heads()?;
    assert_eq!(after.get(&target_id.to_string()), before.get(&target_id.to_string()));
    let history = a.cli_json(&["history", &target_id.to_string()])?;
    assert_eq!(history.as_array().unwrap().len(), 1);
    assert_eq!(history[0]["hash"], first_change_hash);
    let rogue_id = rogue_key.node_id().to_string();
    let peers = a.cli_json(&["peers"])?;
    let rogue = peers.as_array().unwrap().iter().find(|p| p["node"] == rogue_id).expect("the rogue is on record");
    assert!(rogue["rejected"].as_u64().unwrap() >= 5, "{rogue}");
    let log = a.log();
    for reason in ["bad signature", "unknown author", "not a writer", "malformed sync message", "hello certifies node"]
    {
        assert!(log.contains(reason), "the log names {reason:?}");
    }
    // Counted by reason for Prometheus too.
    let metrics = a.client()?.metrics()?;
    for line in ["passerelle_changes_rejected_total{reason=\"bad_signature\"}", "passerelle_sync_faults_total"] {
        let value: f64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix(line).map(|v| v.trim().parse().unwrap_or(0.0)))
            .unwrap_or_else(|| panic!("{line} missing from:\n{metrics}"));
        assert!(value >= 1.0, "{line} {value}");
    }
    assert!(a.cli_json(&["verify"])?["failures"].as_array().unwrap().is_empty());

    // The node keeps serving honest peers (a new member joins and syncs).
    let token = a.cli_json(&["invite", "--name", "Verbois", "--country", "BE"])?["token"].as_str().unwrap().to_owned();
    assert_eq!(b.cli(&["join", &token]).code, 0);
    wait_converged(&[&a, &b], 3, Duration::from_secs(60))?;
    wait_until(
        "Verbois to be connected",
        Duration::from_secs(30),
        || Ok(a.cli_json(&["status"])?["peers_connected"].clone()),
        |n| n == 1,
    )?;
    Ok(())
}

/// A peer that floods a node with valid messages gets back-pressure (`Busy`)
/// and bounded memory, not a node that stops serving.
#[test]
fn a_flooding_peer_does_not_stop_the_node() -> anyhow::Result<()> {
    let mut a = TestNode::init_p2p("Senneval", "BE")?;
    let mut b = TestNode::init_p2p("Verbois", "BE")?;
    a.start()?;
    b.start()?;
    form_network(&a, &[])?;
    let token = a.cli_json(&["invite", "--name", "Flood", "--country", "BE"])?["token"].as_str().unwrap().to_owned();
    a.cli_json(&["request", "create", "--title", "Demande", "--scope", "network"])?;
    let addr: Multiaddr = a.p2p_addr()?.parse()?;
    let key = SecretKey::from_seed([70; 32]);
    let cert = NodeCertificate::issue(&SecretKey::from_seed([71; 32]), key.node_id(), 0);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let (ok, busy) = rt.block_on(async {
        let mut rogue = RoguePeer::connect(&key, addr).await;
        let roster = rogue.join(&token, &cert).await;
        rogue.ask(Session::hello(&cert, &roster, true, None, vec![]).encode()).await;
        let (swarm, peer) = (&mut rogue.swarm, rogue.peer);
        let fp = roster.fingerprint();
        let summary = SyncMessage::Summary { count: 1, fingerprint: [7; 16], roster_count: fp.count, roster_fingerprint: fp.xor, pending: 0 };
        let summary: std::sync::Arc<[u8]> = summary.encode().into();
        for _ in 0..2_000 {
            swarm.behaviour_mut().send_request(&peer, summary.clone());
        }
        let (mut ok, mut busy, mut done) = (0, 0, 0);
        let deadline = tokio::time::sleep(Duration::from_secs(60));
        tokio::pin!(deadline);
        while done < 2_000 {
            tokio::select! {
                event = swarm.select_next_some() => match event {
                    SwarmEvent::Behaviour(request_response::Event::Message {
                        message: request_response::Message::Response { response, .. }, ..
                    }) => {
                        done += 1;
                        match response { SyncReply::Ok => ok += 1, SyncReply::Busy => busy += 1, SyncReply::Refused(_) => {} }
                    }
                    SwarmEvent::Behaviour(request_response::Event::OutboundFailure { .. }) => done += 1,
                    SwarmEvent::Behaviour(request_response::Event::Message {
                        message: request_response::Message::Request { channel, .. }, ..
                    }) => {
                        let _ = swarm.behaviour_mut().send_response(channel, SyncReply::Ok);
                    }
                    _ => {}
                },
                _ = &mut deadline => break,
            }
        }
        (ok, busy)
    });
    println!("flood: {ok} accepted, {busy} answered busy");
    assert!(ok > 0);
    // The node still answers its API and serves an honest peer.
    assert_eq!(a.cli_json(&["status"])?["documents"]["request"], 1);
    let token = a.cli_json(&["invite", "--name", "Verbois", "--country", "BE"])?["token"].as_str().unwrap().to_owned();
    assert_eq!(b.cli(&["join", &token]).code, 0);
    wait_converged(&[&a, &b], 3, Duration::from_secs(60))?;
    Ok(())
}

/// A stranger (no membership) that connects and stays silent is dropped at
/// the hello deadline; one that presents forged invitations again and
/// again is cut off; neither leaves a record, a heartbeat line or a metric
/// behind, even across a restart, and the node keeps serving.
#[test]
fn strangers_leave_nothing_behind() -> anyhow::Result<()> {
    use passerelle_protocol::network::Invitation;
    let mut a = TestNode::init_p2p("Senneval", "BE")?;
    a.start()?;
    form_network(&a, &[])?;
    let token =
        a.cli_json(&["invite", "--name", "Quelqu'un", "--country", "BE"])?["token"].as_str().unwrap().to_owned();
    let addr: Multiaddr = a.p2p_addr()?.parse()?;
    let silent = SecretKey::from_seed([80; 32]);
    let joiner = SecretKey::from_seed([81; 32]);
    let joiner_cert = NodeCertificate::issue(&SecretKey::from_seed([82; 32]), joiner.node_id(), 0);
    // The real invitation with its name changed: the signature no longer holds.
    let mut forged = Invitation::from_token(&token)?;
    forged.terms.name = "Autre".into();

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let (silent_closed_after, joins_answered, join_closed) = rt.block_on(async {
        let started = std::time::Instant::now();
        let mut quiet = RoguePeer::connect(&silent, addr.clone()).await;
        let closed = quiet.wait_closed(Duration::from_secs(60)).await;
        let silent_closed_after = closed.then(|| started.elapsed());
        let mut flood = RoguePeer::connect(&joiner, addr).await;
        let join =
            SyncMessage::Join { invitation: Box::new(forged.clone()), certificate: joiner_cert.clone(), addrs: vec![] };
        // Acknowledgements come from the swarm task at once; the refusals
        // and the cut come from the engine: count what the engine answered.
        for _ in 0..50 {
            if flood.ask(join.encode()).await.is_none() || flood.closed {
                break;
            }
        }
        let join_closed = flood.wait_closed(Duration::from_secs(10)).await;
        let refused = flood.inbox.iter().filter(|m| matches!(m, SyncMessage::JoinRefused { .. })).count();
        (silent_closed_after, refused, join_closed)
    });
    let after = silent_closed_after.expect("the silent stranger was disconnected");
    assert!(after >= Duration::from_secs(25) && after < Duration::from_secs(45), "dropped after {after:?}");
    let most = passerelle_protocol::sync::session::MAX_JOINS as usize;
    assert!(join_closed, "the join flood was cut off");
    assert!((1..=most).contains(&joins_answered), "{joins_answered} joins answered before the cut");
    let log = a.log();
    assert!(log.contains("no hello within 30 s"), "the log says why:\n{log}");

    let strangers = [silent.node_id().to_string(), joiner.node_id().to_string()];
    let no_trace = |a: &TestNode| -> anyhow::Result<()> {
        let peers = a.cli_json(&["peers"])?;
        assert!(
            peers.as_array().unwrap().iter().all(|p| !strangers.contains(&p["node"].as_str().unwrap_or("").to_owned())),
            "a stranger is on record: {peers}"
        );
        let metrics = a.client()?.metrics()?;
        for s in &strangers {
            assert!(!metrics.contains(&s[..8]), "a stranger has a metric series");
        }
        let beats = serde_json::to_string(&a.client()?.heartbeats()?)?;
        for s in &strangers {
            assert!(!beats.contains(s.as_str()), "a stranger is in a heartbeat");
        }
        Ok(())
    };
    no_trace(&a)?;
    a.terminate()?;
    a.start()?;
    no_trace(&a)?;
    assert_eq!(a.cli_json(&["network", "show"])?["members"].as_array().map(Vec::len), Some(1));
    Ok(())
}
