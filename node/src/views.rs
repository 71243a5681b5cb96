//! Request and response bodies of the local HTTP API, shared by the node
//! (which serves them) and the CLI (which sends and renders them), so the two
//! can never disagree.

use std::collections::BTreeMap;

use passerelle_protocol::document::StatusEntry;
use passerelle_protocol::ids::{CommuneId, DocId, NodeId};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Body of `POST /v1/docs`.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct CreateDoc {
    /// Kind: project, request, offer, practice, followup (or profile).
    pub kind: String,
    /// Field values (see `docs/cli.md` for each kind's fields).
    #[serde(default)]
    pub fields: Map<String, Value>,
    /// Language of text given as plain strings; the node's language if absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lang: Option<String>,
    /// `network` or `partnership`; the kind's default if absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// Communes besides the owner allowed to change the document.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub writers: Vec<CommuneId>,
    /// Initial status; the kind's default if absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
}

/// Body of `PATCH /v1/docs/{id}`.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct UpdateDoc {
    /// Fields to set; `null` removes an optional field.
    #[serde(default)]
    pub fields: Map<String, Value>,
    /// Language of text given as plain strings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lang: Option<String>,
    /// A new status (forward moves only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// A note recorded with the status move.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// A document as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DocView {
    /// Self-certifying id.
    pub id: DocId,
    /// Kind code.
    pub kind: String,
    /// Owner commune.
    pub owner: CommuneId,
    /// Communes allowed to change it.
    pub writers: Vec<CommuneId>,
    /// Scope code.
    pub scope: String,
    /// Content schema version it was created with.
    pub schema: u32,
    /// Creation time (ms since the Unix epoch).
    pub created_ms: i64,
    /// Time of its latest change (ms).
    pub updated_ms: i64,
    /// Current status (the most advanced in its log).
    pub status: Option<String>,
    /// Title in the requested language, else the original.
    pub title: Option<String>,
    /// Field values.
    pub fields: Map<String, Value>,
    /// Every status move.
    pub status_log: Vec<StatusEntry>,
    /// Automerge heads (hex).
    pub heads: Vec<String>,
    /// Number of stored changes.
    pub changes: u64,
}

/// A line of a document list.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DocSummary {
    /// Id.
    pub id: DocId,
    /// Kind code.
    pub kind: String,
    /// Owner commune.
    pub owner: String,
    /// Scope code.
    pub scope: String,
    /// Title (original language).
    pub title: Option<String>,
    /// Current status.
    pub status: Option<String>,
    /// Time of its latest change (ms).
    pub updated_ms: i64,
    /// Number of changes.
    pub changes: u64,
    /// Automerge heads (hex), to compare replicas.
    pub heads: Vec<String>,
}

/// One change in a document's history.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct HistoryEntry {
    /// Position in the document's log.
    pub seq: u64,
    /// Automerge change hash (hex).
    pub hash: String,
    /// The node key that signed it.
    pub author_node: NodeId,
    /// The commune that node speaks for, if known.
    pub author_commune: Option<CommuneId>,
    /// Time the author gave the change (ms).
    pub time_ms: i64,
    /// What changed, as the author's node summarised it.
    pub message: Option<String>,
    /// Number of operations in the change.
    pub ops: usize,
    /// Hashes of the changes it builds on.
    pub deps: Vec<String>,
    /// When this node stored it (ms).
    pub received_ms: i64,
    /// The peer it came from, or none if written here.
    pub received_from: Option<String>,
}

/// One failure found by `verify`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct VerifyFailure {
    /// The document.
    pub doc: DocId,
    /// The change's position in the document's log; none for the header.
    pub seq: Option<u64>,
    /// The change hash, when it could be read.
    pub hash: Option<String>,
    /// What failed.
    pub reason: String,
}

/// Result of `POST /v1/verify`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct VerifyReport {
    /// Documents checked.
    pub documents: u64,
    /// Changes checked.
    pub changes: u64,
    /// What failed; empty when everything holds.
    pub failures: Vec<VerifyFailure>,
    /// Records of the store that do not decode (`passerelle repair` sets
    /// them aside).
    #[serde(default)]
    pub damaged: Vec<crate::store::DamagedRecord>,
    /// Documents this node and a peer agree to differ on (not failures:
    /// one refused part of what the other holds; see `docs/protocol.md`).
    #[serde(default)]
    pub apart: Vec<ApartDoc>,
}

/// A document this node and one peer leave out of their comparison.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ApartDoc {
    /// The peer.
    pub peer: passerelle_protocol::ids::NodeId,
    /// The document.
    pub doc: DocId,
    /// Who refused, why, since when.
    #[serde(flatten)]
    pub note: ApartNote,
}

/// Result of `GET /v1/status`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NodeStatus {
    /// Version of the node software.
    pub version: String,
    /// The commune's name.
    pub name: String,
    /// Its country code.
    pub country: String,
    /// Its id.
    pub commune_id: CommuneId,
    /// This node's id.
    pub node_id: NodeId,
    /// Where the API listens.
    pub api_addr: String,
    /// Seconds since the node started.
    pub uptime_s: u64,
    /// Documents by kind.
    pub documents: BTreeMap<String, u64>,
    /// Documents by kind, then status.
    pub statuses: BTreeMap<String, BTreeMap<String, u64>>,
    /// The node's libp2p peer id (its node key).
    pub peer_id: String,
    /// The libp2p addresses it listens on (through relays too).
    pub listen: Vec<String>,
    /// Whether other nodes can dial it (AutoNAT): `public`, `private`
    /// (reached through relays only) or `unknown`.
    #[serde(default)]
    pub reachability: String,
    /// Peers connected now.
    pub peers_connected: usize,
    /// The network this node belongs to (name and id), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// This commune's role in it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
}

/// A one-time link that opens a browser session on the node's API
/// (`POST /v1/login`, `passerelle login`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LoginLink {
    /// Open it in a browser on a machine that reaches the API.
    pub url: String,
    /// It can be used once, until then (ms since the Unix epoch).
    pub expires_ms: i64,
}

/// Body of every error response.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ApiErrorBody {
    /// A stable code: `not_found`, `invalid`, `unauthorized`, ...
    pub code: String,
    /// A sentence saying what went wrong.
    pub error: String,
}

/// A peer as `GET /v1/peers` shows it: what the node remembers of it, and
/// whether it is connected now.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PeerView {
    /// The stored record: addresses, commune, last sync, bytes, errors.
    #[serde(flatten)]
    pub record: crate::store::PeerRecord,
    /// Connected now (and its certificate checked).
    pub connected: bool,
    /// Delivery receipts: of the documents this node may share with the
    /// peer, how many it has acknowledged at their current state (known
    /// once its commune is known and this node is in a network).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipts: Option<Receipts>,
    /// Documents waiting in this node's transfer queue for the peer: found
    /// missing there, not yet acknowledged (a transfer cut by a
    /// disconnection resumes with them).
    #[serde(default)]
    pub queued: u64,
    /// Documents the two agree to differ on: one refused part of what the
    /// other holds (a change by a key revoked since, dated ahead…), and
    /// both leave them out of their comparison until either changes them
    /// (listed by `GET /v1/peers/{node}/pending`).
    #[serde(default)]
    pub apart: u64,
}

/// What a peer has acknowledged: every document shared with it was at the
/// peer's heads in its last in-sync round; documents this node stored a
/// change of since then are pending.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct Receipts {
    /// Documents this node may share with the peer.
    pub shared: u64,
    /// Of those, acknowledged at their current heads.
    pub acknowledged: u64,
    /// Changed here since the peer's last in-sync round (or never synced).
    pub pending: u64,
}

/// A document a peer has not acknowledged yet (`GET /v1/peers/{node}/pending`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PendingDoc {
    /// The document.
    pub id: DocId,
    /// Its kind.
    pub kind: String,
    /// Its title.
    pub title: Option<String>,
    /// When this node stored its latest change (ms).
    pub stored_ms: i64,
    /// Set when the two agree to differ on it: who refused what the other
    /// holds of it, and why (a reason code).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apart: Option<ApartNote>,
}

/// Why a document is left out of the comparison with a peer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ApartNote {
    /// `here` (this node refused part of the peer's state) or `peer`.
    pub refused_by: String,
    /// The refusal's reason code (`revoked`, `from_the_future`…).
    pub code: String,
    /// Since when (ms).
    pub since_ms: i64,
}

impl From<&passerelle_protocol::sync::audience::Apart> for ApartNote {
    fn from(a: &passerelle_protocol::sync::audience::Apart) -> Self {
        Self {
            refused_by: if a.refused_here { "here" } else { "peer" }.into(),
            code: a.code.clone(),
            since_ms: a.since,
        }
    }
}

/// Body of `POST /v1/peers`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddPeer {
    /// The peer's node id.
    pub node: NodeId,
    /// Where to reach it (a multiaddr such as `/ip4/192.0.2.7/tcp/7421`).
    pub addr: String,
}

/// A member of the network, as `GET /v1/network` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MemberView {
    /// Its commune id.
    pub commune: CommuneId,
    /// Its name.
    pub name: String,
    /// Its country code.
    pub country: String,
    /// `commune`, `observer` or `coordinator`.
    pub role: String,
    /// When it was admitted (ms).
    pub since_ms: u64,
    /// The coordinator that admitted it.
    pub admitted_by: CommuneId,
    /// The node it joined with, if known.
    pub node: Option<NodeId>,
    /// Node keys its commune certified that this node knows of.
    pub nodes: Vec<NodeKeyView>,
    /// Whether that is this node's commune.
    pub me: bool,
}

/// A certified node key and whether it may still act.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NodeKeyView {
    /// The node key.
    pub node: NodeId,
    /// When the commune certified it (ms).
    pub certified_ms: u64,
    /// Whether it is revoked.
    pub revoked: bool,
}

/// A partnership, as declared by its two sides.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PartnershipView {
    /// One side.
    pub a: CommuneId,
    /// Its name.
    pub a_name: String,
    /// The other side.
    pub b: CommuneId,
    /// Its name.
    pub b_name: String,
    /// Whether `a` signed it.
    pub a_signed: bool,
    /// Whether `b` signed it.
    pub b_signed: bool,
    /// Active once both signed.
    pub active: bool,
}

/// The network this node belongs to: `GET /v1/network`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NetworkView {
    /// The network id (derived from the founding statement).
    pub network: String,
    /// Its name.
    pub name: String,
    /// The founding coordinator.
    pub founder: Option<CommuneId>,
    /// This commune's role.
    pub role: Option<String>,
    /// Current members.
    pub members: Vec<MemberView>,
    /// Declared partnerships (active or waiting for the other side).
    pub partnerships: Vec<PartnershipView>,
    /// Revoked node keys.
    pub revoked: Vec<NodeId>,
    /// Node keys that two communes registered (the key signed both claims:
    /// shared or stolen): refused for both; a coordinator should revoke them.
    #[serde(default)]
    pub key_conflicts: Vec<NodeId>,
    /// Statements the roster is folded from.
    pub statements: usize,
}

/// Body of `POST /v1/network`: found a network.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateNetwork {
    /// The network's name.
    pub name: String,
}

/// Body of `POST /v1/network/invitations`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InviteRequest {
    /// The invited commune's name.
    pub name: String,
    /// Its country (ISO 3166 alpha-2).
    pub country: String,
    /// `commune` (default), `observer` or `coordinator`.
    #[serde(default)]
    pub role: Option<String>,
    /// Hours until the invitation expires (default 168, one week).
    #[serde(default)]
    pub expires_in_hours: Option<u64>,
}

/// An issued invitation.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct InviteView {
    /// The token to hand to the invited commune.
    pub token: String,
    /// The invitation id (hex).
    pub id: String,
    /// Invited name.
    pub name: String,
    /// Role offered.
    pub role: String,
    /// Expiry (ms).
    pub expires_ms: u64,
}

/// Body of `POST /v1/network/join`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinRequest {
    /// The invitation token.
    pub token: String,
}

/// Body of `POST /v1/network/partners`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartnerRequest {
    /// The other commune (id, or a unique prefix of its id or name).
    pub commune: String,
    /// `propose`, `accept` or `end`.
    pub action: String,
}

/// Body of `POST /v1/network/revocations`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokeRequest {
    /// The node key to revoke.
    pub node: NodeId,
}

/// Body of `POST /v1/network/removals`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoveRequest {
    /// The member to remove (id, or a unique prefix of its id or name).
    pub commune: String,
}

/// Body of `POST /v1/docs/{id}/relay`.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RelayRequest {
    /// A note recorded with the relay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Body of `POST /v1/docs/{id}/accept`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcceptOffer {
    /// The offer accepted.
    pub offer: DocId,
}

/// Body of `POST /v1/bundles/export`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportBundle {
    /// The member it is for: commune id, id prefix or name.
    #[serde(rename = "for")]
    pub recipient: String,
    /// Everything it may hold, not only what it lacks as far as this node knows.
    #[serde(default)]
    pub all: bool,
    /// Where the node writes the file (an absolute path on the node's machine).
    pub path: String,
}

/// Body of `POST /v1/bundles/import`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportBundle {
    /// The file to read (an absolute path on the node's machine).
    pub path: String,
}

/// What a node said of one of its peers in its latest heartbeat.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PeerBeatView {
    /// The peer.
    pub node: NodeId,
    /// Its commune's name, if this node knows the node.
    pub name: Option<String>,
    /// Connected then.
    pub connected: bool,
    /// Last connection (ms), if any.
    pub last_contact_ms: Option<u64>,
    /// Last round found in sync (ms), if any.
    pub last_sync_ms: Option<u64>,
    /// Shared documents it had not acknowledged.
    pub unacknowledged: u64,
    /// Documents queued for it.
    pub queued: u64,
}

/// A node's latest heartbeat as this node holds it (`GET /v1/network/heartbeats`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct HeartbeatView {
    /// The node.
    pub node: NodeId,
    /// Its commune.
    pub commune: CommuneId,
    /// The commune's name in the roster.
    pub name: Option<String>,
    /// When the node made it (ms, its clock).
    pub time_ms: u64,
    /// When the node was last heard of: this heartbeat, or a later pulse
    /// saying it is still there and its status unchanged (ms).
    #[serde(default)]
    pub heard_ms: u64,
    /// When it arrived here (ms, this node's clock).
    pub received_ms: i64,
    /// The peer it came through (`None`: this node's own).
    pub via: Option<NodeId>,
    /// That peer's commune name.
    pub via_name: Option<String>,
    /// The node's software version.
    pub version: String,
    /// Its uptime then (s).
    pub uptime_s: u64,
    /// Its peers.
    pub peers: Vec<PeerBeatView>,
    /// Documents by kind and status.
    pub documents: Vec<DocCount>,
    /// Its store's size on disk.
    pub disk_bytes: u64,
    /// What it refused since it started, by reason.
    pub rejected: BTreeMap<String, u64>,
}

/// How many documents of a kind and status a node holds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DocCount {
    /// The kind.
    pub kind: String,
    /// The status (empty for kinds without one).
    pub status: String,
    /// How many.
    pub count: u64,
}

/// The network as this node sees it (`GET /v1/network/state`): members and
/// their nodes as heartbeats describe them, partnerships, links, the
/// requests board with candidate offers, response times and a timeline.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NetworkState {
    /// The network's name, if this node is in one.
    pub network: Option<String>,
    /// When this view was computed (ms).
    pub generated_ms: i64,
    /// Members and their nodes.
    pub members: Vec<MemberState>,
    /// Partnerships, active or proposed.
    pub partnerships: Vec<PartnershipState>,
    /// Links between nodes, as their heartbeats report them.
    pub links: Vec<LinkState>,
    /// Requests this node holds, newest first, with candidate offers.
    pub requests: Vec<RequestState>,
    /// Requests by status.
    pub requests_by_status: BTreeMap<String, u64>,
    /// Medians of the time to a first offer and to an answer.
    pub response_times: ResponseTimes,
    /// The latest events, newest first.
    pub timeline: Vec<TimelineEvent>,
    /// Labels of the statuses shown, by `kind/status` (`request/open`).
    #[serde(default)]
    pub status_labels: BTreeMap<String, StatusLabel>,
}

/// A status's name in the languages the schema gives.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct StatusLabel {
    /// French.
    pub fr: String,
    /// English.
    pub en: String,
}

/// A member and its nodes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MemberState {
    /// Its commune.
    pub commune: CommuneId,
    /// Its name.
    pub name: String,
    /// Its country.
    pub country: String,
    /// Its role.
    pub role: String,
    /// Its nodes heard of through heartbeats.
    pub nodes: Vec<NodeState>,
}

/// A node, as its latest heartbeat describes it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NodeState {
    /// The node.
    pub node: NodeId,
    /// When its latest heartbeat was made (ms).
    pub last_heard_ms: u64,
    /// The commune of the peer it came through (`None`: this node; the
    /// node's own name when it came directly).
    pub via: Option<String>,
    /// Its software version.
    pub version: String,
    /// Peers connected / known.
    pub peers_connected: u64,
    /// Peers known.
    pub peers_known: u64,
    /// Shared documents its peers have not acknowledged, summed.
    pub unacknowledged: u64,
    /// Documents in its transfer queues.
    pub queued: u64,
    /// The longest time since one of its connected peers was last found in
    /// sync, when it reported (s): its sync lag.
    pub lag_s: Option<u64>,
}

/// A partnership between two members.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PartnershipState {
    /// One side.
    pub a: CommuneId,
    /// Its name.
    pub a_name: String,
    /// The other side.
    pub b: CommuneId,
    /// Its name.
    pub b_name: String,
    /// Both sides signed.
    pub active: bool,
}

/// A link between two nodes, as the first one's heartbeat reports it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LinkState {
    /// The reporting node.
    pub from: NodeId,
    /// Its commune's name.
    pub from_name: Option<String>,
    /// Its peer.
    pub to: NodeId,
    /// The peer's commune name.
    pub to_name: Option<String>,
    /// Connected when reported.
    pub connected: bool,
    /// Seconds between the last in-sync round and the report (`None`: never in sync).
    pub lag_s: Option<u64>,
    /// `ok` (connected, in sync within 5 min), `lagging`, `down`.
    pub health: String,
}

/// A request and the offers that may answer it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RequestState {
    /// The request.
    pub id: DocId,
    /// Its title.
    pub title: Option<String>,
    /// Its owner's name.
    pub owner: String,
    /// Its status.
    pub status: Option<String>,
    /// Its scope.
    pub scope: String,
    /// Its theme, if set.
    pub theme: Option<String>,
    /// Its dimensions.
    pub dimensions: Vec<String>,
    /// Created (ms).
    pub created_ms: i64,
    /// Time to its first offer (s).
    pub first_offer_s: Option<u64>,
    /// Time to its answer (s).
    pub answered_s: Option<u64>,
    /// Offers naming it, then offers matching its theme or dimensions.
    pub candidates: Vec<Candidate>,
}

/// An offer that may answer a request.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Candidate {
    /// The offer.
    pub id: DocId,
    /// Its title.
    pub title: Option<String>,
    /// Its owner's name.
    pub owner: String,
    /// Its status.
    pub status: Option<String>,
    /// It names the request itself.
    pub answers: bool,
    /// Themes and dimensions it shares with the request.
    pub shared: Vec<String>,
}

/// How fast requests get offers and answers.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct ResponseTimes {
    /// Median time to a first offer (s), over the requests that have one.
    pub first_offer_median_s: Option<u64>,
    /// How many requests have an offer.
    pub with_offer: u64,
    /// Median time to an answer (s).
    pub answer_median_s: Option<u64>,
    /// How many requests were answered.
    pub answered: u64,
}

/// Something that happened to a document.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TimelineEvent {
    /// When (ms).
    pub at_ms: i64,
    /// The document.
    pub doc: DocId,
    /// Its kind.
    pub kind: String,
    /// Its title.
    pub title: Option<String>,
    /// `created`, or the status it moved to.
    pub what: String,
    /// The commune that did it.
    pub by: String,
}
