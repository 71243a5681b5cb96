//! `GET /openapi.json`: the API described in OpenAPI 3.1, built from one
//! table of operations. A test reads the router's routes from
//! `routes.rs` and checks that the table names every one of them, so the
//! description stays true.

use serde_json::{Value, json};

/// One operation: method, path, summary, whether it needs the token, what
/// the body holds (if any) and what a success returns.
struct Op {
    method: &'static str,
    path: &'static str,
    summary: &'static str,
    write: bool,
    body: Option<&'static str>,
    ok: (u16, &'static str),
}

const fn op(
    method: &'static str,
    path: &'static str,
    summary: &'static str,
    write: bool,
    body: Option<&'static str>,
    ok: (u16, &'static str),
) -> Op {
    Op { method, path, summary, write, body, ok }
}

const OPS: &[Op] = &[
    op(
        "get",
        "/v1/status",
        "The node: ids, addresses, reachability, network, role, documents by kind and status.",
        false,
        None,
        (200, "NodeStatus"),
    ),
    op(
        "get",
        "/metrics",
        "Prometheus text format; every name starts with passerelle_.",
        false,
        None,
        (200, "text/plain"),
    ),
    op("get", "/openapi.json", "This document.", false, None, (200, "OpenAPI 3.1 document")),
    op(
        "get",
        "/v1/docs",
        "Documents, a page at a time (query: kind, status, owner, limit, offset).",
        false,
        None,
        (200, "DocSummary[]"),
    ),
    op("post", "/v1/docs", "Create a document (kind, scope, fields, lang).", true, Some("CreateDoc"), (201, "DocView")),
    op("get", "/v1/docs/{id}", "One document (query: lang).", false, None, (200, "DocView")),
    op(
        "patch",
        "/v1/docs/{id}",
        "Change fields or the status of a document.",
        true,
        Some("UpdateDoc"),
        (200, "DocView"),
    ),
    op(
        "get",
        "/v1/docs/{id}/history",
        "Its changes: author key and commune, times, summaries.",
        false,
        None,
        (200, "HistoryEntry[]"),
    ),
    op(
        "post",
        "/v1/docs/{id}/relay",
        "Relay a request addressed to this commune to its national network.",
        true,
        Some("RelayRequest"),
        (201, "DocView"),
    ),
    op(
        "post",
        "/v1/docs/{id}/accept",
        "Accept an offer answering this commune's request.",
        true,
        Some("AcceptOffer"),
        (200, "DocView"),
    ),
    op("post", "/v1/verify", "Re-check every stored signature.", true, None, (200, "VerifyReport")),
    op(
        "get",
        "/v1/peers",
        "Peers: connection, last sync, receipts, transfer queue, bytes, errors.",
        false,
        None,
        (200, "PeerView[]"),
    ),
    op("post", "/v1/peers", "Add a peer (node, addr) and dial it.", true, Some("AddPeer"), (201, "PeerView")),
    op("delete", "/v1/peers/{node}", "Forget a peer.", true, None, (204, "forgotten")),
    op(
        "get",
        "/v1/peers/{node}/pending",
        "Documents that peer has not acknowledged.",
        false,
        None,
        (200, "PendingDoc[]"),
    ),
    op(
        "post",
        "/v1/bundles/export",
        "Write an offline bundle for a commune.",
        true,
        Some("ExportBundle"),
        (200, "BundleSummary"),
    ),
    op(
        "post",
        "/v1/bundles/import",
        "Verify and apply an offline bundle.",
        true,
        Some("ImportBundle"),
        (200, "ImportReport"),
    ),
    op(
        "get",
        "/v1/network",
        "The network: id, name, members, partnerships, revoked keys.",
        false,
        None,
        (200, "NetworkView"),
    ),
    op("post", "/v1/network", "Found a network.", true, Some("CreateNetwork"), (201, "NetworkView")),
    op(
        "get",
        "/v1/network/heartbeats",
        "The latest signed heartbeat of every node, and through whom it came.",
        false,
        None,
        (200, "HeartbeatView[]"),
    ),
    op(
        "get",
        "/v1/network/state",
        "Members and their nodes, partnerships, link health, requests board with candidate offers, response times, timeline.",
        false,
        None,
        (200, "NetworkState"),
    ),
    op(
        "get",
        "/v1/events",
        "Server-sent events: doc, heartbeat, peer (data: {kind, id}); lagged when events were missed.",
        false,
        None,
        (200, "text/event-stream"),
    ),
    op(
        "post",
        "/v1/network/invitations",
        "Issue an invitation (coordinators).",
        true,
        Some("InviteRequest"),
        (201, "InviteView"),
    ),
    op("post", "/v1/network/join", "Redeem an invitation.", true, Some("JoinRequest"), (200, "NetworkView")),
    op(
        "post",
        "/v1/network/partners",
        "Propose, accept or end a partnership.",
        true,
        Some("PartnerRequest"),
        (200, "NetworkView"),
    ),
    op("post", "/v1/network/revocations", "Revoke a node key.", true, Some("RevokeRequest"), (200, "NetworkView")),
    op(
        "post",
        "/v1/network/removals",
        "Remove a member (coordinators).",
        true,
        Some("RemoveRequest"),
        (200, "NetworkView"),
    ),
    op("get", "/", "The dashboard (HTML; query: lang = fr, en, nl, ar).", false, None, (200, "text/html")),
    op(
        "post",
        "/v1/login",
        "A one-time link that opens a browser session (valid 5 minutes; the session reads for 12 hours).",
        true,
        None,
        (200, "LoginLink"),
    ),
    op(
        "get",
        "/login",
        "Use a login link (query: code, next): sets the session cookie, goes on to next or /.",
        false,
        None,
        (303, "text/plain"),
    ),
    op("post", "/logout", "Close this browser's session.", false, None, (204, "text/plain")),
    op(
        "get",
        "/assets/{file}",
        "The dashboard's script (app.js) and style sheet (style.css).",
        false,
        None,
        (200, "text/javascript"),
    ),
];

/// The document.
pub fn document() -> Value {
    let mut paths = serde_json::Map::new();
    for o in OPS {
        let entry = paths.entry(o.path.to_owned()).or_insert_with(|| json!({}));
        let params: Vec<Value> = o
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        let (status, what) = o.ok;
        let content = match what {
            w if w.starts_with("text/") => json!({ w: {"schema": {"type": "string"}} }),
            w => {
                json!({"application/json": {"schema": {"type": if w.ends_with("[]") { "array" } else { "object" }, "title": w}}})
            }
        };
        let mut operation = json!({
            "summary": o.summary,
            "parameters": params,
            "responses": {
                status.to_string(): {"description": what, "content": content},
                "4XX": {"description": "Refused, with the reason", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ApiError"}}}},
            },
        });
        let open = matches!(o.path, "/" | "/assets/{file}" | "/login" | "/logout");
        if o.write {
            operation["security"] = json!([{"token": []}]);
        } else if !open {
            operation["security"] = json!([{"token": []}, {"session": []}]);
        }
        if let Some(body) = o.body {
            operation["requestBody"] = json!({"required": true, "content": {"application/json": {"schema": {"type": "object", "title": body}}}});
        }
        entry[o.method] = operation;
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Passerelle node API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The local API of a Passerelle node. Host must be an IP address, localhost or a \
                            name in api.hosts. Reads need `Authorization: Bearer <token>` (the node's \
                            api.token file) or a browser session from a login link; writes need the token. \
                            Errors are JSON {code, error} with a 4xx or 5xx status.",
        },
        "paths": paths,
        "components": {
            "securitySchemes": {
                "token": {"type": "http", "scheme": "bearer"},
                "session": {"type": "apiKey", "in": "cookie", "name": "passerelle_session_<port>"},
            },
            "schemas": {"ApiError": {"type": "object", "required": ["code", "error"], "properties": {
                "code": {"type": "string"}, "error": {"type": "string"}}}},
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every route of the router (read from its source) is described, with
    /// the same methods, and nothing else is.
    #[test]
    fn every_route_is_described() {
        let source = include_str!("routes.rs");
        let mut routed = std::collections::BTreeSet::new();
        for line in source.lines().map(str::trim).filter(|l| l.starts_with(".route(\"")) {
            let path = line.split('"').nth(1).unwrap();
            let handlers = line.split_once(',').unwrap().1;
            for method in ["get", "post", "patch", "delete"] {
                if handlers.contains(&format!("{method}(")) {
                    routed.insert((path.to_owned(), method.to_owned()));
                }
            }
        }
        let doc = document();
        let mut described = std::collections::BTreeSet::new();
        for (path, ops) in doc["paths"].as_object().unwrap() {
            for method in ops.as_object().unwrap().keys() {
                described.insert((path.clone(), method.clone()));
            }
        }
        assert!(routed.len() > 20, "{routed:?}");
        assert_eq!(routed, described);
    }
}
