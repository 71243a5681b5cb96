//! A peer that speaks the sync protocol badly on purpose: malformed and
//! oversized frames, forged signatures, unknown authors, a member that is
//! not a writer, a hello that lies about its key. Nothing it sends is
//! applied, each fault is counted against it, it is disconnected after
//! repeated faults, and the node keeps serving its honest peers.
//!
//! ```text
//!   rogue (libp2p, hand-made messages) ──▶ Senneval ◀── Verbois (honest)
//! ```

use std::time::Duration;

use futures::StreamExt;
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, StreamProtocol, Swarm, noise, tcp, yamux};
use passerelle_node::net::codec::SyncCodec;
use passerelle_protocol::automerge::Change;
use passerelle_protocol::certificate::NodeCertificate;
use passerelle_protocol::document::{self, Edit};
use passerelle_protocol::envelope::ChangeEnvelope;
use passerelle_protocol::header::{DocHeader, DocKind, Scope, SignedHeader};
use passerelle_protocol::ids::DocId;
use passerelle_protocol::keys::SecretKey;
use passerelle_protocol::sync::message::{PROTOCOL, SyncMessage, SyncReply};
use passerelle_tests::{TestNode, wait_converged, wait_until};

type Rogue = Swarm<request_response::Behaviour<SyncCodec>>;

fn rogue_swarm(key: &SecretKey) -> Rogue {
    let keypair = passerelle_node::net::identity::keypair(key);
    libp2p::SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_tcp(tcp::Config::default(), noise::Config::new, yamux::Config::default)
        .unwrap()
        .with_behaviour(|_| {
            request_response::Behaviour::with_codec(
                SyncCodec,
                [(StreamProtocol::new(PROTOCOL), ProtocolSupport::Full)],
                request_response::Config::default(),
            )
        })
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build()
}

thread_local! {
    /// Whether the node closed a connection with the rogue at some point.
    static CLOSED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Sends one raw request and waits for its reply (None if the connection failed).
async fn ask(swarm: &mut Rogue, peer: PeerId, bytes: Vec<u8>) -> Option<SyncReply> {
    let id = swarm.behaviour_mut().send_request(&peer, bytes.into());
    let deadline = tokio::time::sleep(Duration::from_secs(20));
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            event = swarm.select_next_some() => match event {
                SwarmEvent::Behaviour(request_response::Event::Message {
                    message: request_response::Message::Response { request_id, response }, ..
                }) if request_id == id => return Some(response),
                SwarmEvent::Behaviour(request_response::Event::OutboundFailure { request_id, .. }) if request_id == id => return None,
                SwarmEvent::ConnectionClosed { num_established: 0, .. } => CLOSED.with(|c| c.set(true)),
                SwarmEvent::Behaviour(request_response::Event::Message {
                    message: request_response::Message::Request { channel, .. }, ..
                }) => {
                    let _ = swarm.behaviour_mut().send_response(channel, SyncReply::Ok);
                }
                _ => {}
            },
            _ = &mut deadline => return None,
        }
    }
}

async fn connect(swarm: &mut Rogue, addr: Multiaddr) -> PeerId {
    swarm.dial(addr).unwrap();
    loop {
        if let SwarmEvent::ConnectionEstablished { peer_id, .. } = swarm.select_next_some().await {
            return peer_id;
        }
    }
}

fn change_envelope(doc: DocId, key: &SecretKey, base: Option<&[u8]>, text: &str) -> ChangeEnvelope {
    let mut am = document::new_document(&key.node_id());
    if let Some(first) = base {
        am.apply_changes(vec![Change::from_bytes(first.to_vec()).unwrap()]).unwrap();
    }
    let edit = Edit::Text { field: "title".into(), lang: "fr".into(), text: text.into() };
    let change = document::commit(&mut am, &[edit], "rogue", 1_000).unwrap().unwrap();
    ChangeEnvelope::sign(doc, &change, key)
}

#[test]
fn bad_input_on_the_wire_is_refused_and_the_node_keeps_serving() -> anyhow::Result<()> {
    let mut a = TestNode::init_p2p("Senneval", "BE")?;
    let mut b = TestNode::init_p2p("Verbois", "BE")?;
    a.start()?;
    b.start()?;
    let target = a.cli_json(&["request", "create", "--title", "Demande honnête"])?;
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
        let mut swarm = rogue_swarm(&rogue_key);
        let peer = connect(&mut swarm, addr.clone()).await;
        let mut replies = Vec::new();
        // 1. A hello that certifies another key than the connection's.
        let lying = NodeCertificate::issue(&rogue_commune, stranger.node_id(), 0);
        replies.push(("lying hello", ask(&mut swarm, peer, SyncMessage::Hello { certificate: lying }.encode()).await));
        // 2. A proper hello, so the rest is processed.
        replies.push((
            "hello",
            ask(&mut swarm, peer, SyncMessage::Hello { certificate: rogue_cert.clone() }.encode()).await,
        ));
        // 3. Its own document, properly signed: accepted (it is a member of nothing yet, but
        //    membership is the federation's concern); then changes that must all be refused.
        let header = DocHeader::new(DocKind::Request, rogue_commune.commune_id(), Scope::Network, 1_000, [1; 16]);
        let signed = SignedHeader::sign(header, &rogue_key, rogue_cert.clone());
        let own = signed.id();
        let mut forged = change_envelope(own, &rogue_key, None, "forgé");
        forged.signature[10] ^= 1;
        let unknown_author = change_envelope(own, &stranger, None, "inconnu");
        // A change to Senneval's request by a certified node whose commune is not a writer.
        let not_writer = change_envelope(target_id, &rogue_key, None, "détourné");
        let docs = SyncMessage::Docs {
            certificates: vec![rogue_cert.clone()],
            headers: vec![signed],
            changes: vec![forged, unknown_author, not_writer],
        };
        replies.push(("bad docs", ask(&mut swarm, peer, docs.encode()).await));
        // 4. A message of a protocol version from the future, a frame announcing more
        //    than the limit, then garbage.
        let mut future = passerelle_protocol::canonical::Writer::new("passerelle/sync", 9);
        future.u8(2).u64(0).fixed(&[0; 16]);
        replies.push(("future version", ask(&mut swarm, peer, future.finish()).await));
        replies.push(("oversized", ask(&mut swarm, peer, vec![0u8; 5 * 1024 * 1024]).await));
        replies.push(("garbage again", ask(&mut swarm, peer, b"not a frame".to_vec()).await));
        // 5. By now the node has closed the connection (it may accept a new one).
        let closed = CLOSED.with(|c| c.get()) || {
            let deadline = tokio::time::sleep(Duration::from_secs(10));
            tokio::pin!(deadline);
            loop {
                tokio::select! {
                    event = swarm.select_next_some() => {
                        if let SwarmEvent::ConnectionClosed { num_established: 0, .. } = event { break true }
                    }
                    _ = &mut deadline => break false,
                }
            }
        };
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
    assert!(a.cli_json(&["verify"])?["failures"].as_array().unwrap().is_empty());

    // The node keeps serving honest peers.
    b.connect_to(&a)?;
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
    a.cli_json(&["request", "create", "--title", "Demande"])?;
    let addr: Multiaddr = a.p2p_addr()?.parse()?;
    let key = SecretKey::from_seed([70; 32]);
    let cert = NodeCertificate::issue(&SecretKey::from_seed([71; 32]), key.node_id(), 0);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let (ok, busy) = rt.block_on(async {
        let mut swarm = rogue_swarm(&key);
        let peer = connect(&mut swarm, addr).await;
        ask(&mut swarm, peer, SyncMessage::Hello { certificate: cert }.encode()).await;
        let summary: std::sync::Arc<[u8]> = SyncMessage::Summary { count: 1, fingerprint: [7; 16] }.encode().into();
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
    b.connect_to(&a)?;
    wait_converged(&[&a, &b], 3, Duration::from_secs(60))?;
    Ok(())
}
