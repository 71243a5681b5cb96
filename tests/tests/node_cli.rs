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
    let (code, body) = raw("GET", "/v1/docs", None, "");
    assert_eq!(code, 401, "reads need the token too: {body}");
    assert!(body.contains("passerelle login"), "{body}");
    let (code, _) = raw("GET", "/v1/nothing-here", Some(&token), "");
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

/// The API as a web page meets it: reads need the token or a session from a
/// one-time login link, sessions only read, a rebinding host name is
/// refused; the home, the token and an invitation file are private.
#[test]
fn the_api_is_safe_from_web_pages() -> anyhow::Result<()> {
    let mut node = TestNode::init("Verbois", "BE")?;
    node.start()?;
    node.cli_json(&["network", "create", "--name", "Réseau test"])?;
    let addr = std::fs::read_to_string(node.home().api_addr())?.trim().to_owned();
    let token = std::fs::read_to_string(node.home().api_token())?.trim().to_owned();
    let bearer = format!("Bearer {token}");
    let get = |path: &str, headers: &[(&str, &str)]| raw_http::exchange("GET", &addr, path, headers, "");

    // A page on a rebinding name gets nothing, token or not.
    let (code, _, body) = get("/v1/network/state", &[("Host", "attacker.example:7420"), ("Authorization", &bearer)]);
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("wrong_host") && body.contains("api.hosts"), "{body}");
    let (code, _, _) = get("/", &[("Host", "rebind.attacker.example")]);
    assert_eq!(code, 403, "even the page is refused on a foreign host name");
    // Reads need the token.
    let (code, _, body) = get("/v1/network/state", &[]);
    assert_eq!(code, 401, "{body}");
    let (code, _, _) = get("/metrics", &[]);
    assert_eq!(code, 401);
    let (code, _, _) = get("/v1/network/state", &[("Authorization", &bearer)]);
    assert_eq!(code, 200);
    let (code, _, _) = get("/", &[]);
    assert_eq!(code, 200, "the page itself holds no data");
    // Heavy reads come in pages.
    let (code, _, body) = get("/v1/docs?limit=20000", &[("Authorization", &bearer)]);
    assert_eq!(code, 400, "{body}");
    let (code, headers, body) = get("/v1/docs?limit=1", &[("Authorization", &bearer)]);
    assert_eq!(code, 200, "{body}");
    assert!(headers.contains("x-total-count: 1"), "{headers}");

    // A one-time login link opens a read-only session.
    let link = node.cli_json(&["login"])?;
    let url = link["url"].as_str().unwrap().to_owned();
    let path = url.split_once(&addr).map(|(_, p)| p.to_owned()).unwrap();
    assert!(path.starts_with("/login?code="), "{url}");
    let (code, headers, _) = get(&format!("{path}&next=/%3Flang%3Den"), &[]);
    assert_eq!(code, 303);
    assert!(headers.contains("location: /?lang=en"), "{headers}");
    let cookie_line = headers.lines().find(|l| l.starts_with("set-cookie:")).expect("a session cookie").to_owned();
    assert!(cookie_line.contains("httponly") && cookie_line.contains("samesite=strict"), "{cookie_line}");
    let session = cookie_line.trim_start_matches("set-cookie:").trim().split(';').next().unwrap().to_owned();
    let (code, _, _) = get("/v1/network/state", &[("Cookie", &session)]);
    assert_eq!(code, 200, "the session reads");
    let (code, _, _) = get(&path, &[]);
    assert_eq!(code, 401, "a login link works once");
    let (code, _, _) = get("/login?code=00ff", &[]);
    assert_eq!(code, 401);
    let (code, headers, _) = get(&format!("{path}&next=//attacker.example/"), &[]);
    assert!(code == 401 && !headers.contains("attacker"), "a used link redirects nowhere");
    let other = node.cli_json(&["login"])?["url"].as_str().unwrap().to_owned();
    let other_path = other.split_once(&addr).map(|(_, p)| p.to_owned()).unwrap();
    let (code, headers, _) = get(&format!("{other_path}&next=//attacker.example/"), &[]);
    assert_eq!(code, 303);
    assert!(headers.contains("location: /\r\n") || headers.contains("location: /\n"), "no open redirect: {headers}");
    // A session cannot write: no cross-site form can change anything.
    let (code, _, body) = raw_http::exchange(
        "POST",
        &addr,
        "/v1/docs",
        &[("Cookie", &session), ("Content-Type", "application/json")],
        r#"{"kind":"request","fields":{"title":"x"}}"#,
    );
    assert_eq!(code, 401, "{body}");
    let (code, _, _) = raw_http::exchange("POST", &addr, "/logout", &[("Cookie", &session)], "");
    assert_eq!(code, 204);
    let (code, _, _) = get("/v1/network/state", &[("Cookie", &session)]);
    assert_eq!(code, 401, "logged out");

    // What the node keeps is its user's only.
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(node.home().root()), 0o700);
    assert_eq!(mode(&node.home().api_token()), 0o600);
    let invitation = node.home().root().join("invitation.txt");
    node.cli_json(&["invite", "--name", "Hautrieu", "--country", "BE", "-o", invitation.to_str().unwrap()])?;
    assert_eq!(mode(&invitation), 0o600);
    // A home made readable by others is made private again at start.
    node.terminate()?;
    std::fs::set_permissions(node.home().root(), std::fs::Permissions::from_mode(0o755))?;
    node.start()?;
    assert_eq!(mode(node.home().root()), 0o700);
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

    /// Sends a request with exactly these headers (`Host` is the address
    /// unless given); returns the status, the headers (lower case) and the body.
    pub fn exchange(
        method: &str,
        addr: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> (u16, String, String) {
        let mut s = TcpStream::connect(addr).unwrap();
        let mut head = format!("{method} {path} HTTP/1.1\r\n");
        if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
            head.push_str(&format!("Host: {addr}\r\n"));
        }
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        write!(s, "{head}Content-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).unwrap();
        let mut resp = String::new();
        s.read_to_string(&mut resp).unwrap();
        let code = resp.split_whitespace().nth(1).unwrap().parse().unwrap();
        let (head, body) =
            resp.split_once("\r\n\r\n").map(|(h, b)| (h.to_lowercase(), b.to_owned())).unwrap_or_default();
        (code, head, body)
    }
}
