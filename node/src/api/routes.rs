//! The API's routes and handlers. Handlers only translate: HTTP in, an
//! engine command, HTTP out.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use passerelle_protocol::ids::{DocId, NodeId};
use serde::Deserialize;

use super::error::ApiError;
use super::types::{AcceptOffer, ExportBundle, ImportBundle, RelayRequest};
use super::types::{
    AddPeer, CreateDoc, CreateNetwork, DocSummary, DocView, HistoryEntry, InviteRequest, InviteView, JoinRequest,
    NetworkView, NodeStatus, PartnerRequest, PeerView, RemoveRequest, RevokeRequest, UpdateDoc, VerifyReport,
};
use crate::engine::{BundleSummary, ImportReport};
use crate::engine::{EngineHandle, ListFilter};

/// Largest request body accepted, in bytes.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// What handlers share: read-only facts and the engine handle.
#[derive(Debug, Clone)]
pub struct ApiState {
    /// The engine.
    pub engine: EngineHandle,
    /// The swarm task.
    pub net: crate::net::NetHandle,
    /// Token that writes, and reads outside a browser session, present.
    pub token: Arc<str>,
    /// Login links and browser sessions.
    pub logins: Arc<super::access::Logins>,
    /// Host names allowed besides addresses and `localhost` (`api.hosts`).
    pub hosts: Arc<[String]>,
    /// Live event streams still allowed ([`MAX_EVENT_STREAMS`]).
    pub event_streams: Arc<tokio::sync::Semaphore>,
    /// The fixed part of the status.
    pub status: Arc<NodeStatus>,
    /// When the node started.
    pub started: Instant,
}

/// The API router.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/", get(super::dashboard::index))
        .route("/login", get(login))
        .route("/logout", post(logout))
        .route("/v1/login", post(login_link))
        .route("/assets/{file}", get(super::dashboard::assets))
        .route("/v1/status", get(status))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
        .route("/v1/docs", get(list).post(create))
        .route("/v1/docs/{id}", get(show).patch(update))
        .route("/v1/docs/{id}/history", get(history))
        .route("/v1/docs/{id}/relay", post(relay))
        .route("/v1/docs/{id}/accept", post(accept))
        .route("/v1/verify", post(verify))
        .route("/v1/peers", get(peers).post(add_peer))
        .route("/v1/peers/{node}", axum::routing::delete(remove_peer))
        .route("/v1/peers/{node}/pending", get(pending))
        .route("/v1/bundles/export", post(export_bundle))
        .route("/v1/bundles/import", post(import_bundle))
        .route("/v1/network", get(network).post(create_network))
        .route("/v1/network/heartbeats", get(heartbeats))
        .route("/v1/network/state", get(network_state))
        .route("/v1/events", get(events))
        .route("/v1/network/invitations", post(invite))
        .route("/v1/network/join", post(join))
        .route("/v1/network/partners", post(partner))
        .route("/v1/network/revocations", post(revoke))
        .route("/v1/network/removals", post(remove_member))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), require_token))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// Every request must name this node in `Host`; data reads need the token
/// or a browser session; writes need the token (module `access`).
async fn require_token(State(state): State<ApiState>, req: Request, next: Next) -> Result<Response, ApiError> {
    use super::access::{bearer, check_host, same_secret, session_cookie};
    check_host(req.headers(), &state.hosts)?;
    let path = req.uri().path();
    let public = path == "/" || path.starts_with("/assets/") || path == "/login" || path == "/logout";
    if public {
        return Ok(next.run(req).await);
    }
    let token = bearer(req.headers());
    if let Some(given) = token
        && same_secret(given, &state.token)
    {
        return Ok(next.run(req).await);
    }
    let reading = req.method() == Method::GET || req.method() == Method::HEAD;
    if reading
        && session_cookie(req.headers(), state.logins.cookie())
            .is_some_and(|s| state.logins.is_open(s, crate::clock::now_ms()))
    {
        return Ok(next.run(req).await);
    }
    Err(match (token, reading) {
        (Some(_), _) => ApiError::unauthorized("wrong API token"),
        (None, true) => ApiError::unauthorized(
            "reading needs `Authorization: Bearer <token>` (api.token in the node's home) \
             or a browser session: run `passerelle login` and open the link it prints",
        ),
        (None, false) => ApiError::unauthorized(
            "this request changes data: send `Authorization: Bearer <token>` (the token is in api.token in the node's home)",
        ),
    })
}

/// `POST /v1/login` (token): a one-time link that opens a browser session.
async fn login_link(State(state): State<ApiState>, headers: HeaderMap) -> Json<super::types::LoginLink> {
    let (code, expires_ms) = state.logins.new_link(crate::clock::now_ms());
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("127.0.0.1");
    Json(super::types::LoginLink { url: format!("http://{host}/login?code={code}"), expires_ms })
}

#[derive(Debug, Deserialize)]
struct LoginQuery {
    code: String,
    next: Option<String>,
}

/// `GET /login?code=…[&next=/path]`: uses a login link, sets the session
/// cookie (HttpOnly, SameSite=Strict) and goes on to `next` (a path on
/// this node) or the dashboard.
async fn login(
    State(state): State<ApiState>,
    query: Result<Query<LoginQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let session = state.logins.redeem(&q.code, crate::clock::now_ms()).ok_or_else(|| {
        ApiError::unauthorized("this login link is unknown, used or expired: run `passerelle login` for a new one")
    })?;
    // A path on this node only: no scheme, no host, nothing a browser
    // would strip or reinterpret (controls, spaces, backslashes).
    let next = q
        .next
        .filter(|n| n.starts_with('/') && !n.starts_with("//") && n.chars().all(|c| c.is_ascii_graphic() && c != '\\'));
    let cookie = format!(
        "{}={session}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}",
        state.logins.cookie(),
        super::access::SESSION_MS / 1000
    );
    Response::builder()
        .status(StatusCode::SEE_OTHER)
        .header(header::LOCATION, next.as_deref().unwrap_or("/"))
        .header(header::SET_COOKIE, cookie)
        .header(header::CACHE_CONTROL, "no-store")
        .body(axum::body::Body::empty())
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))
}

/// `POST /logout`: closes this browser's session.
async fn logout(State(state): State<ApiState>, headers: HeaderMap) -> Response {
    if let Some(session) = super::access::session_cookie(&headers, state.logins.cookie()) {
        state.logins.close(session);
    }
    let cookie = format!("{}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0", state.logins.cookie());
    (StatusCode::NO_CONTENT, [(header::SET_COOKIE, cookie)]).into_response()
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such API route; see docs/cli.md for the API")
}

fn doc_id(raw: &str) -> Result<DocId, ApiError> {
    raw.parse().map_err(|e: passerelle_protocol::ids::IdParseError| ApiError::bad_request(e.to_string()))
}

fn body<T>(json: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    json.map(|Json(v)| v).map_err(|e| ApiError::bad_request(format!("malformed JSON body: {}", e.body_text())))
}

/// Live event streams served at once; beyond, `/v1/events` answers 503.
pub const MAX_EVENT_STREAMS: usize = 32;

/// Server-sent events: one `doc`, `heartbeat` or `peer` event (data: the
/// JSON `{kind, id}`) whenever something changed, `lagged` when this
/// client read too slowly and missed some, a comment every 15 s.
async fn events(State(state): State<ApiState>) -> Result<Response, ApiError> {
    use axum::response::sse::{Event, KeepAlive, Sse};
    use tokio::sync::broadcast::error::RecvError;
    let permit = state.event_streams.clone().try_acquire_owned().map_err(|_| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            format!("{MAX_EVENT_STREAMS} live event streams are open already: close one, or poll /v1/network/state"),
        )
    })?;
    let rx = state.engine.subscribe();
    // The permit lives as long as the stream.
    let stream = futures::stream::unfold((rx, permit), |(mut rx, permit)| async move {
        let event = match rx.recv().await {
            Ok(e) => Event::default().event(e.kind).data(serde_json::to_string(&e).unwrap_or_default()),
            Err(RecvError::Lagged(n)) => Event::default().event("lagged").data(n.to_string()),
            Err(RecvError::Closed) => return None,
        };
        Some((Ok::<_, std::convert::Infallible>(event), (rx, permit)))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(std::time::Duration::from_secs(15))).into_response())
}

async fn openapi() -> Json<serde_json::Value> {
    Json(super::openapi::document())
}

async fn network_state(State(state): State<ApiState>) -> Result<Json<super::types::NetworkState>, ApiError> {
    Ok(Json(state.engine.network_state().await?))
}

async fn heartbeats(State(state): State<ApiState>) -> Result<Json<Vec<super::types::HeartbeatView>>, ApiError> {
    Ok(Json(state.engine.heartbeats().await?))
}

async fn metrics(State(state): State<ApiState>) -> Result<Response, ApiError> {
    let snapshot = state.engine.metrics().await?;
    let net = state.net.info().await.map_err(stopping)?;
    let facts = super::metrics::NetFacts {
        peers_connected: net.connected.len(),
        uptime_s: state.started.elapsed().as_secs(),
        transport_bytes: net.transport_bytes,
        guard: net.guard,
    };
    let body = super::metrics::render(&snapshot, facts, crate::clock::now_ms());
    Response::builder()
        .header(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")
        .body(axum::body::Body::from(body))
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))
}

async fn status(State(state): State<ApiState>) -> Result<Json<NodeStatus>, ApiError> {
    let (documents, statuses) = state.engine.counts().await?;
    let net = state.net.info().await.map_err(stopping)?;
    let mut status = (*state.status).clone();
    status.peer_id = net.peer_id;
    status.listen = net.listen;
    status.reachability = net.reachability.to_owned();
    status.peers_connected = net.connected.len();
    status.uptime_s = state.started.elapsed().as_secs();
    status.documents = documents;
    status.statuses = statuses;
    if let Ok(network) = state.engine.network().await {
        status.network = Some(format!("{} ({})", network.name, network.network));
        status.role = network.role;
    }
    Ok(Json(status))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    kind: Option<String>,
    status: Option<String>,
    owner: Option<String>,
    limit: Option<usize>,
    offset: Option<usize>,
}

/// Documents a list answers by default, and at most: a page of the list,
/// so that one read cannot make the node serialise its whole store.
pub const LIST_PAGE: usize = 1_000;
/// The largest page a list answers.
pub const MAX_LIST_PAGE: usize = 10_000;

/// `GET /v1/docs`: a page of the list (`limit`, `offset`), most recently
/// changed first; `X-Total-Count` says how many match.
async fn list(
    State(state): State<ApiState>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    if let Some(kind) = &q.kind {
        kind.parse::<passerelle_protocol::header::DocKind>().map_err(|e| ApiError::bad_request(e.to_string()))?;
    }
    let limit = q.limit.unwrap_or(LIST_PAGE);
    if limit == 0 || limit > MAX_LIST_PAGE {
        return Err(ApiError::bad_request(format!("limit must be between 1 and {MAX_LIST_PAGE}")));
    }
    let all = state.engine.list(ListFilter { kind: q.kind, status: q.status, owner: q.owner }).await?;
    let total = all.len();
    let page: Vec<DocSummary> = all.into_iter().skip(q.offset.unwrap_or(0)).take(limit).collect();
    Ok(([("x-total-count", total.to_string())], Json(page)).into_response())
}

async fn create(
    State(state): State<ApiState>,
    json: Result<Json<CreateDoc>, JsonRejection>,
) -> Result<(StatusCode, Json<DocView>), ApiError> {
    let req = body(json)?;
    Ok((StatusCode::CREATED, Json(state.engine.create(req).await?)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ShowQuery {
    lang: Option<String>,
}

async fn show(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    query: Result<Query<ShowQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<DocView>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    Ok(Json(state.engine.get(doc_id(&id)?, q.lang).await?))
}

async fn update(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    json: Result<Json<UpdateDoc>, JsonRejection>,
) -> Result<Json<DocView>, ApiError> {
    let id = doc_id(&id)?;
    Ok(Json(state.engine.update(id, body(json)?).await?))
}

async fn history(State(state): State<ApiState>, Path(id): Path<String>) -> Result<Json<Vec<HistoryEntry>>, ApiError> {
    Ok(Json(state.engine.history(doc_id(&id)?).await?))
}

async fn relay(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    json: Result<Json<RelayRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<DocView>), ApiError> {
    let id = doc_id(&id)?;
    Ok((StatusCode::CREATED, Json(state.engine.relay(id, body(json)?.note).await?)))
}

async fn accept(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    json: Result<Json<AcceptOffer>, JsonRejection>,
) -> Result<Json<DocView>, ApiError> {
    let id = doc_id(&id)?;
    Ok(Json(state.engine.accept(id, body(json)?.offer).await?))
}

async fn verify(State(state): State<ApiState>) -> Result<Json<VerifyReport>, ApiError> {
    Ok(Json(state.engine.verify().await?))
}

async fn peers(State(state): State<ApiState>) -> Result<Json<Vec<PeerView>>, ApiError> {
    Ok(Json(state.engine.peers().await?))
}

async fn add_peer(
    State(state): State<ApiState>,
    json: Result<Json<AddPeer>, JsonRejection>,
) -> Result<(StatusCode, Json<PeerView>), ApiError> {
    let req = body(json)?;
    let addr: libp2p::Multiaddr =
        req.addr.parse().map_err(|e| ApiError::bad_request(format!("{:?} is not a multiaddr: {e}", req.addr)))?;
    let view = state.engine.add_peer(req.node, vec![req.addr.clone()]).await?;
    state.net.dial(req.node, vec![addr]).await.map_err(stopping)?;
    Ok((StatusCode::CREATED, Json(view)))
}

async fn pending(
    State(state): State<ApiState>,
    Path(node): Path<String>,
) -> Result<Json<Vec<super::types::PendingDoc>>, ApiError> {
    let node: NodeId =
        node.parse().map_err(|e: passerelle_protocol::ids::IdParseError| ApiError::bad_request(e.to_string()))?;
    Ok(Json(state.engine.pending(node).await?))
}

async fn remove_peer(State(state): State<ApiState>, Path(node): Path<String>) -> Result<StatusCode, ApiError> {
    let node: NodeId =
        node.parse().map_err(|e: passerelle_protocol::ids::IdParseError| ApiError::bad_request(e.to_string()))?;
    // The engine tells the peer, then has the swarm task forget it.
    if !state.engine.remove_peer(node).await? {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no peer {node}")));
    }
    Ok(StatusCode::NO_CONTENT)
}

fn stopping(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "stopping", e.to_string())
}

async fn network(State(state): State<ApiState>) -> Result<Json<NetworkView>, ApiError> {
    Ok(Json(state.engine.network().await?))
}

async fn create_network(
    State(state): State<ApiState>,
    json: Result<Json<CreateNetwork>, JsonRejection>,
) -> Result<(StatusCode, Json<NetworkView>), ApiError> {
    let req = body(json)?;
    let listen = state.net.info().await.map_err(stopping)?.listen;
    Ok((StatusCode::CREATED, Json(state.engine.create_network(req.name, listen).await?)))
}

async fn invite(
    State(state): State<ApiState>,
    json: Result<Json<InviteRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<InviteView>), ApiError> {
    let req = body(json)?;
    let listen = state.net.info().await.map_err(stopping)?.listen;
    Ok((StatusCode::CREATED, Json(state.engine.invite(req, listen).await?)))
}

async fn join(
    State(state): State<ApiState>,
    json: Result<Json<JoinRequest>, JsonRejection>,
) -> Result<Json<NetworkView>, ApiError> {
    use crate::runtime::JoinError;
    let req = body(json)?;
    let invitation = passerelle_protocol::network::Invitation::from_token(&req.token)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    match crate::runtime::join(&state.engine, &state.net, invitation).await {
        Ok(view) => Ok(Json(view)),
        Err(JoinError::Engine(e)) => Err(e.into()),
        Err(e @ JoinError::NoAddress) => Err(ApiError::bad_request(e.to_string())),
        Err(e @ JoinError::Net(_)) => Err(stopping(e)),
        Err(e @ JoinError::Timeout(_)) => Err(ApiError::new(StatusCode::GATEWAY_TIMEOUT, "timeout", e.to_string())),
    }
}

async fn partner(
    State(state): State<ApiState>,
    json: Result<Json<PartnerRequest>, JsonRejection>,
) -> Result<Json<NetworkView>, ApiError> {
    let req = body(json)?;
    Ok(Json(state.engine.partner(req.commune, req.action).await?))
}

async fn revoke(
    State(state): State<ApiState>,
    json: Result<Json<RevokeRequest>, JsonRejection>,
) -> Result<Json<NetworkView>, ApiError> {
    let req = body(json)?;
    Ok(Json(state.engine.revoke(req.node).await?))
}

async fn remove_member(
    State(state): State<ApiState>,
    json: Result<Json<RemoveRequest>, JsonRejection>,
) -> Result<Json<NetworkView>, ApiError> {
    let req = body(json)?;
    Ok(Json(state.engine.remove_member(req.commune).await?))
}

async fn export_bundle(
    State(state): State<ApiState>,
    json: Result<Json<ExportBundle>, JsonRejection>,
) -> Result<Json<BundleSummary>, ApiError> {
    let req = body(json)?;
    let path = std::path::PathBuf::from(&req.path);
    if !path.is_absolute() {
        return Err(ApiError::bad_request("give the bundle's path as an absolute path"));
    }
    let (bytes, summary) = state.engine.export_bundle(req.recipient, req.all).await?;
    // Written beside, then renamed: a reader never sees half a bundle.
    let written = tokio::task::spawn_blocking(move || {
        let partial = path.with_extension("partial");
        std::fs::write(&partial, &bytes)
            .and_then(|()| std::fs::rename(&partial, &path))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))
    })
    .await
    .map_err(stopping)?;
    written.map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "io", e))?;
    Ok(Json(summary))
}

async fn import_bundle(
    State(state): State<ApiState>,
    json: Result<Json<ImportBundle>, JsonRejection>,
) -> Result<Json<ImportReport>, ApiError> {
    let req = body(json)?;
    let path = req.path.clone();
    let read = tokio::task::spawn_blocking(move || -> Result<Vec<u8>, String> {
        let len = std::fs::metadata(&path).map_err(|e| format!("cannot read {path}: {e}"))?.len();
        if len > passerelle_protocol::bundle::MAX_BUNDLE_BYTES as u64 {
            return Err(format!("{path} is over 1 GiB: not a bundle"));
        }
        std::fs::read(&path).map_err(|e| format!("cannot read {path}: {e}"))
    })
    .await
    .map_err(stopping)?;
    let bytes = read.map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "io", e))?;
    Ok(Json(state.engine.import_bundle(bytes).await?))
}
