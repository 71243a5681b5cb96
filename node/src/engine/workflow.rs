//! The request relay workflow of the seed: a commune asks its partner; the
//! partner, if the requester consented, relays the request to its national
//! network; offers from any commune reach the requester; the requester
//! accepts one, and every copy moves to `answered`.
//!
//! A request addressed to a partner stays in partnership scope, so the
//! partner relays it as a network-scope request of its own that names the
//! original (`relay_of`) and lets the requester write it too. An offer
//! answering a request lets that request's writers write it (to accept it).
//! Relays are recorded in the original's `relays`, acceptances in
//! `accepted_offers` and in status logs with a note.

use passerelle_protocol::ids::{CommuneId, DocId};
use serde_json::{Map, Value, json};

use super::worker::Worker;
use super::{EngineError, FieldError};
use crate::clock;
use crate::store::Store;
use crate::views::{CreateDoc, DocView, UpdateDoc};

/// Fields a relay copies from the original request.
const RELAYED_FIELDS: [&str; 8] =
    ["title", "description", "theme", "dimensions", "need_types", "formats", "deadline", "languages"];

fn invalid(field: &str, reason: impl Into<String>) -> EngineError {
    EngineError::Invalid(FieldError::Invalid { field: field.to_owned(), reason: reason.into() })
}

fn today() -> String {
    clock::utc(clock::now_ms())[..10].to_owned()
}

/// The relay documents a request's `relays` records name.
fn relays_of(fields: &Map<String, Value>) -> Vec<DocId> {
    fields
        .get("relays")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|r| r.get("doc").and_then(Value::as_str).and_then(|s| s.parse().ok()))
        .collect()
}

impl<S: Store> Worker<S> {
    /// After the requester changed fields a relay copies (deadline,
    /// description, ...), the same change goes to each relay it may write,
    /// so every copy of the request says the same.
    pub(crate) fn mirror_to_relays(&mut self, id: DocId, req: &UpdateDoc) -> Result<(), EngineError> {
        let fields: Map<String, Value> = req
            .fields
            .iter()
            .filter(|(k, _)| RELAYED_FIELDS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if fields.is_empty() {
            return Ok(());
        }
        let view = self.get(id, None)?;
        // Relays copy the request only while the requester's consent is in force.
        if view.kind != "request"
            || view.owner != self.commune
            || view.fields.get("consent_relay") != Some(&Value::Bool(true))
        {
            return Ok(());
        }
        for relay in relays_of(&view.fields) {
            if let Ok(r) = self.get(relay, None)
                && r.writers.contains(&self.commune)
            {
                let up = UpdateDoc { fields: fields.clone(), lang: req.lang.clone(), ..UpdateDoc::default() };
                self.update(relay, up)?;
            }
        }
        Ok(())
    }

    /// Writers a new document implies: a request's addressee (so the
    /// partner can record relays and follow the status), an offer's
    /// request writers (so the requester can accept it).
    pub(crate) fn implied_writers(
        &mut self,
        kind: &str,
        fields: &Map<String, Value>,
    ) -> Result<Vec<CommuneId>, EngineError> {
        match kind {
            "request" => Ok(fields
                .get("addressee")
                .and_then(Value::as_str)
                .and_then(|s| s.parse::<CommuneId>().ok())
                .into_iter()
                .collect()),
            "offer" => {
                let Some(request) = fields.get("request").and_then(Value::as_str) else { return Ok(Vec::new()) };
                let Ok(request) = request.parse::<DocId>() else { return Ok(Vec::new()) };
                match self.store.header(&request)? {
                    Some(h) if h.header.kind == passerelle_protocol::header::DocKind::Request => Ok(h.header.writers),
                    _ => Ok(Vec::new()),
                }
            }
            _ => Ok(Vec::new()),
        }
    }

    /// Relays a request this commune received to the network.
    pub(crate) fn relay_request(&mut self, id: DocId, note: Option<String>) -> Result<DocView, EngineError> {
        let original = self.get(id, None)?;
        if original.kind != "request" {
            return Err(invalid("id", format!("document {} is a {}, not a request", id.short(), original.kind)));
        }
        if original.owner == self.commune {
            return Err(EngineError::Conflict(
                "this is this commune's own request: create it with --scope network to address the network".into(),
            ));
        }
        if !original.writers.contains(&self.commune) {
            return Err(EngineError::Forbidden(
                "only the commune a request is addressed to relays it (it is not among its writers)".into(),
            ));
        }
        if original.fields.get("consent_relay") != Some(&Value::Bool(true)) {
            return Err(EngineError::Conflict(
                "the requester did not consent to relaying this request (consent_relay is not true)".into(),
            ));
        }
        let me = self.commune.to_string();
        let relays = original.fields.get("relays").and_then(Value::as_array).cloned().unwrap_or_default();
        if relays.iter().any(|r| r.get("by").and_then(Value::as_str) == Some(me.as_str())) {
            return Err(EngineError::Conflict("this commune already relayed this request".into()));
        }
        // The relay: a network request of this commune naming the original,
        // which the requester may write too (to accept offers on it).
        let mut fields = Map::new();
        for name in RELAYED_FIELDS {
            if let Some(v) = original.fields.get(name) {
                fields.insert(name.to_owned(), v.clone());
            }
        }
        fields.insert("relay_of".into(), json!(id.to_string()));
        fields.insert("consent_relay".into(), json!(false));
        let relay = self.create(CreateDoc {
            kind: "request".into(),
            fields,
            lang: None,
            scope: Some("network".into()),
            writers: vec![original.owner],
            status: Some("open".into()),
        })?;
        // Recorded on the original: who widened it, when, as which document.
        let mut record = json!({"by": me, "at": today(), "doc": relay.id.to_string()});
        if let Some(n) = &note {
            record["note"] = json!(n);
        }
        let mut all = relays;
        all.push(record);
        let mut update = Map::new();
        update.insert("relays".into(), Value::Array(all));
        self.update(id, UpdateDoc { fields: update, ..UpdateDoc::default() })?;
        tracing::info!(request = %id.short(), relay = %relay.id.short(), "request relayed to the network");
        Ok(relay)
    }

    /// Accepts an offer answering one of this commune's requests (directly
    /// or through a relay): the offer becomes accepted, the request and its
    /// relays answered.
    pub(crate) fn accept_offer(&mut self, request: DocId, offer: DocId) -> Result<DocView, EngineError> {
        let req = self.get(request, None)?;
        if req.kind != "request" {
            return Err(invalid("id", format!("document {} is not a request", request.short())));
        }
        if req.owner != self.commune {
            return Err(EngineError::Forbidden("only the requester accepts offers on its request".into()));
        }
        let off = self.get(offer, None)?;
        if off.kind != "offer" {
            return Err(invalid("offer", format!("document {} is not an offer", offer.short())));
        }
        let relays = relays_of(&req.fields);
        let answers = off.fields.get("request").and_then(Value::as_str).and_then(|s| s.parse::<DocId>().ok());
        if !answers.is_some_and(|a| a == request || relays.contains(&a)) {
            return Err(invalid("offer", "this offer does not answer the request nor one of its relays"));
        }
        let note = format!("offre {} acceptée", offer.short());
        if off.writers.contains(&self.commune) && off.status.as_deref() != Some("accepted") {
            let up = UpdateDoc { status: Some("accepted".into()), note: Some(note.clone()), ..UpdateDoc::default() };
            self.update(offer, up)?;
        }
        let accept = |current: &Map<String, Value>| {
            let mut list = current.get("accepted_offers").and_then(Value::as_array).cloned().unwrap_or_default();
            if !list.contains(&json!(offer.to_string())) {
                list.push(json!(offer.to_string()));
            }
            let mut fields = Map::new();
            fields.insert("accepted_offers".into(), Value::Array(list));
            fields
        };
        for relay in relays {
            let Ok(view) = self.get(relay, None) else { continue };
            if view.writers.contains(&self.commune) {
                let status = (view.status.as_deref() != Some("answered")).then(|| "answered".to_owned());
                let up = UpdateDoc {
                    fields: accept(&view.fields),
                    note: status.as_ref().map(|_| note.clone()),
                    status,
                    ..UpdateDoc::default()
                };
                self.update(relay, up)?;
            }
        }
        let status = (req.status.as_deref() != Some("answered")).then(|| "answered".to_owned());
        let up = UpdateDoc {
            fields: accept(&req.fields),
            note: status.as_ref().map(|_| note.clone()),
            status,
            ..UpdateDoc::default()
        };
        let (view, _) = self.update(request, up)?;
        tracing::info!(request = %request.short(), offer = %offer.short(), "offer accepted");
        Ok(view)
    }
}
