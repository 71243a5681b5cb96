//! Local document work: create, update, read, list, history, counts.

use passerelle_protocol::automerge::{Automerge, Change};
use passerelle_protocol::document::{self, Edit, SCHEMA_KEY, Scalar};
use passerelle_protocol::envelope::ChangeEnvelope;
use passerelle_protocol::header::{DocHeader, DocKind, MAX_WRITERS, Scope, SignedHeader};
use passerelle_protocol::ids::DocId;
use passerelle_protocol::keys::SecretKey;
use passerelle_protocol::schema::{self, CONTENT_SCHEMA, FieldError, InputContext, KindSchema};

use super::worker::Worker;
use super::{Counts, EngineError, ListFilter};
use crate::clock;
use crate::store::{DocMeta, Snapshot, Store, StoredChange, WriteOp};
use crate::views::{CreateDoc, DocSummary, DocView, HistoryEntry, UpdateDoc};
use passerelle_protocol::replica::Announcement;
use passerelle_protocol::sync::audience::Audience;

/// A snapshot is saved every this many changes, so loading a long history
/// replays at most this many changes after the snapshot.
pub const SNAPSHOT_EVERY: u64 = 64;

fn invalid(field: &str, reason: impl Into<String>) -> EngineError {
    EngineError::Invalid(FieldError::Invalid { field: field.to_owned(), reason: reason.into() })
}

/// The status and title a document's metadata shows.
pub(crate) fn derived(kind: &DocKind, doc: &Automerge) -> (Option<String>, Option<String>) {
    let Some(schema) = schema::schema_of(kind) else {
        return (None, None);
    };
    let status = schema.lifecycle.and_then(|lc| {
        let log = document::status_log(doc);
        lc.current(log.iter().map(|e| e.status.as_str())).map(str::to_owned)
    });
    (status, document::field_text(doc, schema.title_field, ""))
}

/// A document read back once after a local write: its content and status
/// log feed both the metadata and the view answered (reading it twice
/// showed in profiles of local writes).
struct ReadBack {
    content: serde_json::Map<String, serde_json::Value>,
    status_log: Vec<document::StatusEntry>,
}

impl ReadBack {
    fn of(doc: &Automerge) -> Self {
        Self { content: document::to_json(doc), status_log: document::status_log(doc) }
    }

    /// What [`derived`] reads from the document (the title read the same
    /// way as on ingest and repair: one field, whatever its content).
    fn derived(&self, kind: &DocKind, doc: &Automerge) -> (Option<String>, Option<String>) {
        let Some(schema) = schema::schema_of(kind) else {
            return (None, None);
        };
        let status = schema
            .lifecycle
            .and_then(|lc| lc.current(self.status_log.iter().map(|e| e.status.as_str())).map(str::to_owned));
        (status, document::field_text(doc, schema.title_field, ""))
    }
}

/// Metadata after `added` more changes at time `time_ms`.
pub(crate) fn refreshed_meta(meta: &DocMeta, header: &DocHeader, doc: &Automerge, added: u64, time_ms: i64) -> DocMeta {
    meta_with(meta, doc, derived(&header.kind, doc), added, time_ms)
}

fn meta_with(
    meta: &DocMeta,
    doc: &Automerge,
    (status, title): (Option<String>, Option<String>),
    added: u64,
    time_ms: i64,
) -> DocMeta {
    DocMeta {
        changes: meta.changes + added,
        updated_ms: meta.updated_ms.max(time_ms),
        stored_ms: crate::clock::now_ms(),
        heads: doc.get_heads().iter().map(|h| h.to_string()).collect(),
        status,
        title,
        ..meta.clone()
    }
}

/// Snapshot to save with a write, when the log has grown enough since the last.
pub(crate) fn snapshot_due(id: DocId, meta: &mut DocMeta, doc: &Automerge) -> Option<WriteOp> {
    if meta.changes - meta.snapshot_changes < SNAPSHOT_EVERY {
        return None;
    }
    meta.snapshot_changes = meta.changes;
    Some(WriteOp::Snapshot(id, Snapshot { changes: meta.changes, bytes: doc.save() }))
}

fn summary_message(action: &str, edits: &[Edit]) -> String {
    let mut fields: Vec<String> = Vec::new();
    for edit in edits {
        let name = match edit {
            Edit::Put { field, .. } if field == SCHEMA_KEY => continue,
            Edit::Status { code, .. } => format!("status→{code}"),
            Edit::Text { field, lang, .. } => format!("{field}[{lang}]"),
            Edit::Put { field, .. }
            | Edit::Delete { field }
            | Edit::Members { field, .. }
            | Edit::Records { field, .. }
            | Edit::PlainText { field, .. }
            | Edit::AppendText { field, .. }
            | Edit::Push { field, .. } => field.clone(),
        };
        if !fields.contains(&name) {
            fields.push(name);
        }
    }
    format!("{action}: {}", fields.join(", "))
}

/// The write of a change made here, signed by this node.
fn change_op(key: &SecretKey, doc: DocId, seq: u64, change: &Change, now: i64) -> WriteOp {
    WriteOp::Change {
        doc,
        seq,
        change: StoredChange { envelope: ChangeEnvelope::sign(doc, change, key), received_ms: now, from: None },
        hash: change.hash().0,
    }
}

/// What to push to peers for a local change once it is durable.
fn announcement(op: &WriteOp, new_doc: Option<SignedHeader>) -> Announcement {
    let changes = match op {
        WriteOp::Change { change, .. } => vec![change.envelope.clone()],
        _ => Vec::new(),
    };
    Announcement { from: None, new_docs: new_doc.into_iter().collect(), changes }
}

fn view(id: DocId, header: &SignedHeader, meta: &DocMeta, doc: &Automerge, lang: Option<&str>) -> DocView {
    view_of(id, header, meta, ReadBack::of(doc), lang)
}

fn view_of(id: DocId, header: &SignedHeader, meta: &DocMeta, read: ReadBack, lang: Option<&str>) -> DocView {
    let h = &header.header;
    let ReadBack { content, status_log } = read;
    let schema = schema::schema_of(&h.kind);
    let (fields, title) = match schema {
        Some(s) => (s.present(&content), s.title(&content, lang.unwrap_or(""))),
        None => (content, None),
    };
    DocView {
        id,
        kind: h.kind.to_string(),
        owner: h.owner,
        writers: h.writers.clone(),
        scope: h.scope.to_string(),
        schema: h.schema,
        created_ms: h.created_ms as i64,
        updated_ms: meta.updated_ms,
        status: meta.status.clone(),
        title,
        fields,
        status_log,
        heads: meta.heads.clone(),
        changes: meta.changes,
    }
}

impl<S: Store> Worker<S> {
    /// Who may receive a stored document: from its scope, and for a
    /// partnership document from its header's owner and writers.
    pub(crate) fn audience_of(&self, meta: &DocMeta) -> Result<Audience, EngineError> {
        Ok(match meta.scope.parse::<Scope>() {
            Ok(Scope::Network) => Audience::Network,
            Ok(Scope::Partnership) => match self.store.header(&meta.id) {
                Ok(Some(h)) => Audience::of(&h.header),
                // A damaged header: shared with nobody until `repair`.
                Ok(None) | Err(crate::store::StoreError::Corrupt { .. }) => Audience::Nobody,
                Err(e) => return Err(e.into()),
            },
            _ => Audience::Nobody,
        })
    }

    fn schema_for_create(kind: &str) -> Result<(DocKind, &'static KindSchema), EngineError> {
        let kind: DocKind =
            kind.parse().map_err(|e: passerelle_protocol::header::UnknownName| invalid("kind", e.to_string()))?;
        let schema = schema::schema_of(&kind).expect("every known kind has a schema");
        Ok((kind, schema))
    }

    pub(crate) fn create(&mut self, req: CreateDoc) -> Result<DocView, EngineError> {
        let (kind, schema) = Self::schema_for_create(&req.kind)?;
        if let Some(role) = self.replica.roster().and_then(|r| r.role(&self.commune))
            && !role.may_own(&kind)
        {
            return Err(EngineError::Forbidden(format!(
                "this commune's role in the network is {role}: it may not create a {kind} (DOMAIN roles)"
            )));
        }
        let scope = match &req.scope {
            Some(s) => s.parse::<Scope>().map_err(|e| invalid("scope", e.to_string()))?,
            None => schema.default_scope.clone(),
        };
        let mut fields = req.fields.clone();
        let partners = self.replica.roster().map_or_else(Vec::new, |r| r.partners_of(&self.commune));
        if scope == Scope::Partnership && kind == DocKind::Request && req.writers.is_empty() {
            match (fields.get("addressee"), partners.as_slice()) {
                // One partner: the request is for it, and its header says so (a
                // partner made later does not receive it).
                (None, [only]) => {
                    fields.insert("addressee".into(), only.to_string().into());
                }
                (None, [_, _, ..]) => {
                    return Err(invalid(
                        "addressee",
                        format!(
                            "this commune has {} partners and a partnership request goes to the one it names: \
                             set the addressee (--field addressee=COMMUNE), or use --scope network",
                            partners.len()
                        ),
                    ));
                }
                _ => {}
            }
        }
        let req = CreateDoc { fields, ..req };
        let lang = req.lang.clone().unwrap_or_else(|| self.language.clone());
        let now = clock::now_ms();
        let mut edits = vec![Edit::Put { field: SCHEMA_KEY.into(), value: Scalar::Int(CONTENT_SCHEMA.into()) }];
        edits.extend(schema.edits(&req.fields, &InputContext { lang: &lang, current: None })?);
        match (schema.lifecycle, &req.status) {
            (Some(lc), status) => {
                let status = status.as_deref().unwrap_or(lc.initial);
                lc.check_move(None, status).map_err(FieldError::from)?;
                edits.push(Edit::Status {
                    code: status.to_owned(),
                    at_ms: now,
                    by: self.commune.to_string(),
                    note: None,
                });
            }
            (None, Some(_)) => return Err(invalid("status", format!("a {kind} has no status"))),
            (None, None) => {}
        }
        let mut writers = vec![self.commune];
        let implied = self.implied_writers(kind.as_str(), &req.fields)?;
        for w in req.writers.iter().chain(&implied) {
            if !writers.contains(w) {
                writers.push(*w);
            }
        }
        if writers.len() > MAX_WRITERS {
            return Err(invalid("writers", format!("at most {MAX_WRITERS} writers")));
        }
        let header = DocHeader {
            kind: kind.clone(),
            schema: CONTENT_SCHEMA,
            owner: self.commune,
            writers,
            scope,
            created_ms: now as u64,
            nonce: clock::random_bytes(),
        };
        let signed = SignedHeader::sign(header, &self.node_key, self.certificate.clone());
        let id = signed.id();
        let mut doc = document::new_document(&self.node_id);
        let change = document::commit(&mut doc, &edits, &summary_message(&format!("create {kind}"), &edits), now)
            .map_err(|e| invalid("fields", e.to_string()))?
            .expect("a new document always changes: it records its schema");
        let base = DocMeta::new(id, &signed.header);
        let read = ReadBack::of(&doc);
        let meta = meta_with(&base, &doc, read.derived(&kind, &doc), 1, now);
        let op = change_op(&self.node_key, id, 0, &change, now);
        self.metrics.changes_local += 1;
        let announced = announcement(&op, Some(signed.clone()));
        let ops = vec![WriteOp::Header(signed.clone()), op, WriteOp::Meta(meta.clone())];
        self.store.write(ops)?;
        self.replica.doc_changed(meta.id, Audience::of(&signed.header), meta.head_bytes(), meta.stored_ms);
        self.announcements.push(announced);
        let loaded = self.cache.insert(id, signed, meta, doc);
        tracing::info!(doc = %id.short(), %kind, "document created");
        Ok(view_of(id, &loaded.header, &loaded.meta, read, Some(&lang)))
    }

    /// Returns the new view and whether anything was written.
    pub(crate) fn update(&mut self, id: DocId, req: UpdateDoc) -> Result<(DocView, bool), EngineError> {
        let commune = self.commune;
        let node_id = self.node_id;
        let lang = req.lang.clone().unwrap_or_else(|| self.language.clone());
        let loaded = self.cache.get_or_load(&self.store, &node_id, &id)?.ok_or(EngineError::NotFound(id))?;
        if !loaded.header.header.is_writer(&commune) {
            return Err(EngineError::NotAWriter(id));
        }
        let kind = loaded.header.header.kind.clone();
        if loaded.header.header.owner != commune
            && let Some(field) = schema::owner_only_fields(&kind).iter().find(|f| req.fields.contains_key(**f))
        {
            return Err(EngineError::Forbidden(format!(
                "only the commune that owns this {kind} may set {field} (consent to relay is the requester's)"
            )));
        }
        let schema =
            schema::schema_of(&kind).ok_or_else(|| EngineError::Invalid(FieldError::UnknownKind(kind.to_string())))?;
        // Only the fields being set are read back: set updates diff against them.
        let current: serde_json::Map<String, serde_json::Value> =
            req.fields.keys().filter_map(|k| document::field_json(&loaded.doc, k).map(|v| (k.clone(), v))).collect();
        let mut edits = schema.edits(&req.fields, &InputContext { lang: &lang, current: Some(&current) })?;
        let now = clock::now_ms();
        match (schema.lifecycle, &req.status) {
            (Some(lc), Some(to)) => {
                let current = loaded.meta.status.clone();
                if current.as_deref() != Some(to.as_str()) {
                    lc.check_move(current.as_deref(), to).map_err(FieldError::from)?;
                    edits.push(Edit::Status {
                        code: to.clone(),
                        at_ms: now,
                        by: commune.to_string(),
                        note: req.note.clone(),
                    });
                } else if req.note.is_some() {
                    return Err(invalid(
                        "note",
                        format!("the status is already {to:?}; a note goes with a status change"),
                    ));
                }
            }
            (None, Some(_)) => return Err(invalid("status", format!("a {kind} has no status"))),
            (_, None) if req.note.is_some() => {
                return Err(invalid("note", "a note goes with a status change"));
            }
            _ => {}
        }
        let Some(change) = document::commit(&mut loaded.doc, &edits, &summary_message("update", &edits), now)
            .map_err(|e| invalid("fields", e.to_string()))?
        else {
            return Ok((view(id, &loaded.header, &loaded.meta, &loaded.doc, Some(&lang)), false));
        };
        let seq = loaded.meta.changes;
        let read = ReadBack::of(&loaded.doc);
        let mut meta = meta_with(&loaded.meta, &loaded.doc, read.derived(&kind, &loaded.doc), 1, now);
        let snapshot = snapshot_due(id, &mut meta, &loaded.doc);
        let op = change_op(&self.node_key, id, seq, &change, now);
        self.metrics.changes_local += 1;
        let announced = announcement(&op, None);
        let mut ops = vec![op, WriteOp::Meta(meta.clone())];
        ops.extend(snapshot);
        if let Err(e) = self.store.write(ops) {
            self.cache.evict(&id);
            return Err(e.into());
        }
        self.replica.doc_changed(meta.id, Audience::of(&loaded.header.header), meta.head_bytes(), meta.stored_ms);
        self.announcements.push(announced);
        loaded.meta = meta;
        tracing::info!(doc = %id.short(), seq, "document updated");
        Ok((view_of(id, &loaded.header, &loaded.meta, read, Some(&lang)), true))
    }

    pub(crate) fn get(&mut self, id: DocId, lang: Option<String>) -> Result<DocView, EngineError> {
        let node_id = self.node_id;
        let loaded = self.cache.get_or_load(&self.store, &node_id, &id)?.ok_or(EngineError::NotFound(id))?;
        Ok(view(id, &loaded.header, &loaded.meta, &loaded.doc, lang.as_deref()))
    }

    pub(crate) fn list(&self, filter: &ListFilter) -> Result<Vec<DocSummary>, EngineError> {
        let mut out: Vec<DocSummary> = self
            .store
            .metas()?
            .into_iter()
            .filter(|m| filter.kind.as_ref().is_none_or(|k| &m.kind == k))
            .filter(|m| filter.status.as_ref().is_none_or(|s| m.status.as_ref() == Some(s)))
            .filter(|m| filter.owner.as_ref().is_none_or(|o| &m.owner == o))
            .map(|m| DocSummary {
                id: m.id,
                kind: m.kind,
                owner: m.owner,
                scope: m.scope,
                title: m.title,
                status: m.status,
                updated_ms: m.updated_ms,
                changes: m.changes,
                heads: m.heads,
            })
            .collect();
        out.sort_by(|a, b| b.updated_ms.cmp(&a.updated_ms).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    pub(crate) fn history(&self, id: DocId) -> Result<Vec<HistoryEntry>, EngineError> {
        if self.store.header(&id)?.is_none() {
            return Err(EngineError::NotFound(id));
        }
        let mut out = Vec::new();
        for (seq, record) in self.store.changes(&id, 0)? {
            let damaged = |reason: String| EngineError::Damaged { doc: id, reason: format!("change #{seq}: {reason}") };
            let stored = record.map_err(|e| damaged(e.to_string()))?;
            let change = Change::from_bytes(stored.envelope.change.clone()).map_err(|e| damaged(e.to_string()))?;
            out.push(HistoryEntry {
                seq,
                hash: change.hash().to_string(),
                author_node: stored.envelope.author,
                author_commune: self.replica.book().commune_of(&stored.envelope.author),
                time_ms: change.timestamp(),
                message: change.message().map(str::to_owned),
                ops: change.len(),
                deps: change.deps().iter().map(|d| d.to_string()).collect(),
                received_ms: stored.received_ms,
                received_from: stored.from,
            });
        }
        Ok(out)
    }

    pub(crate) fn counts(&self) -> Result<Counts, EngineError> {
        super::counts_of(&self.store)
    }

    /// Creates this commune's profile the first time the node starts.
    pub(crate) fn ensure_profile(&mut self, name: &str, country: &str) -> Result<(), EngineError> {
        let filter = ListFilter { kind: Some("profile".into()), owner: Some(self.commune.to_string()), status: None };
        if !self.list(&filter)?.is_empty() {
            return Ok(());
        }
        let mut fields = serde_json::Map::new();
        fields.insert("name".into(), name.into());
        fields.insert("country".into(), country.into());
        self.create(CreateDoc { kind: "profile".into(), fields, ..CreateDoc::default() })?;
        self.store.flush()?;
        Ok(())
    }
}
