//! The request relay workflow with real nodes and the CLI: a request to a
//! partner, relayed to the network only with the requester's consent,
//! offers from a commune that never met the requester, an acceptance, and
//! statuses that converge on every node while the original request stays
//! between the partners.
//!
//! ```text
//!   Tala-n-Asif ═══ Senneval ─── Hautrieu        (all joined through the secretariat)
//!                       └─────── Secretariat
//! ```

use std::time::Duration;

use passerelle_tests::{TestNode, federation, form_network, make_partners, wait_until};

const DEADLINE: Duration = Duration::from_secs(60);

#[test]
fn a_request_is_relayed_answered_and_accepted_across_the_network() -> anyhow::Result<()> {
    let [sec, senneval, tala, hautrieu] =
        federation([("Secretariat", "BE"), ("Senneval", "BE"), ("Tala-n-Asif", "MA"), ("Hautrieu", "BE")])?;
    make_partners(&senneval, &tala)?;
    // Tala-n-Asif reaches the network through Senneval only.
    for p in tala.cli_json(&["peers"])?.as_array().unwrap() {
        tala.cli(&["peer", "remove", p["node"].as_str().unwrap()]);
    }
    tala.connect_to(&senneval)?;
    hautrieu.connect_to(&senneval)?;
    let to_senneval = format!("addressee={}", senneval.commune_id()?);

    // Without consent, the partner cannot relay.
    let private = tala.cli_json(&["request", "create", "--title", "Demande privée", "--field", &to_senneval])?;
    let private_id = private["id"].as_str().unwrap().to_owned();
    assert_eq!(private["writers"].as_array().unwrap().len(), 2, "the addressee may write it: {private}");
    wait_until(
        "Senneval to hold it",
        DEADLINE,
        || Ok(senneval.cli(&["request", "show", &private_id]).code),
        |c| *c == 0,
    )?;
    let r = senneval.cli(&["request", "relay", &private_id]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("did not consent"), "{}", r.stderr);
    // Consent is the requester's: the addressee, a writer, cannot give it.
    let r = senneval.cli(&["request", "update", &private_id, "--field", "consent_relay=true"]);
    assert!(r.code == 1 && r.stderr.contains("consent to relay is the requester's"), "{}", r.stderr);

    // With consent: relayed once, by the addressee only.
    let request = tala.cli_json(&[
        "request",
        "create",
        "--title",
        "Expertise en compostage",
        "--theme",
        "THEME:waste",
        "--field",
        &to_senneval,
        "--field",
        "consent_relay=true",
    ])?;
    let req = request["id"].as_str().unwrap().to_owned();
    wait_until("Senneval to hold it", DEADLINE, || Ok(senneval.cli(&["request", "show", &req]).code), |c| *c == 0)?;
    let relay = senneval.cli_json(&["request", "relay", &req, "--note", "vers le réseau belge"])?;
    let rel = relay["id"].as_str().unwrap().to_owned();
    assert_eq!(relay["scope"], "network");
    assert_eq!(relay["fields"]["relay_of"], req.as_str());
    assert_eq!(relay["fields"]["theme"], "THEME:waste");
    let again = senneval.cli(&["request", "relay", &req]);
    assert!(again.code == 1 && again.stderr.contains("already relayed"), "{}", again.stderr);
    wait_until(
        "the relay to be recorded at the requester",
        DEADLINE,
        || tala.cli_json(&["request", "show", &req]),
        |v| v["fields"]["relays"][0]["doc"] == rel.as_str(),
    )?;

    // Hautrieu never met Tala-n-Asif: it answers the relay; the offer reaches the requester.
    wait_until("the relay at Hautrieu", DEADLINE, || Ok(hautrieu.cli(&["request", "show", &rel]).code), |c| *c == 0)?;
    let offer = hautrieu.cli_json(&[
        "offer",
        "create",
        "--title",
        "Accueil d'une mission",
        "--field",
        &format!("request={rel}"),
    ])?;
    let off = offer["id"].as_str().unwrap().to_owned();
    wait_until("the offer at Tala-n-Asif", DEADLINE, || Ok(tala.cli(&["offer", "show", &off]).code), |c| *c == 0)?;
    let r = hautrieu.cli(&["request", "accept", &rel, "--offer", &off]);
    assert!(r.code == 1 && r.stderr.contains("only the requester"), "{}", r.stderr);
    let r = tala.cli(&["request", "accept", &private_id, "--offer", &off]);
    assert!(r.code == 1 && r.stderr.contains("does not answer"), "{}", r.stderr);

    // The requester accepts: every copy converges.
    let accepted = tala.cli_json(&["request", "accept", &req, "--offer", &off])?;
    assert_eq!(accepted["status"], "answered");
    let status_of = |n: &TestNode, kind: &str, id: &str| -> anyhow::Result<serde_json::Value> {
        Ok(n.cli_json(&[kind, "show", id])?["status"].clone())
    };
    wait_until(
        "the original answered at Senneval",
        DEADLINE,
        || status_of(&senneval, "request", &req),
        |s| s == "answered",
    )?;
    for n in [&senneval, &hautrieu, &sec, &tala] {
        wait_until(
            &format!("the relay answered at {}", n.name),
            DEADLINE,
            || status_of(n, "request", &rel),
            |s| s == "answered",
        )?;
        wait_until(
            &format!("the offer accepted at {}", n.name),
            DEADLINE,
            || status_of(n, "offer", &off),
            |s| s == "accepted",
        )?;
    }
    let relay = sec.cli_json(&["request", "show", &rel])?;
    assert_eq!(relay["fields"]["accepted_offers"][0], off.as_str());

    // While consent holds, the requester's edits reach its relays; once it
    // is withdrawn, they no longer do.
    tala.cli_json(&["request", "update", &req, "--deadline", "2031-01-31"])?;
    wait_until(
        "the deadline mirrored to the relay",
        DEADLINE,
        || Ok(sec.cli_json(&["request", "show", &rel])?["fields"]["deadline"].clone()),
        |d| d == "2031-01-31",
    )?;
    tala.cli_json(&["request", "update", &req, "--field", "consent_relay=false"])?;
    tala.cli_json(&["request", "update", &req, "--deadline", "2032-02-29"])?;
    wait_until(
        "the withdrawal and the edit at Senneval",
        DEADLINE,
        || senneval.cli_json(&["request", "show", &req]),
        |v| v["fields"]["consent_relay"] == false && v["fields"]["deadline"] == "2032-02-29",
    )?;
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert_eq!(sec.cli_json(&["request", "show", &rel])?["fields"]["deadline"], "2031-01-31", "not mirrored");
    // The original stayed between the partners.
    for n in [&sec, &hautrieu] {
        assert_eq!(n.cli(&["request", "show", &req]).code, 1, "{} holds the partnership request", n.name);
    }

    // The coordinator tags and follows up, in a document of its own; it never edits the request.
    let follow = sec.cli_json(&[
        "followup",
        "create",
        "--field",
        &format!("target={rel}"),
        "--field",
        r#"flags=["exemplary"]"#,
        "--field",
        "next_step=Inviter Hautrieu à présenter la mission",
    ])?;
    assert_eq!(follow["title"], "Inviter Hautrieu à présenter la mission");
    let r = sec.cli(&["request", "update", &rel, "--deadline", "2030-01-01"]);
    assert!(r.code == 1 && r.stderr.contains("not a writer"), "{}", r.stderr);
    wait_until(
        "the follow-up at Hautrieu",
        DEADLINE,
        || Ok(hautrieu.cli(&["followup", "show", follow["id"].as_str().unwrap()]).code),
        |c| *c == 0,
    )?;
    Ok(())
}

/// An observer reads the network and comments; it does not publish requests.
#[test]
fn an_observer_comments_but_does_not_request() -> anyhow::Result<()> {
    let mut sec = TestNode::init_p2p("Secretariat", "BE")?;
    let mut obs = TestNode::init_p2p("Observatoire", "FR")?;
    sec.start()?;
    obs.start()?;
    form_network(&sec, &[])?;
    let token = sec.cli_json(&["invite", "--name", "Observatoire", "--country", "FR", "--role", "observer"])?;
    assert_eq!(obs.cli(&["join", token["token"].as_str().unwrap()]).code, 0);
    assert_eq!(obs.cli_json(&["network", "show"])?["role"], "observer");
    assert_eq!(obs.cli_json(&["status"])?["role"], "observer");
    assert!(obs.cli(&["status"]).stdout.contains("this commune: observer"));
    let practice = sec.cli_json(&["practice", "create", "--title", "Fiche du réseau"])?;
    let id = practice["id"].as_str().unwrap().to_owned();
    wait_until("the observer to read it", DEADLINE, || Ok(obs.cli(&["practice", "show", &id]).code), |c| *c == 0)?;
    let r = obs.cli(&["request", "create", "--title", "Une demande"]);
    assert!(r.code == 1 && r.stderr.contains("observer"), "{}", r.stderr);
    let comment =
        obs.cli_json(&["followup", "create", "--field", &format!("target={id}"), "--field", "note=Très utile"])?;
    let cid = comment["id"].as_str().unwrap().to_owned();
    wait_until(
        "the comment at the secretariat",
        DEADLINE,
        || Ok(sec.cli(&["followup", "show", &cid]).code),
        |c| *c == 0,
    )?;
    Ok(())
}
