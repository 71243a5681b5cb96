//! One node driven through the real CLI: init, run, create, update, list,
//! show, history, restart, and every kind of bad input.
//!
//! ```text
//!   passerelle (CLI) ──HTTP──▶ [Senneval node] ── sled store in a temp home
//! ```

use passerelle_tests::TestNode;

#[test]
fn a_commune_publishes_and_edits_documents_that_survive_a_restart() -> anyhow::Result<()> {
    let mut node = TestNode::init("Senneval", "BE")?;
    let id = node.cli_json(&["id"])?;
    assert_eq!(id["name"], "Senneval");
    assert_eq!(id["commune_id"].as_str().unwrap().len(), 64);
    node.start()?;

    let status = node.cli_json(&["status"])?;
    assert_eq!(status["commune_id"], id["commune_id"]);
    assert_eq!(status["documents"]["profile"], 1, "the node creates its commune's profile");

    let req = node.cli_json(&[
        "request",
        "create",
        "--title",
        "Expertise en tri des déchets et compostage de quartier",
        "--description",
        "Notre projet « Quartier propre » cherche un savoir-faire.",
        "--theme",
        "THEME:waste",
        "--dimension",
        "SPIRAL:B",
        "--deadline",
        "2026-03-31",
        "--field",
        "consent_relay=true",
        "--field",
        "need_types=[\"expertise\"]",
    ])?;
    let doc = req["id"].as_str().unwrap().to_owned();
    assert_eq!(req["status"], "open");
    assert_eq!(req["scope"], "partnership");
    assert_eq!(req["fields"]["theme"], "THEME:waste");
    assert_eq!(req["fields"]["title"]["original"], "fr");

    // Offline edits of the story: a later deadline and an Arabic description.
    let updated = node.cli_json(&[
        "request",
        "update",
        &doc[..10],
        "--deadline",
        "2026-04-30",
        "--lang",
        "ar",
        "--description",
        "مشروع حي نظيف",
    ])?;
    assert_eq!(updated["fields"]["deadline"], "2026-04-30");
    assert_eq!(updated["fields"]["description"]["ar"], "مشروع حي نظيف");
    assert_eq!(updated["fields"]["description"]["original"], "fr", "a translation never replaces the original");
    let moved = node.cli_json(&["request", "update", &doc, "--status", "matched", "--note", "offre de Hautrieu"])?;
    assert_eq!(moved["status"], "matched");
    assert_eq!(moved["status_log"].as_array().unwrap().len(), 2);

    let offer = node.cli_json(&[
        "offer",
        "create",
        "--title",
        "Fiche pratique compostage",
        "--theme",
        "THEME:waste",
        "--field",
        &format!("request={doc}"),
    ])?;
    assert_eq!(offer["status"], "proposed");
    node.cli_json(&[
        "project",
        "create",
        "--title",
        "Quartier propre",
        "--field",
        "project_kind=demonstrative_action",
    ])?;
    node.cli_json(&[
        "practice",
        "create",
        "--title",
        "Compostage de quartier",
        "--field",
        "steps=Réunir les habitants",
    ])?;

    let list = node.cli_json(&["request", "list"])?;
    assert_eq!(list.as_array().unwrap().len(), 1);
    let human = node.cli(&["request", "list"]);
    assert_eq!(human.code, 0);
    assert!(human.stdout.contains("matched") && human.stdout.contains("Expertise en tri"), "{}", human.stdout);

    let history = node.cli_json(&["history", &doc])?;
    let entries = history.as_array().unwrap();
    assert_eq!(entries.len(), 3);
    assert_eq!(entries[0]["author_commune"], id["commune_id"]);
    assert_eq!(entries[0]["author_node"], id["node_id"]);
    assert!(entries[2]["message"].as_str().unwrap().contains("status→matched"));
    let human = node.cli(&["history", &doc]);
    assert!(human.stdout.contains("Senneval"), "history names the commune: {}", human.stdout);

    // Restart: everything is still there, and verify agrees.
    assert_eq!(node.terminate()?, 0, "SIGTERM is a clean exit");
    let down = node.cli(&["status"]);
    assert_eq!(down.code, 3, "a stopped node is reported as not reachable");
    assert!(down.stderr.contains("passerelle run"), "{}", down.stderr);
    node.start()?;
    let again = node.cli_json(&["request", "show", &doc])?;
    assert_eq!(again["fields"]["deadline"], "2026-04-30");
    assert_eq!(again["status"], "matched");
    assert_eq!(again["heads"], moved["heads"]);
    let report = node.cli_json(&["verify"])?;
    assert_eq!(report["failures"].as_array().unwrap().len(), 0);
    assert_eq!(report["documents"], 5);
    let status = node.cli_json(&["status"])?;
    assert_eq!(status["statuses"]["request"]["matched"], 1);
    node.terminate()?;
    Ok(())
}

#[test]
fn bad_input_gets_a_clear_error_and_loses_nothing() -> anyhow::Result<()> {
    let mut node = TestNode::init("Verbois", "BE")?;
    // Usage errors: exit 2.
    assert_eq!(node.cli(&["request", "frobnicate"]).code, 2);
    assert_eq!(node.cli(&["init", "--name", "X"]).code, 2);
    // An identity is never overwritten.
    let again = node.cli(&["init", "--name", "Other", "--country", "MA", "--api-port", "0"]);
    assert_eq!(again.code, 1);
    assert!(again.stderr.contains("never overwritten"), "{}", again.stderr);
    // Node not running: exit 3 with how to start it.
    let r = node.cli(&["request", "list"]);
    assert_eq!(r.code, 3);
    assert!(r.stderr.contains("passerelle run --home"), "{}", r.stderr);

    node.start()?;
    // A second node on the same home is refused: the store is in use.
    let second = node.cli(&["run"]);
    assert_eq!(second.code, 1, "{}", second.stderr);
    assert!(second.stderr.contains("in use by another process"), "{}", second.stderr);
    let kept = node.cli_json(&["request", "create", "--title", "Demande valide"])?;
    let kept_id = kept["id"].as_str().unwrap().to_owned();

    let cases: &[(&[&str], &str)] = &[
        (&["request", "create", "--title", "   "], "title is required"),
        (&["request", "create", "--title", "x", "--status", "done"], "unknown status"),
        (&["request", "create", "--title", "x", "--theme", "THEME:bogus"], "unknown theme code"),
        (&["request", "create", "--title", "x", "--deadline", "2026-02-30"], "invalid deadline"),
        (&["request", "create", "--title", "x", "--field", "colour=blue"], "unknown field"),
        (&["request", "create", "--title", "x", "--lang", "xx"], "not a known language"),
        (&["request", "create", "--title", "x", "--scope", "everyone"], "unknown scope"),
        (&["request", "show", &"a".repeat(64)], "no document"),
        (&["request", "update", &kept_id, "--status", "draft"], "can only move forward"),
        (&["profile", "update", "--field", "country=Belgium"], "ISO 3166-1"),
    ];
    for (args, expected) in cases {
        let r = node.cli(args);
        assert_eq!(r.code, 1, "`{}` should fail with exit 1: {}", args.join(" "), r.stderr);
        assert!(r.stderr.contains(expected), "`{}`: expected {expected:?} in {:?}", args.join(" "), r.stderr);
    }
    let r = node.cli(&["request", "show", "zz"]);
    assert_eq!(r.code, 2, "a malformed id is a usage error: {}", r.stderr);

    // Malformed JSON and missing or wrong tokens at the API: 4xx with a reason.
    let addr = std::fs::read_to_string(node.home().api_addr())?.trim().to_owned();
    let token = std::fs::read_to_string(node.home().api_token())?.trim().to_owned();
    let raw = |method: &str, path: &str, auth: Option<&str>, body: &str| -> (u16, String) {
        raw_http::send(method, &format!("http://{addr}{path}"), auth, body)
    };
    let (code, body) = raw("POST", "/v1/docs", None, r#"{"kind":"request","fields":{"title":"x"}}"#);
    assert_eq!(code, 401, "{body}");
    let (code, body) = raw("POST", "/v1/docs", Some("wrong"), r#"{"kind":"request","fields":{"title":"x"}}"#);
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("wrong API token"));
    let (code, body) = raw("POST", "/v1/docs", Some(&token), "{not json");
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("malformed JSON"), "{body}");
    let (code, body) = raw("POST", "/v1/docs", Some(&token), r#"{"kind":"spaceship","fields":{}}"#);
    assert_eq!(code, 422, "{body}");
    let (code, _) = raw("GET", "/v1/nothing-here", None, "");
    assert_eq!(code, 404);
    let (code, body) = raw("PATCH", &format!("/v1/docs/{kept_id}"), Some(&token), r#"{"fields":{"title":""}}"#);
    assert_eq!(code, 422, "{body}");

    // Nothing was lost or changed by all of that.
    let list = node.cli_json(&["request", "list"])?;
    assert_eq!(list.as_array().unwrap().len(), 1);
    let doc = node.cli_json(&["request", "show", &kept_id])?;
    assert_eq!(doc["changes"], 1);
    assert_eq!(doc["title"], "Demande valide");
    node.terminate()?;
    Ok(())
}

/// A minimal raw HTTP client, so the API can be sent what the CLI never sends.
mod raw_http {
    use std::io::{Read, Write};
    use std::net::TcpStream;

    pub fn send(method: &str, url: &str, auth: Option<&str>, body: &str) -> (u16, String) {
        let rest = url.strip_prefix("http://").unwrap();
        let (host, path) = rest.split_at(rest.find('/').unwrap());
        let mut s = TcpStream::connect(host).unwrap();
        let auth = auth.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: {host}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut resp = String::new();
        s.read_to_string(&mut resp).unwrap();
        let code = resp.split_whitespace().nth(1).unwrap().parse().unwrap();
        let body = resp.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
        (code, body)
    }
}
