//! A blocking client of the local API, used by the CLI and by tests.
//!
//! It finds the node through the files the node writes in its home
//! (`api.addr`, `api.token`), so commands need only `--home`.

use std::net::SocketAddr;
use std::time::Duration;

use passerelle_protocol::ids::{DocId, NodeId};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::engine::{BundleSummary, ImportReport};
use crate::home::Home;
use crate::views::{
    AcceptOffer, AddPeer, ApiErrorBody, CreateDoc, CreateNetwork, DocSummary, DocView, ExportBundle, HistoryEntry,
    ImportBundle, InviteRequest, InviteView, JoinRequest, NetworkView, NodeStatus, PartnerRequest, PeerView,
    RelayRequest, RemoveRequest, RevokeRequest, UpdateDoc, VerifyReport,
};

/// How long a request may take before the node counts as unreachable.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Errors of the client.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No node answers for this home.
    #[error("no node is running for {home}: {reason}. Start it with `passerelle run --home {home}`")]
    NotReachable {
        /// The home.
        home: String,
        /// What was found.
        reason: String,
    },
    /// The node answered with an error.
    #[error("{message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// The node's error code.
        code: String,
        /// The node's message.
        message: String,
    },
    /// The answer could not be understood.
    #[error("unexpected answer from the node: {0}")]
    Protocol(String),
}

/// A client bound to one node.
#[derive(Debug, Clone)]
pub struct ApiClient {
    base: String,
    token: Option<String>,
    home: String,
    agent: ureq::Agent,
}

impl ApiClient {
    /// The client of the node running on `home`.
    ///
    /// # Errors
    /// [`ClientError::NotReachable`] when the node's address file is absent.
    pub fn for_home(home: &Home) -> Result<Self, ClientError> {
        let home_text = home.root().display().to_string();
        let addr = std::fs::read_to_string(home.api_addr()).map_err(|_| ClientError::NotReachable {
            home: home_text.clone(),
            reason: "it has not written its API address".into(),
        })?;
        let addr: SocketAddr = addr.trim().parse().map_err(|_| ClientError::NotReachable {
            home: home_text.clone(),
            reason: format!("its address file holds {:?}", addr.trim()),
        })?;
        let token = std::fs::read_to_string(home.api_token()).ok().map(|t| t.trim().to_owned());
        Ok(Self::new(addr, token, home_text))
    }

    /// A client of the node at `addr`.
    pub fn new(addr: SocketAddr, token: Option<String>, home: String) -> Self {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(REQUEST_TIMEOUT))
            .timeout_connect(Some(Duration::from_secs(5)))
            .build();
        Self { base: format!("http://{addr}"), token, home, agent: config.into() }
    }

    fn finish<T: DeserializeOwned>(
        &self,
        result: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<T, ClientError> {
        let mut resp =
            result.map_err(|e| ClientError::NotReachable { home: self.home.clone(), reason: e.to_string() })?;
        let status = resp.status().as_u16();
        if resp.status().is_success() {
            resp.body_mut().read_json::<T>().map_err(|e| ClientError::Protocol(e.to_string()))
        } else {
            let body: ApiErrorBody = resp.body_mut().read_json().unwrap_or_else(|_| ApiErrorBody {
                code: "http".into(),
                error: format!("the node answered HTTP {status}"),
            });
            Err(ClientError::Api { status, code: body.code, message: body.error })
        }
    }

    /// The token's header, when this client has one (without, the node
    /// answers with how to get one).
    fn auth(&self) -> Option<String> {
        self.token.as_deref().map(|t| format!("Bearer {t}"))
    }

    fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let mut req = self.agent.get(format!("{}{path}", self.base));
        if let Some(auth) = self.auth() {
            req = req.header("Authorization", &auth);
        }
        self.finish(req.call())
    }

    /// `POST /v1/login`: a one-time link that opens a browser session.
    ///
    /// # Errors
    /// [`ClientError`].
    pub fn login_link(&self) -> Result<crate::views::LoginLink, ClientError> {
        self.send("POST", "/v1/login", &serde_json::json!({}))
    }

    fn send<B: Serialize, T: DeserializeOwned>(&self, method: &str, path: &str, body: &B) -> Result<T, ClientError> {
        let url = format!("{}{path}", self.base);
        let auth = format!("Bearer {}", self.token.as_deref().unwrap_or(""));
        let result = match method {
            "POST" => self.agent.post(url).header("Authorization", &auth).send_json(body),
            _ => self.agent.patch(url).header("Authorization", &auth).send_json(body),
        };
        self.finish(result)
    }

    /// `GET /v1/status`.
    ///
    /// # Errors
    /// [`ClientError`].
    pub fn status(&self) -> Result<NodeStatus, ClientError> {
        self.get("/v1/status")
    }

    /// `GET /metrics`: the Prometheus text.
    ///
    /// # Errors
    /// [`ClientError`].
    pub fn metrics(&self) -> Result<String, ClientError> {
        let mut req = self.agent.get(format!("{}/metrics", self.base));
        if let Some(auth) = self.auth() {
            req = req.header("Authorization", &auth);
        }
        let mut resp =
            req.call().map_err(|e| ClientError::NotReachable { home: self.home.clone(), reason: e.to_string() })?;
        if !resp.status().is_success() {
            let status = resp.status().as_u16();
            return Err(ClientError::Api { status, code: "http".into(), message: format!("HTTP {status}") });
        }
        resp.body_mut().read_to_string().map_err(|e| ClientError::Protocol(e.to_string()))
    }

    /// `GET /v1/docs`.
    ///
    /// # Errors
    /// [`ClientError`].
    pub fn list(
        &self,
        kind: Option<&str>,
        status: Option<&str>,
        owner: Option<&str>,
    ) -> Result<Vec<DocSummary>, ClientError> {
        let mut query = Vec::new();
        for (k, v) in [("kind", kind), ("status", status), ("owner", owner)] {
            if let Some(v) = v {
                query.push(format!("{k}={}", encode(v)));
            }
        }
        // Page through the list: the node answers at most MAX_LIST_PAGE at a time.
        let page = crate::api::MAX_LIST_PAGE;
        let mut all: Vec<DocSummary> = Vec::new();
        loop {
            let mut q = query.clone();
            q.push(format!("limit={page}"));
            q.push(format!("offset={}", all.len()));
            let got: Vec<DocSummary> = self.get(&format!("/v1/docs?{}", q.join("&")))?;
            let done = got.len() < page;
            all.extend(got);
            if done {
                return Ok(all);
            }
        }
    }

    /// `GET /v1/docs/{id}`.
    ///
    /// # Errors
    /// [`ClientError`].
    pub fn show(&self, id: &DocId, lang: Option<&str>) -> Result<DocView, ClientError> {
        let q = lang.map(|l| format!("?lang={}", encode(l))).unwrap_or_default();
        self.get(&format!("/v1/docs/{id}{q}"))
    }

    /// `POST /v1/docs`.
    ///
    /// # Errors
    /// [`ClientError`].
    pub fn create(&self, req: &CreateDoc) -> Result<DocView, ClientError> {
        self.send("POST", "/v1/docs", req)
    }

    /// `PATCH /v1/docs/{id}`.
    ///
    /// # Errors
    /// [`ClientError`].
    pub fn update(&self, id: &DocId, req: &UpdateDoc) -> Result<DocView, ClientError> {
        self.send("PATCH", &format!("/v1/docs/{id}"), req)
    }

    /// `GET /v1/docs/{id}/history`.
    ///
    /// # Errors
    /// [`ClientError`].
    pub fn history(&self, id: &DocId) -> Result<Vec<HistoryEntry>, ClientError> {
        self.get(&format!("/v1/docs/{id}/history"))
    }

    /// `GET /v1/peers`.
    ///
    /// # Errors
    /// [`ClientError`].
    pub fn peers(&self) -> Result<Vec<PeerView>, ClientError> {
        self.get("/v1/peers")
    }

    /// `GET /v1/peers/{node}/pending`.
    ///
    /// # Errors
    /// [`ClientError`].
    pub fn pending(&self, node: &NodeId) -> Result<Vec<crate::views::PendingDoc>, ClientError> {
        self.get(&format!("/v1/peers/{node}/pending"))
    }

    /// `POST /v1/peers`.
    ///
    /// # Errors
    /// [`ClientError`].
    pub fn add_peer(&self, node: &NodeId, addr: &str) -> Result<PeerView, ClientError> {
        self.send("POST", "/v1/peers", &AddPeer { node: *node, addr: addr.to_owned() })
    }

    /// `DELETE /v1/peers/{node}`.
    ///
    /// # Errors
    /// [`ClientError`].
    pub fn remove_peer(&self, node: &NodeId) -> Result<(), ClientError> {
        let url = format!("{}/v1/peers/{node}", self.base);
        let auth = format!("Bearer {}", self.token.as_deref().unwrap_or(""));
        let result = self.agent.delete(url).header("Authorization", &auth).call();
        let mut resp =
            result.map_err(|e| ClientError::NotReachable { home: self.home.clone(), reason: e.to_string() })?;
        if resp.status().is_success() {
            return Ok(());
        }
        let status = resp.status().as_u16();
        let body: ApiErrorBody = resp.body_mut().read_json().unwrap_or_else(|_| ApiErrorBody {
            code: "http".into(),
            error: format!("the node answered HTTP {status}"),
        });
        Err(ClientError::Api { status, code: body.code, message: body.error })
    }

    /// `POST /v1/docs/{id}/relay`.
    ///
    /// # Errors
    /// [`ClientError`].
    pub fn relay(&self, id: &DocId, note: Option<&str>) -> Result<DocView, ClientError> {
        self.send("POST", &format!("/v1/docs/{id}/relay"), &RelayRequest { note: note.map(str::to_owned) })
    }

    /// `POST /v1/docs/{id}/accept`.
    ///
    /// # Errors
    /// [`ClientError`].
    pub fn accept(&self, request: &DocId, offer: &DocId) -> Result<DocView, ClientError> {
        self.send("POST", &format!("/v1/docs/{request}/accept"), &AcceptOffer { offer: *offer })
    }

    /// `POST /v1/bundles/export`: the node writes the bundle at `path`.
    ///
    /// # Errors
    /// [`ClientError`].
    pub fn export_bundle(&self, recipient: &str, all: bool, path: &str) -> Result<BundleSummary, ClientError> {
        let req = ExportBundle { recipient: recipient.to_owned(), all, path: path.to_owned() };
        self.send("POST", "/v1/bundles/export", &req)
    }

    /// `POST /v1/bundles/import`: the node reads the bundle at `path`.
    ///
    /// # Errors
    /// [`ClientError`].
    pub fn import_bundle(&self, path: &str) -> Result<ImportReport, ClientError> {
        self.send("POST", "/v1/bundles/import", &ImportBundle { path: path.to_owned() })
    }

    /// `GET /v1/network`.
    ///
    /// # Errors
    /// [`ClientError`].
    pub fn network(&self) -> Result<NetworkView, ClientError> {
        self.get("/v1/network")
    }

    /// `GET /v1/network/state`: the network as this node sees it.
    ///
    /// # Errors
    /// [`ClientError`].
    pub fn network_state(&self) -> Result<crate::views::NetworkState, ClientError> {
        self.get("/v1/network/state")
    }

    /// `GET /v1/network/heartbeats`: the latest heartbeat of every node.
    ///
    /// # Errors
    /// [`ClientError`].
    pub fn heartbeats(&self) -> Result<Vec<crate::views::HeartbeatView>, ClientError> {
        self.get("/v1/network/heartbeats")
    }

    /// `POST /v1/network`: found a network.
    ///
    /// # Errors
    /// [`ClientError`].
    pub fn create_network(&self, name: &str) -> Result<NetworkView, ClientError> {
        self.send("POST", "/v1/network", &CreateNetwork { name: name.to_owned() })
    }

    /// `POST /v1/network/invitations`.
    ///
    /// # Errors
    /// [`ClientError`].
    pub fn invite(&self, req: &InviteRequest) -> Result<InviteView, ClientError> {
        self.send("POST", "/v1/network/invitations", req)
    }

    /// `POST /v1/network/join`.
    ///
    /// # Errors
    /// [`ClientError`].
    pub fn join(&self, token: &str) -> Result<NetworkView, ClientError> {
        self.send("POST", "/v1/network/join", &JoinRequest { token: token.to_owned() })
    }

    /// `POST /v1/network/partners`.
    ///
    /// # Errors
    /// [`ClientError`].
    pub fn partner(&self, commune: &str, action: &str) -> Result<NetworkView, ClientError> {
        let req = PartnerRequest { commune: commune.to_owned(), action: action.to_owned() };
        self.send("POST", "/v1/network/partners", &req)
    }

    /// `POST /v1/network/revocations`.
    ///
    /// # Errors
    /// [`ClientError`].
    pub fn revoke(&self, node: &NodeId) -> Result<NetworkView, ClientError> {
        self.send("POST", "/v1/network/revocations", &RevokeRequest { node: *node })
    }

    /// `POST /v1/network/removals`.
    ///
    /// # Errors
    /// [`ClientError`].
    pub fn remove_member(&self, commune: &str) -> Result<NetworkView, ClientError> {
        self.send("POST", "/v1/network/removals", &RemoveRequest { commune: commune.to_owned() })
    }

    /// `POST /v1/verify`.
    ///
    /// # Errors
    /// [`ClientError`].
    pub fn verify(&self) -> Result<VerifyReport, ClientError> {
        self.send("POST", "/v1/verify", &serde_json::json!({}))
    }
}

/// Percent-encodes a query value.
fn encode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
