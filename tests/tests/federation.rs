//! Federation security, with real nodes and a hand-driven rogue peer:
//! invitations (reused, expired, tampered), non-members at the door,
//! revoked keys (before and after their revocation, relayed by a member,
//! and learnt by a node that was offline), replayed changes, and
//! partnership documents that never reach a non-partner (a spy proves it
//! from the bytes it received). Each refusal is logged with its reason and
//! the honest data stays intact.

use std::time::Duration;

use libp2p::Multiaddr;
use passerelle_protocol::certificate::NodeCertificate;
use passerelle_protocol::ids::DocId;
use passerelle_protocol::keys::SecretKey;
use passerelle_protocol::network::{Invitation, InvitationTerms, Role, SignedStatement, Statement};
use passerelle_protocol::sync::message::SyncMessage;
use passerelle_tests::rogue::{RoguePeer, change_envelope};
use passerelle_tests::{TestNode, federation, form_network, make_partners, wait_converged, wait_until};

const DEADLINE: Duration = Duration::from_secs(60);

fn invite(coordinator: &TestNode, name: &str, country: &str) -> anyhow::Result<String> {
    Ok(coordinator.cli_json(&["invite", "--name", name, "--country", country])?["token"].as_str().unwrap().to_owned())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// An invitation signed with the coordinator's real commune key, as a
/// coordinator's node would issue it, but with chosen fields.
fn crafted(coordinator: &TestNode, expires_ms: u64, addrs: Vec<String>) -> anyhow::Result<Invitation> {
    let id = passerelle_node::identity::load(&coordinator.home())?;
    let network = coordinator.cli_json(&["network", "show"])?["network"].as_str().unwrap().parse()?;
    Ok(Invitation::issue(
        &id.commune_key,
        InvitationTerms {
            network,
            issuer_node: id.node_id(),
            addrs,
            name: "Hautrieu".into(),
            country: "BE".into(),
            role: Role::Commune,
            expires_ms,
            id: [42; 16],
        },
    ))
}

#[test]
fn invitations_are_single_use_expiring_and_tamper_proof() -> anyhow::Result<()> {
    let mut sec = TestNode::init_p2p("Secretariat", "BE")?;
    let mut verbois = TestNode::init_p2p("Verbois", "BE")?;
    let mut hautrieu = TestNode::init_p2p("Hautrieu", "BE")?;
    for n in [&mut sec, &mut verbois, &mut hautrieu] {
        n.start()?;
    }
    form_network(&sec, &[])?;
    let token = invite(&sec, "Verbois", "BE")?;
    assert_eq!(verbois.cli(&["join", &token]).code, 0);

    // Reused: refused by the coordinator's node, which recorded the first use.
    let r = hautrieu.cli(&["join", &token]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("already used"), "{}", r.stderr);
    // Tampered: one hex digit of the signature changed.
    let fresh = invite(&sec, "Hautrieu", "BE")?;
    let mut bad = fresh.clone().into_bytes();
    let i = bad.len() - 10;
    bad[i] = if bad[i] == b'0' { b'1' } else { b'0' };
    let r = hautrieu.cli(&["join", std::str::from_utf8(&bad)?]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("signature does not match"), "{}", r.stderr);
    // Expired (signed by the coordinator, but in the past).
    let addrs = vec![sec.p2p_addr()?];
    let expired = crafted(&sec, 1_000, addrs.clone())?;
    let r = hautrieu.cli(&["join", &expired.to_token()]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("expired"), "{}", r.stderr);
    // Not a token at all: a usage error.
    assert_eq!(hautrieu.cli(&["join", "bonjour"]).code, 2);

    // The coordinator's node checks too, whatever the joining side does.
    let addr: Multiaddr = sec.p2p_addr()?.parse()?;
    let reasons = runtime().block_on(async {
        let commune = SecretKey::from_seed([90; 32]);
        let key = SecretKey::from_seed([91; 32]);
        let cert = NodeCertificate::issue(&commune, key.node_id(), 0);
        let mut rogue = RoguePeer::connect(&key, addr).await;
        let mut reasons = Vec::new();
        let mut tampered = Invitation::from_token(&fresh).unwrap();
        tampered.terms.role = Role::Coordinator;
        let unknown = crafted(&sec, u64::MAX, addrs.clone()).unwrap();
        for inv in [Invitation::from_token(&token).unwrap(), expired.clone(), tampered, unknown] {
            rogue.inbox.clear();
            match rogue.redeem(&inv, &cert).await {
                Some(SyncMessage::JoinRefused { reason }) => reasons.push(reason),
                other => panic!("not refused: {other:?}"),
            }
        }
        reasons
    });
    assert!(reasons[0].contains("already used"), "{reasons:?}");
    assert!(reasons[1].contains("expired"), "{reasons:?}");
    assert!(reasons[2].contains("signature"), "{reasons:?}");
    assert!(reasons[3].contains("no record of issuing"), "{reasons:?}");
    assert!(sec.log().contains("invitation refused"));

    // The honest path still works, and the roster holds exactly three members.
    assert_eq!(hautrieu.cli(&["join", &fresh]).code, 0);
    let members = sec.cli_json(&["members"])?;
    assert_eq!(members.as_array().unwrap().len(), 3, "{members}");
    Ok(())
}

#[test]
fn outsiders_are_refused_at_the_door() -> anyhow::Result<()> {
    let mut sec = TestNode::init_p2p("Secretariat", "BE")?;
    let mut other = TestNode::init_p2p("Ailleurs", "BE")?;
    sec.start()?;
    other.start()?;
    form_network(&sec, &[])?;
    sec.cli_json(&["offer", "create", "--title", "Réservé au réseau"])?;
    // A node of another network connects: refused at its hello, nothing exchanged.
    form_network(&other, &[])?;
    other.connect_to(&sec)?;
    wait_until("the refusal", DEADLINE, || Ok(sec.log()), |log| log.contains("peer belongs to network"))?;
    assert_eq!(other.doc_heads()?.len(), 1, "only its own profile");
    assert_eq!(sec.doc_heads()?.len(), 2);

    // A stranger with a self-made "proof" (an admission it signed itself).
    let addr: Multiaddr = sec.p2p_addr()?.parse()?;
    let network = sec.cli_json(&["network", "show"])?["network"].as_str().unwrap().parse()?;
    let (closed, got_docs) = runtime().block_on(async {
        let commune = SecretKey::from_seed([80; 32]);
        let key = SecretKey::from_seed([81; 32]);
        let cert = NodeCertificate::issue(&commune, key.node_id(), 0);
        let self_admit = SignedStatement::sign(
            &commune,
            network,
            5,
            Statement::Admit {
                member: commune.commune_id(),
                name: "Intrus".into(),
                country: "BE".into(),
                role: Role::Coordinator,
                invitation: [0; 16],
                node: key.node_id(),
                addrs: vec![],
            },
        );
        let mut rogue = RoguePeer::connect(&key, addr).await;
        let hello = SyncMessage::Hello {
            certificate: cert,
            network,
            roster_count: 0,
            roster_fingerprint: [0; 16],
            proof: vec![self_admit],
            summary: None,
            routes: vec![],
        };
        rogue.ask(hello.encode()).await;
        let closed = rogue.wait_closed(Duration::from_secs(10)).await;
        (closed, rogue.inbox.iter().any(|m| matches!(m, SyncMessage::Docs { .. } | SyncMessage::Roster { .. })))
    });
    assert!(closed, "the stranger was disconnected");
    assert!(!got_docs, "a stranger receives nothing");
    assert!(sec.log().contains("not admitted"), "{}", sec.log());
    assert!(sec.cli_json(&["verify"])?["failures"].as_array().unwrap().is_empty());
    Ok(())
}

/// ```text
///   Secretariat ─── Verbois (its key is stolen, then revoked)
///        │
///   Hautrieu (offline during the revocation)      rogue member relays the thief's change
/// ```
#[test]
fn a_revoked_key_is_refused_after_its_revocation_only() -> anyhow::Result<()> {
    let [sec, mut verbois, mut hautrieu] = federation([("Secretariat", "BE"), ("Verbois", "BE"), ("Hautrieu", "BE")])?;
    let doc = verbois.cli_json(&["offer", "create", "--title", "Formation au tri"])?;
    let doc_id: DocId = doc["id"].as_str().unwrap().parse()?;
    wait_converged(&[&sec, &verbois, &hautrieu], 4, DEADLINE)?;
    let history = sec.cli_json(&["history", &doc_id.to_string()])?;
    let first_hash = history[0]["hash"].as_str().unwrap().to_owned();

    // The thief holds Verbois's node key; Verbois stops; Hautrieu is offline.
    let stolen = passerelle_node::identity::load(&verbois.home())?;
    verbois.terminate()?;
    hautrieu.terminate()?;
    let thief_node = stolen.node_id().to_string();
    let shown = sec.cli_json(&["network", "revoke", &thief_node])?;
    assert_eq!(shown["revoked"][0], thief_node.as_str());

    let token = invite(&sec, "Relais", "BE")?;
    let sec_addr: Multiaddr = sec.p2p_addr()?.parse()?;
    let rt = runtime();
    let (header, first_change) = rt.block_on(async {
        let commune = SecretKey::from_seed([60; 32]);
        let key = SecretKey::from_seed([61; 32]);
        let cert = NodeCertificate::issue(&commune, key.node_id(), 0);
        let mut rogue = RoguePeer::connect(&key, sec_addr).await;
        let roster = rogue.join(&token, &cert).await;
        rogue.greet(&cert, &roster).await;
        // Ask for everything: claim to hold nothing.
        let buckets = vec![Default::default(); passerelle_protocol::sync::fingerprint::BUCKETS];
        rogue.listen(Duration::from_millis(500)).await;
        rogue.ask(SyncMessage::Buckets { buckets }.encode()).await;
        rogue.listen(Duration::from_secs(2)).await;
        let mut header = None;
        let mut first = None;
        for m in &rogue.inbox {
            if let SyncMessage::Docs { headers, changes, .. } = m {
                header = header.or_else(|| headers.iter().find(|h| h.id() == doc_id).cloned());
                first = first.or_else(|| changes.iter().find(|c| c.doc == doc_id).cloned());
            }
        }
        let (header, first) = (header.expect("the header"), first.expect("the first change"));
        // The thief's change after the revocation, and the old change replayed.
        let theft = change_envelope(doc_id, &stolen.node_key, Some(&first.change), "volé");
        let docs = SyncMessage::Docs {
            certificates: vec![stolen.certificate.clone()],
            headers: vec![header.clone()],
            changes: vec![theft, first.clone()],
        };
        rogue.ask(docs.encode()).await;
        rogue.listen(Duration::from_millis(500)).await;
        (header, first)
    });
    wait_until("the refusal", DEADLINE, || Ok(sec.log()), |log| log.contains("is revoked"))?;
    let history = sec.cli_json(&["history", &doc_id.to_string()])?;
    assert_eq!(history.as_array().unwrap().len(), 1, "only the change signed before the revocation: {history}");
    assert_eq!(history[0]["hash"], first_hash.as_str());
    assert!(sec.cli_json(&["verify"])?["failures"].as_array().unwrap().is_empty(), "old history still verifies");

    // Hautrieu was offline: it comes back, learns of the revocation from the
    // secretariat, and refuses the thief's change relayed by a member.
    hautrieu.start()?;
    wait_until(
        "Hautrieu to learn of the revocation",
        DEADLINE,
        || hautrieu.cli_json(&["network", "show"]),
        |n| n["revoked"][0] == thief_node.as_str(),
    )?;
    let token = invite(&sec, "Relais 2", "BE")?;
    let h_addr: Multiaddr = hautrieu.p2p_addr()?.parse()?;
    let s_addr: Multiaddr = sec.p2p_addr()?.parse()?;
    let relay_key = SecretKey::from_seed([63; 32]);
    let told = rt.block_on(async {
        let commune = SecretKey::from_seed([62; 32]);
        let key = relay_key.clone();
        let cert = NodeCertificate::issue(&commune, key.node_id(), 0);
        let mut at_sec = RoguePeer::connect(&key, s_addr).await;
        let roster = at_sec.join(&token, &cert).await;
        let mut rogue = RoguePeer::connect(&key, h_addr).await;
        rogue.greet(&cert, &roster).await;
        rogue.listen(Duration::from_millis(500)).await;
        let theft = change_envelope(doc_id, &stolen.node_key, Some(&first_change.change), "volé encore");
        let docs = SyncMessage::Docs {
            certificates: vec![stolen.certificate.clone()],
            headers: vec![header],
            changes: vec![theft],
        };
        rogue.ask(docs.encode()).await;
        // Proposals leave after 2 s (gathered per peer).
        rogue.listen(Duration::from_secs(5)).await;
        // Hautrieu says it refused part of the document, and why, and
        // proposes to leave it apart instead of it being sent again at
        // every round; the relay agrees (answers, as the core does).
        let proposal = rogue
            .inbox
            .iter()
            .find(|m| matches!(m, SyncMessage::Differ { docs, .. } if docs.contains(&(doc_id, "revoked".into()))));
        let told = proposal.is_some();
        if let Some(SyncMessage::Differ { roster_count, roster_fingerprint, docs, .. }) = proposal.cloned() {
            let answer = SyncMessage::Differ { answer: true, roster_count, roster_fingerprint, docs };
            rogue.ask(answer.encode()).await;
            rogue.listen(Duration::from_millis(500)).await;
        }
        told
    });
    wait_until("Hautrieu's refusal", DEADLINE, || Ok(hautrieu.log()), |log| log.contains("is revoked"))?;
    assert_eq!(hautrieu.cli_json(&["history", &doc_id.to_string()])?.as_array().unwrap().len(), 1);
    assert!(told, "the member that sent the refused change was told (Differ)");
    let pending = hautrieu.cli_json(&["peer", "pending", &relay_key.node_id().to_string()])?;
    let entry = pending.as_array().unwrap().iter().find(|d| d["id"] == doc_id.to_string().as_str());
    let apart = &entry.unwrap_or_else(|| panic!("the document is listed: {pending}"))["apart"];
    assert_eq!((apart["refused_by"].as_str(), apart["code"].as_str()), (Some("here"), Some("revoked")), "{pending}");
    let verified = hautrieu.cli_json(&["verify"])?;
    assert!(verified["failures"].as_array().unwrap().is_empty(), "{verified}");
    assert_eq!(verified["apart"][0]["doc"], doc_id.to_string().as_str(), "verify says so too: {verified}");

    // Verbois, restarted with its revoked key, is refused at the door.
    verbois.start()?;
    wait_until("Verbois to be refused", DEADLINE, || Ok(sec.log()), |log| log.contains("not admitted: node key"))?;
    Ok(())
}

/// ```text
///   Senneval ═══ Tala-n-Asif      partners, each with partnership documents
///        \         /
///         spy (a plain member, connected to both; and a rogue asking for everything)
/// ```
#[test]
fn partnership_documents_never_reach_a_non_partner() -> anyhow::Result<()> {
    let [sec, senneval, tala, mut spy] =
        federation([("Secretariat", "BE"), ("Senneval", "BE"), ("Tala-n-Asif", "MA"), ("Espion", "BE")])?;
    make_partners(&senneval, &tala)?;
    senneval.connect_to(&tala)?;
    spy.connect_to(&senneval)?;
    spy.connect_to(&tala)?;
    let secret_title = "Demande confidentielle 7f3a";
    let secret = tala.cli_json(&["request", "create", "--title", secret_title])?;
    assert_eq!(secret["scope"], "partnership");
    let secret_id: DocId = secret["id"].as_str().unwrap().parse()?;
    let public = tala.cli_json(&["practice", "create", "--title", "Fiche publique"])?;
    let public_id = public["id"].as_str().unwrap().to_owned();
    wait_until(
        "the partner to hold the request",
        DEADLINE,
        || Ok(senneval.cli(&["request", "show", &secret_id.to_string()]).code),
        |c| *c == 0,
    )?;
    wait_until(
        "the spy to hold the public sheet",
        DEADLINE,
        || Ok(spy.cli(&["practice", "show", &public_id]).code),
        |c| *c == 0,
    )?;
    // A few anti-entropy rounds with both holders.
    std::thread::sleep(Duration::from_secs(3));
    for n in [&spy, &sec] {
        let r = n.cli(&["request", "show", &secret_id.to_string()]);
        assert_eq!(r.code, 1, "{} must not hold the partnership request", n.name);
    }

    // A rogue member asks Senneval for everything, and for the request by name.
    let token = invite(&sec, "Curieux", "BE")?;
    let addr: Multiaddr = senneval.p2p_addr()?.parse()?;
    let raw = runtime().block_on(async {
        let commune = SecretKey::from_seed([50; 32]);
        let key = SecretKey::from_seed([51; 32]);
        let cert = NodeCertificate::issue(&commune, key.node_id(), 0);
        let mut at_sec = RoguePeer::connect(&key, sec.p2p_addr().unwrap().parse().unwrap()).await;
        let roster = at_sec.join(&token, &cert).await;
        let mut rogue = RoguePeer::connect(&key, addr).await;
        rogue.greet(&cert, &roster).await;
        rogue.listen(Duration::from_millis(500)).await;
        let buckets = vec![Default::default(); passerelle_protocol::sync::fingerprint::BUCKETS];
        rogue.ask(SyncMessage::Buckets { buckets }.encode()).await;
        let bucket = secret_id.as_bytes()[0];
        rogue.ask(SyncMessage::Items { buckets: vec![(bucket, vec![(secret_id, vec![])])] }.encode()).await;
        rogue.listen(Duration::from_secs(2)).await;
        rogue.raw
    });
    // Frames travel compressed: looked at as they are once decompressed.
    let received: Vec<u8> = raw
        .iter()
        .flat_map(|f| SyncMessage::decode(f).map(|m| m.encode_plain()).unwrap_or_else(|_| f.clone()))
        .collect();
    assert!(contains(&received, public_id.parse::<DocId>()?.as_bytes()), "the rogue did receive network documents");
    assert!(!contains(&received, secret_id.as_bytes()), "not one frame named the partnership request");
    assert!(!contains(&received, secret_title.as_bytes()));

    // The spy node's own bytes: nothing on disk names the request.
    spy.terminate()?;
    let mut stored = Vec::new();
    for entry in walk(spy.home().root())? {
        stored.extend(std::fs::read(entry)?);
    }
    assert!(!stored.is_empty());
    assert!(!contains(&stored, secret_id.as_bytes()) && !contains(&stored, secret_id.to_string().as_bytes()));
    assert!(!contains(&stored, secret_title.as_bytes()));
    Ok(())
}

/// ```text
///   Tala-n-Asif ═══ Senneval ═══ Oued-Zem     Senneval has two partners
///          \_______________________/          (connected to each other too)
/// ```
/// A request Senneval addresses to Tala-n-Asif reaches Tala-n-Asif only;
/// Senneval's other partner never holds it, whoever it syncs with, and a
/// request with no addressee is refused while Senneval has two partners.
#[test]
fn a_partnership_request_reaches_the_partner_it_names_only() -> anyhow::Result<()> {
    let [senneval, tala, mut other] = federation([("Senneval", "BE"), ("Tala-n-Asif", "MA"), ("Oued-Zem", "MA")])?;
    make_partners(&senneval, &tala)?;
    // With one partner, a request names it: a partner made later never gets it.
    let early = senneval.cli_json(&["request", "create", "--title", "Demande d'avant"])?;
    assert_eq!(early["fields"]["addressee"], tala.commune_id()?, "{early}");
    let early_id = early["id"].as_str().unwrap().to_owned();
    make_partners(&senneval, &other)?;
    wait_until(
        "Senneval to see both partnerships active",
        DEADLINE,
        || senneval.cli_json(&["partners"]),
        |p| p.as_array().is_some_and(|l| l.iter().filter(|p| p["active"] == true).count() == 2),
    )?;
    senneval.connect_to(&tala)?;
    other.connect_to(&senneval)?;
    other.connect_to(&tala)?;

    let refused = senneval.cli(&["request", "create", "--title", "Pour qui ?"]);
    assert_ne!(refused.code, 0);
    assert!(refused.stderr.contains("addressee"), "the refusal names the field: {}", refused.stderr);

    let title = "Demande pour Tala-n-Asif 91c2";
    let addressee = format!("addressee={}", tala.commune_id()?);
    let secret = senneval.cli_json(&["request", "create", "--title", title, "--field", &addressee])?;
    assert_eq!(secret["scope"], "partnership");
    let secret_id = secret["id"].as_str().unwrap().to_owned();
    // A sheet for all of Senneval's partners shows that the other partner syncs.
    let shared =
        senneval.cli_json(&["practice", "create", "--title", "Fiche partenaires", "--scope", "partnership"])?;
    let shared_id = shared["id"].as_str().unwrap().to_owned();
    wait_until(
        "Tala-n-Asif to hold the request",
        DEADLINE,
        || Ok(tala.cli(&["request", "show", &secret_id]).code),
        |c| *c == 0,
    )?;
    wait_until(
        "both partners to hold the sheet",
        DEADLINE,
        || Ok((tala.cli(&["practice", "show", &shared_id]).code, other.cli(&["practice", "show", &shared_id]).code)),
        |c| *c == (0, 0),
    )?;
    // A live edit, then a few reconciliation rounds.
    senneval.cli_json(&["request", "update", &secret_id, "--deadline", "2027-03-31"])?;
    wait_until(
        "the edit to reach Tala-n-Asif",
        DEADLINE,
        || Ok(tala.cli_json(&["request", "show", &secret_id])?["fields"]["deadline"].clone()),
        |v| v == "2027-03-31",
    )?;
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(other.cli(&["request", "show", &secret_id]).code, 1, "the other partner must not hold the request");
    assert_eq!(other.cli(&["request", "show", &early_id]).code, 1, "nor the request made before it was a partner");
    assert_eq!(tala.cli(&["request", "show", &early_id]).code, 0);

    other.terminate()?;
    let mut stored = Vec::new();
    for entry in walk(other.home().root())? {
        stored.extend(std::fs::read(entry)?);
    }
    let id: DocId = secret_id.parse()?;
    let shared: DocId = shared_id.parse()?;
    assert!(
        contains(&stored, shared.as_bytes()) || contains(&stored, shared_id.as_bytes()),
        "the other partner stored the shared sheet"
    );
    assert!(!contains(&stored, id.as_bytes()) && !contains(&stored, secret_id.as_bytes()));
    assert!(!contains(&stored, title.as_bytes()));
    Ok(())
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn walk(dir: &std::path::Path) -> anyhow::Result<Vec<std::path::PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            out.extend(walk(&path)?);
        } else {
            out.push(path);
        }
    }
    Ok(out)
}

/// ```text
///   Secretariat ─── Verbois      Verbois rotates its node key, then revokes the old one
/// ```
#[test]
fn a_rotated_key_keeps_history_verifiable_and_the_old_key_can_be_revoked() -> anyhow::Result<()> {
    let mut sec = TestNode::init_p2p("Secretariat", "BE")?;
    let mut verbois = TestNode::init_p2p("Verbois", "BE")?;
    sec.start()?;
    verbois.start()?;
    form_network(&sec, &[&verbois])?;
    let doc = verbois.cli_json(&["offer", "create", "--title", "Formation au tri"])?;
    let id = doc["id"].as_str().unwrap().to_owned();
    wait_converged(&[&sec, &verbois], 3, DEADLINE)?;
    let r = verbois.cli(&["key", "rotate"]);
    assert_eq!(r.code, 1, "a running node's key is not rotated: {}", r.stderr);
    assert!(r.stderr.contains("stop it first"), "{}", r.stderr);

    verbois.terminate()?;
    let rotated = verbois.cli_json(&["key", "rotate"])?;
    let old = rotated["old_node_id"].as_str().unwrap().to_owned();
    let new = rotated["node_id"].as_str().unwrap().to_owned();
    assert_ne!(old, new);
    verbois.start()?;
    assert_eq!(verbois.node_id()?, new);
    verbois.cli_json(&["offer", "update", &id, "--field", "availability=printemps 2027"])?;
    wait_until(
        "the change by the new key to reach the secretariat",
        DEADLINE,
        || sec.cli_json(&["history", &id]),
        |h| h.as_array().is_some_and(|h| h.len() == 2),
    )?;
    let history = sec.cli_json(&["history", &id])?;
    assert_eq!(history[0]["author_node"], old.as_str());
    assert_eq!(history[1]["author_node"], new.as_str());

    // The old key may be in other hands: Verbois revokes it; history stays valid.
    verbois.cli_json(&["network", "revoke", &old])?;
    wait_until(
        "the secretariat to learn of the revocation",
        DEADLINE,
        || sec.cli_json(&["network", "show"]),
        |n| n["revoked"][0] == old.as_str(),
    )?;
    for n in [&sec, &verbois] {
        assert!(n.cli_json(&["verify"])?["failures"].as_array().unwrap().is_empty());
        assert_eq!(n.cli_json(&["history", &id])?.as_array().unwrap().len(), 2);
    }
    let members = sec.cli_json(&["members"])?;
    let entry = members.as_array().unwrap().iter().find(|m| m["name"] == "Verbois").unwrap();
    let keys: Vec<(String, bool)> = entry["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| (k["node"].as_str().unwrap().to_owned(), k["revoked"].as_bool().unwrap()))
        .collect();
    assert_eq!(keys, vec![(old.clone(), true), (new.clone(), false)], "{entry}");
    // Revoking this node's own current key is refused: rotate first.
    let r = verbois.cli(&["network", "revoke", &new]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("rotate it first"), "{}", r.stderr);
    Ok(())
}

/// ```text
///   Secretariat (BE) ─ Senneval (BE) ─ Verbois (BE)        same country: linked on joining
///                          ║
///                     Tala-n-Asif (MA)                       partner: linked once both signed
/// ```
#[test]
fn members_link_with_their_partners_and_their_own_country() -> anyhow::Result<()> {
    let [_sec, senneval, verbois, tala] =
        federation([("Secretariat", "BE"), ("Senneval", "BE"), ("Verbois", "BE"), ("Tala-n-Asif", "MA")])?;
    let peers_of = |n: &TestNode| -> anyhow::Result<Vec<String>> {
        Ok(n.cli_json(&["peers"])?
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["configured"] == true)
            .map(|p| p["node"].as_str().unwrap().to_owned())
            .collect())
    };
    let (s, v, t) = (senneval.node_id()?, verbois.node_id()?, tala.node_id()?);
    wait_until("Senneval to link with Verbois", DEADLINE, || peers_of(&senneval), |p| p.contains(&v))?;
    assert!(!peers_of(&senneval)?.contains(&t), "not yet partners, not the same country");
    assert!(!peers_of(&tala)?.contains(&s));
    make_partners(&senneval, &tala)?;
    wait_until("Tala-n-Asif to link with its partner", DEADLINE, || peers_of(&tala), |p| p.contains(&s))?;
    wait_until(
        "the partners to be connected",
        DEADLINE,
        || tala.cli_json(&["peers"]),
        |p| p.as_array().unwrap().iter().any(|p| p["node"] == s.as_str() && p["connected"] == true),
    )?;
    assert!(!peers_of(&tala)?.contains(&v), "Verbois is neither a partner nor Moroccan");
    Ok(())
}

/// A coordinator removes a member: its node is disconnected and refused,
/// and what it writes afterwards reaches nobody.
#[test]
fn a_removed_member_is_disconnected_and_refused() -> anyhow::Result<()> {
    let [sec, verbois, hautrieu] = federation([("Secretariat", "BE"), ("Verbois", "BE"), ("Hautrieu", "BE")])?;
    wait_converged(&[&sec, &verbois, &hautrieu], 3, DEADLINE)?;
    let r = verbois.cli(&["network", "remove", "Hautrieu"]);
    assert!(r.code == 1 && r.stderr.contains("only a coordinator"), "{}", r.stderr);
    sec.cli_json(&["network", "remove", "Verbois"])?;
    for n in [&sec, &hautrieu] {
        wait_until(
            &format!("{} to see Verbois removed", n.name),
            DEADLINE,
            || n.cli_json(&["members"]),
            |m| m.as_array().unwrap().len() == 2,
        )?;
        wait_until(
            &format!("{} to drop Verbois", n.name),
            DEADLINE,
            || n.cli_json(&["peers"]),
            |p| {
                !p.as_array()
                    .unwrap()
                    .iter()
                    .any(|p| p["commune"] == verbois.commune_id().unwrap().as_str() && p["connected"] == true)
            },
        )?;
    }
    let late = verbois.cli_json(&["offer", "create", "--title", "Écrite après le retrait"])?;
    // Verbois keeps redialling: each time it is refused at the door.
    wait_until("a refusal", DEADLINE, || Ok(sec.log()), |l| l.contains("is not a member of network"))?;
    std::thread::sleep(Duration::from_secs(2));
    for n in [&sec, &hautrieu] {
        assert_eq!(n.cli(&["offer", "show", late["id"].as_str().unwrap()]).code, 1);
    }
    let r = sec.cli(&["network", "remove", "Secretariat"]);
    assert!(r.code == 1 && r.stderr.contains("cannot be removed"), "{}", r.stderr);
    Ok(())
}

/// A commune whose welcome was lost presents its invitation again and is
/// welcomed again; anyone else presenting it is refused.
#[test]
fn a_lost_welcome_can_be_asked_for_again() -> anyhow::Result<()> {
    let [sec] = federation([("Secretariat", "BE")])?;
    let token = invite(&sec, "Hautrieu", "BE")?;
    let addr: Multiaddr = sec.p2p_addr()?.parse()?;
    let answers = runtime().block_on(async {
        let invitation = Invitation::from_token(&token).unwrap();
        let commune = SecretKey::from_seed([30; 32]);
        let key = SecretKey::from_seed([31; 32]);
        let cert = NodeCertificate::issue(&commune, key.node_id(), 0);
        let mut joiner = RoguePeer::connect(&key, addr.clone()).await;
        let first = joiner.redeem(&invitation, &cert).await;
        joiner.inbox.clear();
        let again = joiner.redeem(&invitation, &cert).await;
        let other_key = SecretKey::from_seed([33; 32]);
        let other = NodeCertificate::issue(&SecretKey::from_seed([32; 32]), other_key.node_id(), 0);
        let mut thief = RoguePeer::connect(&other_key, addr).await;
        let stolen = thief.redeem(&invitation, &other).await;
        (first, again, stolen)
    });
    assert!(matches!(answers.0, Some(SyncMessage::Welcome { .. })), "{:?}", answers.0);
    assert!(matches!(answers.1, Some(SyncMessage::Welcome { .. })), "{:?}", answers.1);
    assert!(matches!(&answers.2, Some(SyncMessage::JoinRefused { reason }) if reason.contains("already used")));
    assert_eq!(sec.cli_json(&["members"])?.as_array().unwrap().len(), 2);
    Ok(())
}
