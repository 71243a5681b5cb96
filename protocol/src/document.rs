//! Document content as Automerge: the edits a node makes and how content
//! reads back as JSON.
//!
//! The schema layer ([`crate::schema`]) turns what a user asked for into a
//! list of [`Edit`]s; [`commit`] applies them in one Automerge transaction
//! whose actor is the signing node, producing exactly one change to sign.
//! Representation choices made here are what let concurrent edits merge well:
//!
//! - multilingual text is a map `{ "original": "fr", "fr": Text, "ar": Text }`,
//!   each language its own Automerge text, edited by diff, so a translation
//!   never overwrites the original and concurrent typing merges;
//! - code sets (themes, dimensions) are maps `{ code: true }`, so concurrent
//!   additions both survive;
//! - the status is an append-only log (see [`crate::status`]).

use std::collections::BTreeMap;

use automerge::transaction::{CommitOptions, Transactable};
use automerge::{
    ActorId, Automerge, AutomergeError, Change, ObjId, ObjType, ROOT, ReadDoc, ScalarValue, ScalarValueRef, Value,
    ValueRef,
};

use crate::ids::NodeId;

/// Key of the status log in the root map.
pub const STATUS_LOG: &str = "status_log";
/// Key of the content schema version in the root map.
pub const SCHEMA_KEY: &str = "schema";
/// Key, inside a multilingual text map, of the original language.
pub const ORIGINAL: &str = "original";

/// A scalar value written to a document.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar {
    /// A string.
    Str(String),
    /// A boolean.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A decimal number.
    F64(f64),
    /// A time, milliseconds since the Unix epoch.
    Timestamp(i64),
}

impl From<Scalar> for ScalarValue {
    fn from(s: Scalar) -> Self {
        match s {
            Scalar::Str(v) => ScalarValue::Str(v.into()),
            Scalar::Bool(v) => ScalarValue::Boolean(v),
            Scalar::Int(v) => ScalarValue::Int(v),
            Scalar::F64(v) => ScalarValue::F64(v),
            Scalar::Timestamp(v) => ScalarValue::Timestamp(v),
        }
    }
}

/// One edit of a document's content.
#[derive(Debug, Clone, PartialEq)]
pub enum Edit {
    /// Sets a root field to a scalar.
    Put {
        /// Field name.
        field: String,
        /// Value.
        value: Scalar,
    },
    /// Removes a root field.
    Delete {
        /// Field name.
        field: String,
    },
    /// Sets one language of a multilingual text field (creating the field,
    /// with this language as the original, if absent).
    Text {
        /// Field name.
        field: String,
        /// Language code.
        lang: String,
        /// The whole new text; applied as a diff of the old one.
        text: String,
    },
    /// Adds and removes members of a code set.
    Members {
        /// Field name.
        field: String,
        /// Codes to add.
        add: Vec<String>,
        /// Codes to remove.
        remove: Vec<String>,
    },
    /// Sets a list of records (maps of scalars), position by position:
    /// changed fields are put, new records appended, extra ones removed.
    Records {
        /// Field name.
        field: String,
        /// The records.
        records: Vec<BTreeMap<String, Scalar>>,
    },
    /// Appends an entry to the status log.
    Status {
        /// The new status code.
        code: String,
        /// When, milliseconds since the Unix epoch.
        at_ms: i64,
        /// The commune that moved it (hex id).
        by: String,
        /// An optional note.
        note: Option<String>,
    },
    /// Sets a root field to a single Automerge text (not multilingual).
    PlainText {
        /// Field name.
        field: String,
        /// The whole new text.
        text: String,
    },
    /// Appends to a root Automerge text field.
    AppendText {
        /// Field name.
        field: String,
        /// Text to append.
        text: String,
    },
    /// Appends a scalar to a root list (created if absent).
    Push {
        /// Field name.
        field: String,
        /// Value.
        value: Scalar,
    },
}

/// Why an edit could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum DocError {
    /// Automerge refused an operation.
    #[error("automerge: {0}")]
    Automerge(#[from] AutomergeError),
    /// A field holds another kind of value than the edit expects.
    #[error("field {0:?} does not hold the expected kind of value")]
    Shape(String),
}

/// The Automerge actor id of a node: its public key, so every change can be
/// checked against the key that signed it.
pub fn actor_of(node: &NodeId) -> ActorId {
    ActorId::from(node.as_bytes().as_slice())
}

/// An empty document whose local changes are made by `node`.
pub fn new_document(node: &NodeId) -> Automerge {
    Automerge::new().with_actor(actor_of(node))
}

/// Applies `edits` in one transaction and returns the change made, or
/// `None` when the edits changed nothing.
///
/// # Errors
/// [`DocError`]; the document is then left as it was.
pub fn commit(doc: &mut Automerge, edits: &[Edit], message: &str, time_ms: i64) -> Result<Option<Change>, DocError> {
    let mut tx = doc.transaction();
    for edit in edits {
        if let Err(e) = apply(&mut tx, edit) {
            tx.rollback();
            return Err(e);
        }
    }
    if tx.pending_ops() == 0 {
        tx.rollback();
        return Ok(None);
    }
    let (hash, _) = tx.commit_with(CommitOptions::default().with_message(message).with_time(time_ms));
    Ok(hash.and_then(|_| doc.get_last_local_change()))
}

fn object<T: Transactable>(tx: &mut T, parent: &ObjId, key: &str, ty: ObjType) -> Result<ObjId, DocError> {
    match tx.get(parent, key)? {
        Some((Value::Object(found), id)) if found == ty => Ok(id),
        Some((Value::Object(_), _)) | Some((Value::Scalar(_), _)) => Err(DocError::Shape(key.to_owned())),
        None => Ok(tx.put_object(parent, key, ty)?),
    }
}

fn apply<T: Transactable>(tx: &mut T, edit: &Edit) -> Result<(), DocError> {
    match edit {
        Edit::Put { field, value } => {
            let same = matches!(tx.get(ROOT, field.as_str())?, Some((Value::Scalar(v), _)) if *v == ScalarValue::from(value.clone()));
            if !same {
                tx.put(ROOT, field.as_str(), value.clone())?;
            }
        }
        Edit::Delete { field } => {
            if tx.get(ROOT, field.as_str())?.is_some() {
                tx.delete(ROOT, field.as_str())?;
            }
        }
        Edit::Text { field, lang, text } => {
            let fresh = tx.get(ROOT, field.as_str())?.is_none();
            let map = object(tx, &ROOT, field, ObjType::Map)?;
            if fresh {
                tx.put(&map, ORIGINAL, lang.as_str())?;
            }
            let text_obj = object(tx, &map, lang, ObjType::Text)?;
            if tx.text(&text_obj)? != *text {
                tx.update_text(&text_obj, text)?;
            }
        }
        Edit::Members { field, add, remove } => {
            let map = object(tx, &ROOT, field, ObjType::Map)?;
            for code in add {
                if tx.get(&map, code.as_str())?.is_none() {
                    tx.put(&map, code.as_str(), true)?;
                }
            }
            for code in remove {
                if tx.get(&map, code.as_str())?.is_some() {
                    tx.delete(&map, code.as_str())?;
                }
            }
        }
        Edit::Records { field, records } => {
            let list = object(tx, &ROOT, field, ObjType::List)?;
            let existing = tx.length(&list);
            for (i, record) in records.iter().enumerate() {
                let item = if i < existing {
                    match tx.get(&list, i)? {
                        Some((Value::Object(ObjType::Map), id)) => id,
                        _ => return Err(DocError::Shape(field.clone())),
                    }
                } else {
                    tx.insert_object(&list, i, ObjType::Map)?
                };
                let old_keys: Vec<String> = tx.keys(&item).collect();
                for key in old_keys {
                    if !record.contains_key(&key) {
                        tx.delete(&item, key.as_str())?;
                    }
                }
                for (key, value) in record {
                    let same = matches!(tx.get(&item, key.as_str())?, Some((Value::Scalar(v), _)) if *v == ScalarValue::from(value.clone()));
                    if !same {
                        tx.put(&item, key.as_str(), value.clone())?;
                    }
                }
            }
            for i in (records.len()..existing).rev() {
                tx.delete(&list, i)?;
            }
        }
        Edit::Status { code, at_ms, by, note } => {
            let log = object(tx, &ROOT, STATUS_LOG, ObjType::List)?;
            let at = tx.length(&log);
            let entry = tx.insert_object(&log, at, ObjType::Map)?;
            tx.put(&entry, "status", code.as_str())?;
            tx.put(&entry, "at", ScalarValue::Timestamp(*at_ms))?;
            tx.put(&entry, "by", by.as_str())?;
            if let Some(note) = note {
                tx.put(&entry, "note", note.as_str())?;
            }
        }
        Edit::PlainText { field, text } => {
            let obj = object(tx, &ROOT, field, ObjType::Text)?;
            if tx.text(&obj)? != *text {
                tx.update_text(&obj, text)?;
            }
        }
        Edit::AppendText { field, text } => {
            let obj = object(tx, &ROOT, field, ObjType::Text)?;
            let len = tx.length(&obj);
            tx.splice_text(&obj, len, 0, text)?;
        }
        Edit::Push { field, value } => {
            let list = object(tx, &ROOT, field, ObjType::List)?;
            let len = tx.length(&list);
            tx.insert(&list, len, value.clone())?;
        }
    }
    Ok(())
}

/// One entry of a status log.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StatusEntry {
    /// The status moved to.
    pub status: String,
    /// When, milliseconds since the Unix epoch.
    pub at_ms: i64,
    /// The commune that moved it.
    pub by: String,
    /// Its note, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// The status log, in list order.
pub fn status_log(doc: &Automerge) -> Vec<StatusEntry> {
    let Ok(Some((Value::Object(ObjType::List), log))) = doc.get(ROOT, STATUS_LOG) else {
        return Vec::new();
    };
    doc.list_range(&log, ..)
        .filter_map(|item| {
            if item.value != ValueRef::Object(ObjType::Map) {
                return None;
            }
            let (mut status, mut at_ms, mut by, mut note) = (None, 0, String::new(), None);
            for field in doc.map_range(item.id(), ..) {
                match (&*field.key, field.value) {
                    ("status", ValueRef::Scalar(ScalarValueRef::Str(s))) => status = Some(s.into_owned()),
                    ("at", ValueRef::Scalar(ScalarValueRef::Timestamp(t) | ScalarValueRef::Int(t))) => at_ms = t,
                    ("by", ValueRef::Scalar(ScalarValueRef::Str(s))) => by = s.into_owned(),
                    ("note", ValueRef::Scalar(ScalarValueRef::Str(s))) => note = Some(s.into_owned()),
                    _ => {}
                }
            }
            Some(StatusEntry { status: status?, at_ms, by, note })
        })
        .collect()
}

/// The text of a root field without reading the rest of the document: a
/// plain string or Automerge text as is; a multilingual text in `lang` if
/// present, else in its original language, else in any (as
/// `schema::text_in` reads it from JSON).
pub fn field_text(doc: &Automerge, field: &str, lang: &str) -> Option<String> {
    match doc.get(ROOT, field).ok()?? {
        (Value::Scalar(s), _) => match s.as_ref() {
            ScalarValue::Str(v) => Some(v.to_string()),
            _ => None,
        },
        (Value::Object(ObjType::Text), id) => doc.text(&id).ok(),
        (Value::Object(ObjType::Map), map) => {
            let original = match doc.get(&map, ORIGINAL).ok()? {
                Some((Value::Scalar(s), _)) => s.as_str().map(str::to_owned),
                _ => None,
            };
            let text_of = |l: &str| match doc.get(&map, l) {
                Ok(Some((Value::Object(ObjType::Text), t))) => doc.text(&t).ok(),
                _ => None,
            };
            [Some(lang.to_owned()), original]
                .into_iter()
                .flatten()
                .find_map(|l| text_of(&l))
                .or_else(|| doc.keys(&map).filter(|k| k != ORIGINAL).find_map(|k| text_of(&k)))
        }
        _ => None,
    }
}

/// One root field as JSON (as [`to_json`] would show it), without reading
/// the rest of the document.
pub fn field_json(doc: &Automerge, field: &str) -> Option<serde_json::Value> {
    let (value, id) = doc.get(ROOT, field).ok()??;
    Some(value_json(doc, value, &id))
}

/// The whole content as JSON: maps as objects, lists as arrays, texts as
/// strings, timestamps as milliseconds. Unknown fields come along as they are.
pub fn to_json(doc: &Automerge) -> serde_json::Map<String, serde_json::Value> {
    match object_json(doc, &ROOT, ObjType::Map) {
        serde_json::Value::Object(map) => map,
        _ => serde_json::Map::new(),
    }
}

// Maps and lists are read in one pass each (`map_range`, `list_range`): a
// `get` per key seeks from the start of the object every time, and reading a
// document back after every write showed in profiles.
fn object_json(doc: &Automerge, obj: &ObjId, ty: ObjType) -> serde_json::Value {
    match ty {
        ObjType::Map | ObjType::Table => serde_json::Value::Object(
            doc.map_range(obj, ..)
                .map(|item| (item.key.to_string(), value_ref_json(doc, &item.value, || item.id())))
                .collect(),
        ),
        ObjType::List => serde_json::Value::Array(
            doc.list_range(obj, ..).map(|item| value_ref_json(doc, &item.value, || item.id())).collect(),
        ),
        ObjType::Text => serde_json::Value::String(doc.text(obj).unwrap_or_default()),
    }
}

fn value_json(doc: &Automerge, value: Value<'_>, id: &ObjId) -> serde_json::Value {
    match value {
        Value::Object(ty) => object_json(doc, id, ty),
        Value::Scalar(s) => scalar_json(&ScalarValueRef::from(s.into_owned())),
    }
}

fn value_ref_json(doc: &Automerge, value: &ValueRef<'_>, id: impl FnOnce() -> ObjId) -> serde_json::Value {
    match value {
        ValueRef::Object(ty) => object_json(doc, &id(), *ty),
        ValueRef::Scalar(s) => scalar_json(s),
    }
}

fn scalar_json(s: &ScalarValueRef<'_>) -> serde_json::Value {
    use serde_json::Value as J;
    match s {
        ScalarValueRef::Str(v) => J::String(v.to_string()),
        ScalarValueRef::Int(v) | ScalarValueRef::Timestamp(v) | ScalarValueRef::Counter(v) => J::from(*v),
        ScalarValueRef::Uint(v) => J::from(*v),
        ScalarValueRef::F64(v) => serde_json::Number::from_f64(*v).map(J::Number).unwrap_or(J::Null),
        ScalarValueRef::Boolean(v) => J::Bool(*v),
        ScalarValueRef::Bytes(b) => J::String(hex_string(b)),
        ScalarValueRef::Unknown { .. } | ScalarValueRef::Null => J::Null,
    }
}

fn hex_string(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Rebuilds a document from its changes, applied in one batch (one
/// `apply_changes` call per change is quadratic in history length).
///
/// # Errors
/// [`DocError`] when a change does not apply.
pub fn from_changes(node: &NodeId, changes: Vec<Change>) -> Result<Automerge, DocError> {
    let mut doc = new_document(node);
    doc.apply_changes(changes)?;
    Ok(doc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::SecretKey;

    fn node(seed: u8) -> NodeId {
        SecretKey::from_seed([seed; 32]).node_id()
    }

    #[test]
    fn edits_read_back_as_json() {
        let mut doc = new_document(&node(1));
        let edits = vec![
            Edit::Text { field: "title".into(), lang: "fr".into(), text: "Quartier propre".into() },
            Edit::Members { field: "themes".into(), add: vec!["THEME:waste".into()], remove: vec![] },
            Edit::Put { field: "deadline".into(), value: Scalar::Str("2026-12-31".into()) },
            Edit::Status { code: "open".into(), at_ms: 5, by: "c".into(), note: None },
        ];
        let change = commit(&mut doc, &edits, "create", 1_000).unwrap().unwrap();
        assert_eq!(change.message(), Some("create"));
        assert_eq!(change.timestamp(), 1_000);
        let json = serde_json::Value::Object(to_json(&doc));
        assert_eq!(json["title"]["fr"], "Quartier propre");
        assert_eq!(json["title"]["original"], "fr");
        assert_eq!(field_text(&doc, "title", "ar").as_deref(), Some("Quartier propre"));
        assert_eq!(field_text(&doc, "deadline", "fr").as_deref(), Some("2026-12-31"));
        assert_eq!(json["themes"]["THEME:waste"], true);
        assert_eq!(status_log(&doc)[0].status, "open");
        // The same edits again change nothing and make no change.
        let again = [edits[0].clone(), edits[1].clone(), edits[2].clone()];
        assert!(commit(&mut doc, &again, "noop", 2_000).unwrap().is_none());
    }

    #[test]
    fn a_translation_never_overwrites_the_original() {
        let mut doc = new_document(&node(1));
        commit(&mut doc, &[Edit::Text { field: "title".into(), lang: "fr".into(), text: "Propreté".into() }], "a", 1)
            .unwrap();
        commit(&mut doc, &[Edit::Text { field: "title".into(), lang: "ar".into(), text: "نظافة".into() }], "b", 2)
            .unwrap();
        let json = to_json(&doc);
        assert_eq!(json["title"]["fr"], "Propreté");
        assert_eq!(json["title"]["ar"], "نظافة");
        assert_eq!(json["title"]["original"], "fr");
    }

    #[test]
    fn concurrent_set_additions_both_survive() {
        let mut a = new_document(&node(1));
        commit(
            &mut a,
            &[Edit::Members { field: "themes".into(), add: vec!["THEME:waste".into()], remove: vec![] }],
            "a",
            1,
        )
        .unwrap();
        let mut b = a.fork().with_actor(actor_of(&node(2)));
        commit(
            &mut a,
            &[Edit::Members { field: "themes".into(), add: vec!["THEME:water".into()], remove: vec![] }],
            "a",
            2,
        )
        .unwrap();
        commit(
            &mut b,
            &[Edit::Members { field: "themes".into(), add: vec!["THEME:youth".into()], remove: vec![] }],
            "b",
            2,
        )
        .unwrap();
        a.merge(&mut b).unwrap();
        let themes = to_json(&a)["themes"].as_object().unwrap().len();
        assert_eq!(themes, 3);
    }

    /// What a reader sees with one `get` per key and index: the reference
    /// the one-pass reading must agree with.
    fn json_by_get(doc: &Automerge, obj: &ObjId, ty: ObjType) -> serde_json::Value {
        match ty {
            ObjType::Map | ObjType::Table => serde_json::Value::Object(
                doc.keys(obj)
                    .filter_map(|k| {
                        let (v, id) = doc.get(obj, k.as_str()).ok()??;
                        Some((k, by_get_value(doc, v, &id)))
                    })
                    .collect(),
            ),
            ObjType::List => serde_json::Value::Array(
                (0..doc.length(obj))
                    .filter_map(|i| doc.get(obj, i).ok().flatten().map(|(v, id)| by_get_value(doc, v, &id)))
                    .collect(),
            ),
            ObjType::Text => serde_json::Value::String(doc.text(obj).unwrap()),
        }
    }

    fn by_get_value(doc: &Automerge, v: Value<'_>, id: &ObjId) -> serde_json::Value {
        match v {
            Value::Object(ty) => json_by_get(doc, id, ty),
            Value::Scalar(s) => match s.as_ref() {
                ScalarValue::Counter(c) => serde_json::Value::from(i64::from(c)),
                _ => value_json(doc, Value::Scalar(s.clone()), id),
            },
        }
    }

    #[test]
    fn one_pass_reading_agrees_with_reading_key_by_key() {
        use automerge::transaction::Transactable;
        let mut a = new_document(&node(1));
        commit(
            &mut a,
            &[
                Edit::Text { field: "title".into(), lang: "fr".into(), text: "Eau".into() },
                Edit::Status { code: "open".into(), at_ms: 5, by: "c".into(), note: Some("n".into()) },
                Edit::Put { field: "deadline".into(), value: Scalar::Str("2026-12-31".into()) },
                Edit::Put { field: "gone".into(), value: Scalar::Int(1) },
            ],
            "a",
            1,
        )
        .unwrap();
        let mut tx = a.transaction();
        let list = tx.put_object(ROOT, "list", ObjType::List).unwrap();
        tx.insert(&list, 0, 1_i64).unwrap();
        let inner = tx.insert_object(&list, 1, ObjType::Map).unwrap();
        tx.put(&inner, "k", ScalarValue::Bytes(vec![1, 2])).unwrap();
        tx.put(ROOT, "count", ScalarValue::counter(3)).unwrap();
        // A multilingual text whose original language is missing.
        let texts = tx.put_object(ROOT, "texts", ObjType::Map).unwrap();
        let nl = tx.put_object(&texts, "nl", ObjType::Text).unwrap();
        tx.splice_text(&nl, 0, 0, "Water").unwrap();
        tx.commit();
        let mut b = a.fork().with_actor(actor_of(&node(2)));
        // Concurrent puts of one key (a conflict), a deletion, increments.
        commit(&mut a, &[Edit::Put { field: "deadline".into(), value: Scalar::Str("2027-01-01".into()) }], "a", 2)
            .unwrap();
        commit(&mut b, &[Edit::Put { field: "deadline".into(), value: Scalar::Str("2027-02-02".into()) }], "b", 2)
            .unwrap();
        commit(&mut b, &[Edit::Delete { field: "gone".into() }], "b", 3).unwrap();
        commit(&mut b, &[Edit::Status { code: "closed".into(), at_ms: 9, by: "d".into(), note: None }], "b", 4)
            .unwrap();
        let mut tx = b.transaction();
        tx.increment(ROOT, "count", 4).unwrap();
        tx.commit();
        a.merge(&mut b).unwrap();
        let one_pass = serde_json::Value::Object(to_json(&a));
        assert_eq!(one_pass, json_by_get(&a, &ROOT, ObjType::Map));
        assert_eq!(one_pass["count"], 7);
        // Read from the document or from its JSON, a title is the same.
        assert_eq!(field_text(&a, "texts", "").as_deref(), Some("Water"));
        assert_eq!(crate::schema::text_in(&one_pass["texts"], ""), field_text(&a, "texts", ""));
        assert_eq!(crate::schema::text_in(&one_pass["title"], "ar"), field_text(&a, "title", "ar"));
        assert!(one_pass.get("gone").is_none());
        let log = status_log(&a);
        assert_eq!(log.len(), 2);
        assert_eq!((log[0].status.as_str(), log[0].at_ms, log[0].note.as_deref()), ("open", 5, Some("n")));
        assert_eq!((log[1].status.as_str(), log[1].by.as_str()), ("closed", "d"));
    }
}
