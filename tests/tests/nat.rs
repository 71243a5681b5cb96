//! NAT traversal on loopback: a node that accepts no inbound connection
//! (it listens on nothing) still syncs with its partner, through a relay.
//!
//! ```text
//!   Senneval (relay, coordinator) ─── Verbois
//!        │ reservation
//!   Tala-n-Asif (no listener, dials only the relay)
//! ```
//!
//! Verbois reaches Tala-n-Asif at `<Senneval>/p2p-circuit/p2p/<Tala>`; the
//! connection is end-to-end encrypted, so the relay forwards bytes it
//! cannot read, and the partnership request between the two never reaches
//! the relay's store.

use std::time::Duration;

use passerelle_tests::{TestNode, form_network, make_partners, wait_until};

const DEADLINE: Duration = Duration::from_secs(60);

#[test]
fn a_node_that_cannot_be_dialled_syncs_through_a_relay() -> anyhow::Result<()> {
    let mut senneval = TestNode::init_p2p("Senneval", "BE")?;
    senneval.set_network("relay_server", "true")?;
    senneval.start()?;
    let relay =
        format!("{}/p2p/{}", senneval.p2p_addr()?, senneval.cli_json(&["status"])?["peer_id"].as_str().unwrap());

    let mut verbois = TestNode::init_p2p("Verbois", "BE")?;
    verbois.set_network("relays", &format!("[\"{relay}\"]"))?;
    verbois.start()?;
    let mut tala = TestNode::init_p2p("Tala-n-Asif", "MA")?;
    tala.set_listen(&[])?;
    tala.set_network("relays", &format!("[\"{relay}\"]"))?;
    // It never dials its partner itself: only the relay path can link them.
    tala.set_network("auto_links", "false")?;
    tala.start()?;

    // A node outside the network asks the relay too: it serves members only.
    let mut intruder = TestNode::init_p2p("Intrus", "BE")?;
    intruder.set_listen(&[])?;
    intruder.set_network("relays", &format!("[\"{relay}\"]"))?;
    intruder.start()?;

    form_network(&senneval, &[&verbois, &tala])?;
    make_partners(&verbois, &tala)?;

    // No listener of its own; reachable through the relay once the reservation holds.
    wait_until(
        "Tala-n-Asif to be reachable through the relay",
        DEADLINE,
        || tala.cli_json(&["status"]),
        |s| {
            s["listen"].as_array().is_some_and(|l| {
                !l.is_empty() && l.iter().all(|a| a.as_str().is_some_and(|a| a.contains("/p2p-circuit")))
            })
        },
    )?;

    // Verbois dials Tala-n-Asif through the relay (automatic link with a partner).
    let tala_node = tala.node_id()?;
    wait_until(
        "Verbois to reach Tala-n-Asif",
        DEADLINE,
        || verbois.cli_json(&["peers"]),
        |peers| {
            peers.as_array().unwrap().iter().any(|p| {
                p["node"] == tala_node.as_str()
                    && p["connected"] == true
                    && p["last_addr"].as_str().is_some_and(|a| a.contains("/p2p-circuit"))
            })
        },
    )?;

    // Partnership documents both ways, through the relay.
    let request = tala.cli_json(&[
        "request",
        "create",
        "--title",
        "Accueil d'une délégation",
        "--field",
        &format!("addressee={}", verbois.commune_id()?),
    ])?;
    let id = request["id"].as_str().unwrap().to_owned();
    assert_eq!(request["scope"], "partnership");
    wait_until(
        "the request to reach Verbois",
        DEADLINE,
        || Ok(verbois.cli(&["request", "show", &id]).code),
        |c| *c == 0,
    )?;
    let back = verbois.cli_json(&[
        "request",
        "create",
        "--title",
        "Échange de pratiques",
        "--field",
        &format!("addressee={}", tala.commune_id()?),
    ])?;
    let back_id = back["id"].as_str().unwrap().to_owned();
    wait_until(
        "Verbois's request to reach Tala-n-Asif",
        DEADLINE,
        || Ok(tala.cli(&["request", "show", &back_id]).code),
        |c| *c == 0,
    )?;

    // The relay carried the bytes but holds nothing of the partnership.
    for id in [&id, &back_id] {
        assert_eq!(senneval.cli(&["request", "show", id]).code, 1, "the relay never received a partnership request");
    }
    assert!(!senneval.log().contains("Accueil d'une délégation"));
    assert!(tala.log().contains("a peer reached this node through a relay"), "{}", tala.log());
    // The relay closed each reservation of the stranger as soon as it accepted it.
    let refused = |m: &str| -> u64 {
        m.lines()
            .find(|l| l.starts_with("passerelle_net_refusals_total{what=\"relay\"}"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    wait_until(
        "the relay to refuse the stranger",
        Duration::from_secs(120),
        || Ok(refused(&senneval.client()?.metrics()?)),
        |n| *n >= 1,
    )?;
    intruder.terminate()?;
    println!("Verbois ↔ Tala-n-Asif through the relay: both requests crossed; the relay stored neither");
    Ok(())
}
