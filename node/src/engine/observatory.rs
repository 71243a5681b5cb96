//! The network's state for coordinators (`GET /v1/network/state`): the
//! roster, what every node said of itself in its latest heartbeat, and the
//! requests and offers this node holds — matched by theme and dimension,
//! with the time they took to get an offer and an answer.

use std::collections::{BTreeMap, HashMap};

use passerelle_protocol::ids::{CommuneId, DocId};
use serde_json::Value;

use super::EngineError;
use super::worker::Worker;
use crate::clock;
use crate::store::Store;
use crate::views::StatusLabel;
use crate::views::{
    Candidate, DocView, LinkState, MemberState, NetworkState, NodeState, PartnershipState, RequestState, ResponseTimes,
    TimelineEvent,
};

/// Most requests and offers looked at (the most recently changed).
const MAX_DOCS: usize = 500;
/// Candidate offers listed per request.
const MAX_CANDIDATES: usize = 5;
/// Events in the timeline.
const TIMELINE: usize = 50;
/// A link in sync within this long is healthy.
const HEALTHY_LAG_S: u64 = 300;

/// A field's codes: a code, or a list of codes.
fn codes(fields: &serde_json::Map<String, Value>, name: &str) -> Vec<String> {
    match fields.get(name) {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect(),
        _ => Vec::new(),
    }
}

fn median(mut v: Vec<u64>) -> Option<u64> {
    if v.is_empty() {
        return None;
    }
    v.sort_unstable();
    Some(v[v.len() / 2])
}

impl<S: Store> Worker<S> {
    fn commune_name(&self, commune: &str) -> String {
        commune
            .parse::<CommuneId>()
            .ok()
            .and_then(|c| self.replica.roster()?.member(&c).map(|m| m.name.clone()))
            .unwrap_or_else(|| commune.chars().take(8).collect())
    }

    /// The latest views of the documents of `kind`, most recently changed first.
    fn views_of(&mut self, kind: &str) -> Result<Vec<DocView>, EngineError> {
        let mut metas: Vec<_> = self.store.metas()?.into_iter().filter(|m| m.kind == kind).collect();
        metas.sort_by_key(|m| std::cmp::Reverse(m.updated_ms));
        metas.truncate(MAX_DOCS);
        let mut out = Vec::with_capacity(metas.len());
        for m in metas {
            match self.get(m.id, None) {
                Ok(v) => out.push(v),
                Err(e) => tracing::warn!(doc = %m.id.short(), error = %e, "left out of the network state"),
            }
        }
        Ok(out)
    }

    /// The network's state as this node knows it.
    pub(crate) fn network_state(&mut self) -> Result<NetworkState, EngineError> {
        let now = clock::now_ms();
        let beats = self.heartbeat_views();
        let mut members = Vec::new();
        let mut partnerships = Vec::new();
        let mut network = None;
        if let Some(roster) = self.replica.roster() {
            network = Some(roster.name().to_owned());
            for m in roster.members() {
                let nodes = beats
                    .iter()
                    .filter(|b| b.commune == m.commune)
                    .map(|b| NodeState {
                        node: b.node,
                        last_heard_ms: b.heard_ms,
                        via: match b.via {
                            None => None,
                            Some(v) if v == b.node => b.name.clone(),
                            Some(v) => b.via_name.clone().or_else(|| Some(v.short())),
                        },
                        version: b.version.clone(),
                        peers_connected: b.peers.iter().filter(|p| p.connected).count() as u64,
                        peers_known: b.peers.len() as u64,
                        unacknowledged: b.peers.iter().map(|p| p.unacknowledged).sum(),
                        queued: b.peers.iter().map(|p| p.queued).sum(),
                        lag_s: b
                            .peers
                            .iter()
                            .filter(|p| p.connected)
                            .filter_map(|p| p.last_sync_ms.map(|t| b.time_ms.saturating_sub(t) / 1000))
                            .max(),
                    })
                    .collect();
                members.push(MemberState {
                    commune: m.commune,
                    name: m.name.clone(),
                    country: m.country.clone(),
                    role: m.role.as_str().to_owned(),
                    nodes,
                });
            }
            let name = |c: &CommuneId| roster.member(c).map_or_else(|| c.short(), |m| m.name.clone());
            for p in roster.partnerships() {
                partnerships.push(PartnershipState {
                    a: p.a,
                    a_name: name(&p.a),
                    b: p.b,
                    b_name: name(&p.b),
                    active: p.active(),
                });
            }
        }
        members.sort_by(|a, b| a.country.cmp(&b.country).then(a.name.cmp(&b.name)));
        let mut links = Vec::new();
        for b in &beats {
            for p in &b.peers {
                let lag_s = p.last_sync_ms.map(|t| b.time_ms.saturating_sub(t) / 1000);
                // Rounds grow rare while peers agree: a link is healthy when it
                // was in sync lately, or when nothing changed since it last was.
                let health = match (p.connected, lag_s) {
                    (true, Some(l)) if l <= HEALTHY_LAG_S || (p.unacknowledged == 0 && p.queued == 0) => "ok",
                    (true, _) => "lagging",
                    (false, _) => "down",
                };
                links.push(LinkState {
                    from: b.node,
                    from_name: b.name.clone(),
                    to: p.node,
                    to_name: p.name.clone(),
                    connected: p.connected,
                    lag_s,
                    health: health.to_owned(),
                });
            }
        }

        // The requests board.
        let requests = self.views_of("request")?;
        let offers = self.views_of("offer")?;
        let mut by_request: HashMap<DocId, Vec<&DocView>> = HashMap::new();
        for o in &offers {
            if let Some(r) = o.fields.get("request").and_then(Value::as_str).and_then(|s| s.parse::<DocId>().ok()) {
                by_request.entry(r).or_default().push(o);
            }
        }
        let mut board = Vec::new();
        let mut by_status: BTreeMap<String, u64> = BTreeMap::new();
        let (mut to_offer, mut to_answer) = (Vec::new(), Vec::new());
        for r in &requests {
            *by_status.entry(r.status.clone().unwrap_or_default()).or_default() += 1;
            let theme = codes(&r.fields, "theme").into_iter().next();
            let dimensions = codes(&r.fields, "dimensions");
            let wanted: Vec<String> = theme.iter().cloned().chain(dimensions.iter().cloned()).collect();
            let answering = by_request.get(&r.id).cloned().unwrap_or_default();
            let first_offer_s =
                answering.iter().map(|o| o.created_ms).min().map(|t| ((t - r.created_ms).max(0) / 1000) as u64);
            let answered_s = r
                .status_log
                .iter()
                .find(|e| e.status == "answered")
                .map(|e| ((e.at_ms - r.created_ms).max(0) / 1000) as u64);
            to_offer.extend(first_offer_s);
            to_answer.extend(answered_s);
            let mut candidates: Vec<(usize, Candidate)> = offers
                .iter()
                .filter_map(|o| {
                    let answers = answering.iter().any(|a| a.id == o.id);
                    let offered: Vec<String> =
                        codes(&o.fields, "themes").into_iter().chain(codes(&o.fields, "dimensions")).collect();
                    let shared: Vec<String> = wanted.iter().filter(|w| offered.contains(w)).cloned().collect();
                    (answers || !shared.is_empty()).then(|| {
                        let score = usize::from(answers) * 100 + shared.len();
                        let c = Candidate {
                            id: o.id,
                            title: o.title.clone(),
                            owner: self.commune_name(&o.owner.to_string()),
                            status: o.status.clone(),
                            answers,
                            shared,
                        };
                        (score, c)
                    })
                })
                .collect();
            candidates.sort_by_key(|c| std::cmp::Reverse(c.0));
            board.push(RequestState {
                id: r.id,
                title: r.title.clone(),
                owner: self.commune_name(&r.owner.to_string()),
                status: r.status.clone(),
                scope: r.scope.clone(),
                theme,
                dimensions,
                created_ms: r.created_ms,
                first_offer_s,
                answered_s,
                candidates: candidates.into_iter().take(MAX_CANDIDATES).map(|(_, c)| c).collect(),
            });
        }
        board.sort_by_key(|r| std::cmp::Reverse(r.created_ms));
        let response_times = ResponseTimes {
            with_offer: to_offer.len() as u64,
            first_offer_median_s: median(to_offer),
            answered: to_answer.len() as u64,
            answer_median_s: median(to_answer),
        };

        // The timeline: creations and status moves of requests and offers.
        let mut timeline = Vec::new();
        for d in requests.iter().chain(&offers) {
            timeline.push(TimelineEvent {
                at_ms: d.created_ms,
                doc: d.id,
                kind: d.kind.clone(),
                title: d.title.clone(),
                what: "created".into(),
                by: self.commune_name(&d.owner.to_string()),
            });
            for e in &d.status_log {
                timeline.push(TimelineEvent {
                    at_ms: e.at_ms,
                    doc: d.id,
                    kind: d.kind.clone(),
                    title: d.title.clone(),
                    what: e.status.clone(),
                    by: self.commune_name(&e.by),
                });
            }
        }
        timeline.sort_by_key(|e| std::cmp::Reverse(e.at_ms));
        timeline.truncate(TIMELINE);

        let mut status_labels = BTreeMap::new();
        for (kind, lifecycle) in
            [("request", &passerelle_protocol::status::REQUEST), ("offer", &passerelle_protocol::status::OFFER)]
        {
            for st in lifecycle.stages {
                status_labels
                    .insert(format!("{kind}/{}", st.code), StatusLabel { fr: st.fr.to_owned(), en: st.en.to_owned() });
            }
        }

        Ok(NetworkState {
            network,
            generated_ms: now,
            members,
            partnerships,
            links,
            requests: board,
            requests_by_status: by_status,
            response_times,
            timeline,
            status_labels,
        })
    }
}
