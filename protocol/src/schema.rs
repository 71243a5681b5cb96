//! Document schemas: which fields each kind holds, how user input is checked
//! and turned into [`Edit`]s, and how content is presented back.
//!
//! Input and output are JSON objects of fields, the form the node's API and
//! the CLI speak. Validation happens here, before anything is written, and a
//! refusal names the field and the reason.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

use crate::codes::{self, CodeList};
use crate::document::{Edit, ORIGINAL, Scalar};
use crate::header::{DocKind, Scope};
use crate::ids::{CommuneId, DocId};
use crate::status::{self, Lifecycle};

pub use crate::header::CONTENT_SCHEMA;
/// Longest text accepted in one language of a text field, in characters.
pub const MAX_TEXT_CHARS: usize = 20_000;
/// Longest plain string field, in characters.
pub const MAX_PLAIN_CHARS: usize = 500;
/// Most records in one list field.
pub const MAX_RECORDS: usize = 200;

/// The type of a field.
#[derive(Debug)]
pub enum FieldType {
    /// Multilingual text: a string (in the request's language) or `{lang: text}`.
    Text,
    /// A short plain string.
    Plain,
    /// An e-mail address.
    Email,
    /// One code of a list.
    Code(&'static CodeList),
    /// A set of codes of a list (an array in JSON).
    Codes(&'static CodeList),
    /// A calendar date, `YYYY-MM-DD`.
    Date,
    /// True or false.
    Bool,
    /// A whole number within bounds.
    Int(i64, i64),
    /// A decimal number.
    Number,
    /// An ISO 3166-1 alpha-2 country code.
    Country,
    /// A commune id.
    Commune,
    /// A document id.
    DocRef,
    /// A set of document ids.
    DocRefs,
    /// A list of records with the given fields (scalar fields only).
    Records(&'static [FieldSpec]),
}

/// One field of a schema.
#[derive(Debug)]
pub struct FieldSpec {
    /// The field's name in the document and the API.
    pub name: &'static str,
    /// Its type.
    pub ty: FieldType,
    /// Whether a new document must have it.
    pub required: bool,
}

const fn f(name: &'static str, ty: FieldType) -> FieldSpec {
    FieldSpec { name, ty, required: false }
}

const fn req(name: &'static str, ty: FieldType) -> FieldSpec {
    FieldSpec { name, ty, required: true }
}

/// The schema of one kind of document.
#[derive(Debug)]
pub struct KindSchema {
    /// The kind.
    pub kind: DocKind,
    /// Its fields.
    pub fields: &'static [FieldSpec],
    /// Its statuses, if it has any.
    pub lifecycle: Option<&'static Lifecycle>,
    /// The field shown as the document's title in lists.
    pub title_field: &'static str,
    /// Where new documents of this kind travel unless told otherwise.
    pub default_scope: Scope,
}

static CONTACT: [FieldSpec; 3] =
    [req("name", FieldType::Plain), f("role", FieldType::Plain), f("email", FieldType::Email)];
static INDICATOR: [FieldSpec; 6] = [
    req("name", FieldType::Plain),
    f("unit", FieldType::Plain),
    f("baseline", FieldType::Number),
    f("target", FieldType::Number),
    f("current", FieldType::Number),
    f("measured_at", FieldType::Date),
];
static MILESTONE: [FieldSpec; 3] =
    [req("title", FieldType::Plain), f("due", FieldType::Date), f("done", FieldType::Bool)];
static COMMITMENT: [FieldSpec; 2] = [req("commune", FieldType::Commune), f("commitment", FieldType::Plain)];
static RELAY: [FieldSpec; 4] = [
    req("by", FieldType::Commune),
    req("at", FieldType::Date),
    f("note", FieldType::Plain),
    f("doc", FieldType::DocRef),
];

static PROFILE_FIELDS: [FieldSpec; 14] = [
    req("name", FieldType::Plain),
    req("country", FieldType::Country),
    f("region", FieldType::Plain),
    f("languages", FieldType::Codes(&codes::LANGUAGES)),
    f("contacts", FieldType::Records(&CONTACT)),
    f("spiral_territory", FieldType::Bool),
    f("spiral_cycle", FieldType::Int(0, 3)),
    f("spiral_phase", FieldType::Int(1, 8)),
    f("pcs_active", FieldType::Bool),
    f("pcs_period", FieldType::Plain),
    f("pcs_axes", FieldType::Codes(&codes::PCS_AXES)),
    f("competences", FieldType::Text),
    f("support_needs", FieldType::Text),
    f("connectivity", FieldType::Code(&codes::CONNECTIVITY)),
];

static PROJECT_FIELDS: [FieldSpec; 18] = [
    req("title", FieldType::Text),
    f("summary", FieldType::Text),
    f("project_kind", FieldType::Code(&codes::PROJECT_KINDS)),
    f("spiral_cycle", FieldType::Int(0, 3)),
    f("spiral_phase", FieldType::Int(1, 8)),
    f("dimensions", FieldType::Codes(&codes::DIMENSIONS)),
    f("themes", FieldType::Codes(&codes::THEMES)),
    f("objectives", FieldType::Text),
    f("target_groups", FieldType::Codes(&codes::TARGET_GROUPS)),
    f("indicators", FieldType::Records(&INDICATOR)),
    f("partners", FieldType::Records(&COMMITMENT)),
    f("budget_eur", FieldType::Number),
    f("budget_mad", FieldType::Number),
    f("milestones", FieldType::Records(&MILESTONE)),
    f("evaluation_before", FieldType::Text),
    f("evaluation_after", FieldType::Text),
    f("start", FieldType::Date),
    f("end", FieldType::Date),
];

static REQUEST_FIELDS: [FieldSpec; 14] = [
    req("title", FieldType::Text),
    f("description", FieldType::Text),
    f("theme", FieldType::Code(&codes::THEMES)),
    f("dimensions", FieldType::Codes(&codes::DIMENSIONS)),
    f("need_types", FieldType::Codes(&codes::NEED_TYPES)),
    f("formats", FieldType::Codes(&codes::FORMATS)),
    f("deadline", FieldType::Date),
    f("languages", FieldType::Codes(&codes::LANGUAGES)),
    f("addressee", FieldType::Commune),
    f("consent_relay", FieldType::Bool),
    f("relays", FieldType::Records(&RELAY)),
    f("accepted_offers", FieldType::DocRefs),
    f("project", FieldType::DocRef),
    f("relay_of", FieldType::DocRef),
];

static OFFER_FIELDS: [FieldSpec; 9] = [
    req("title", FieldType::Text),
    f("description", FieldType::Text),
    f("request", FieldType::DocRef),
    f("themes", FieldType::Codes(&codes::THEMES)),
    f("dimensions", FieldType::Codes(&codes::DIMENSIONS)),
    f("resource_types", FieldType::Codes(&codes::RESOURCE_TYPES)),
    f("availability", FieldType::Plain),
    f("expert", FieldType::Plain),
    f("conditions", FieldType::Text),
];

static PRACTICE_FIELDS: [FieldSpec; 12] = [
    req("title", FieldType::Text),
    f("context", FieldType::Text),
    f("problem", FieldType::Text),
    f("steps", FieldType::Text),
    f("actors", FieldType::Text),
    f("results", FieldType::Text),
    f("indicators", FieldType::Records(&INDICATOR)),
    f("resources", FieldType::Text),
    f("transfer_conditions", FieldType::Text),
    f("lessons", FieldType::Text),
    f("themes", FieldType::Codes(&codes::THEMES)),
    f("dimensions", FieldType::Codes(&codes::DIMENSIONS)),
];

static FOLLOWUP_FIELDS: [FieldSpec; 7] = [
    req("target", FieldType::DocRef),
    f("note", FieldType::Text),
    f("flags", FieldType::Codes(&codes::FOLLOWUP_FLAGS)),
    f("themes", FieldType::Codes(&codes::THEMES)),
    f("dimensions", FieldType::Codes(&codes::DIMENSIONS)),
    f("next_step", FieldType::Plain),
    f("due", FieldType::Date),
];

static SCHEMAS: [KindSchema; 6] = [
    KindSchema {
        kind: DocKind::Profile,
        fields: &PROFILE_FIELDS,
        lifecycle: None,
        title_field: "name",
        default_scope: Scope::Network,
    },
    KindSchema {
        kind: DocKind::Project,
        fields: &PROJECT_FIELDS,
        lifecycle: Some(&status::PROJECT),
        title_field: "title",
        default_scope: Scope::Network,
    },
    KindSchema {
        kind: DocKind::Request,
        fields: &REQUEST_FIELDS,
        lifecycle: Some(&status::REQUEST),
        title_field: "title",
        default_scope: Scope::Partnership,
    },
    KindSchema {
        kind: DocKind::Offer,
        fields: &OFFER_FIELDS,
        lifecycle: Some(&status::OFFER),
        title_field: "title",
        default_scope: Scope::Network,
    },
    KindSchema {
        kind: DocKind::Practice,
        fields: &PRACTICE_FIELDS,
        lifecycle: Some(&status::PRACTICE),
        title_field: "title",
        default_scope: Scope::Network,
    },
    KindSchema {
        kind: DocKind::Followup,
        fields: &FOLLOWUP_FIELDS,
        lifecycle: Some(&status::FOLLOWUP),
        title_field: "next_step",
        default_scope: Scope::Network,
    },
];

/// Root fields of a kind that only the document's owner may set or remove,
/// whoever else may write it: a request's consent to relay is the
/// requester's (its addressee writes the request to record relays).
pub fn owner_only_fields(kind: &DocKind) -> &'static [&'static str] {
    match kind {
        DocKind::Request => &["consent_relay"],
        _ => &[],
    }
}

/// The schema of a kind this release knows.
pub fn schema_of(kind: &DocKind) -> Option<&'static KindSchema> {
    SCHEMAS.iter().find(|s| &s.kind == kind)
}

/// Why input is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FieldError {
    /// The field is not part of the kind's schema.
    #[error("unknown field {field:?} for a {kind}; known fields: {known}")]
    Unknown {
        /// The kind.
        kind: String,
        /// The field.
        field: String,
        /// The schema's fields.
        known: String,
    },
    /// A required field is missing or empty.
    #[error("{field} is required and must not be empty")]
    Missing {
        /// The field.
        field: String,
    },
    /// The value is not acceptable.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The field.
        field: String,
        /// Why.
        reason: String,
    },
    /// The status move is refused.
    #[error(transparent)]
    Status(#[from] status::StatusError),
    /// The kind cannot be written by this release.
    #[error("documents of kind {0:?} cannot be written by this release")]
    UnknownKind(String),
}

fn invalid(field: &str, reason: impl Into<String>) -> FieldError {
    FieldError::Invalid { field: field.to_owned(), reason: reason.into() }
}

/// The context input is checked in.
#[derive(Debug, Clone)]
pub struct InputContext<'a> {
    /// Language of plain strings given for text fields.
    pub lang: &'a str,
    /// The document's current content, for updates (`None` when creating).
    pub current: Option<&'a Map<String, Value>>,
}

impl KindSchema {
    fn spec(&self, field: &str) -> Result<&'static FieldSpec, FieldError> {
        self.fields.iter().find(|s| s.name == field).ok_or_else(|| FieldError::Unknown {
            kind: self.kind.to_string(),
            field: field.to_owned(),
            known: self.fields.iter().map(|s| s.name).collect::<Vec<_>>().join(", "),
        })
    }

    /// Checks `input` and turns it into edits. When creating
    /// (`ctx.current` is `None`) every required field must be there; when
    /// updating, `null` removes an optional field.
    ///
    /// # Errors
    /// The first [`FieldError`] found; nothing is to be written then.
    pub fn edits(&self, input: &Map<String, Value>, ctx: &InputContext<'_>) -> Result<Vec<Edit>, FieldError> {
        if !is_language(ctx.lang) {
            return Err(invalid(
                "lang",
                format!("{:?} is not a known language ({})", ctx.lang, codes::LANGUAGES.list()),
            ));
        }
        if ctx.current.is_none() {
            for spec in self.fields.iter().filter(|s| s.required) {
                if input.get(spec.name).is_none_or(Value::is_null) {
                    return Err(FieldError::Missing { field: spec.name.to_owned() });
                }
            }
        }
        let mut edits = Vec::new();
        for (name, value) in input {
            let spec = self.spec(name)?;
            if value.is_null() {
                if spec.required {
                    return Err(FieldError::Missing { field: name.clone() });
                }
                edits.push(Edit::Delete { field: name.clone() });
                continue;
            }
            let current = ctx.current.and_then(|c| c.get(name));
            field_edits(spec, value, ctx.lang, current, &mut edits)?;
        }
        Ok(edits)
    }

    /// Presents stored content: code sets as sorted arrays, everything else
    /// as stored. Fields unknown to this release are passed through.
    pub fn present(&self, content: &Map<String, Value>) -> Map<String, Value> {
        let mut out = Map::new();
        for (name, value) in content {
            if name == crate::document::STATUS_LOG || name == crate::document::SCHEMA_KEY {
                continue;
            }
            let presented = match self.fields.iter().find(|s| s.name == name).map(|s| &s.ty) {
                Some(FieldType::Codes(_)) | Some(FieldType::DocRefs) => match value {
                    Value::Object(set) => Value::Array(set.keys().cloned().map(Value::String).collect()),
                    other => other.clone(),
                },
                _ => value.clone(),
            };
            out.insert(name.clone(), presented);
        }
        out
    }

    /// The title of a document in `lang` if it has one, else its original.
    pub fn title(&self, content: &Map<String, Value>, lang: &str) -> Option<String> {
        text_in(content.get(self.title_field)?, lang)
    }
}

/// A multilingual text value in `lang`, else in its original language, else
/// whichever is there.
pub fn text_in(value: &Value, lang: &str) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Object(map) => {
            let original = map.get(ORIGINAL).and_then(Value::as_str);
            [Some(lang), original]
                .into_iter()
                .flatten()
                .find_map(|l| map.get(l).and_then(Value::as_str))
                .or_else(|| map.iter().find(|(k, _)| k.as_str() != ORIGINAL).and_then(|(_, v)| v.as_str()))
                .map(str::to_owned)
        }
        _ => None,
    }
}

fn is_language(code: &str) -> bool {
    codes::LANGUAGES.contains(code)
}

fn field_edits(
    spec: &FieldSpec,
    value: &Value,
    lang: &str,
    current: Option<&Value>,
    out: &mut Vec<Edit>,
) -> Result<(), FieldError> {
    let name = spec.name;
    match &spec.ty {
        FieldType::Text => {
            let texts: Vec<(String, String)> = match value {
                Value::String(s) => vec![(lang.to_owned(), s.clone())],
                Value::Object(map) => map
                    .iter()
                    .filter(|(k, _)| k.as_str() != ORIGINAL)
                    .map(|(k, v)| {
                        v.as_str()
                            .map(|s| (k.clone(), s.to_owned()))
                            .ok_or_else(|| invalid(name, format!("the {k} text must be a string")))
                    })
                    .collect::<Result<_, _>>()?,
                _ => {
                    return Err(invalid(name, "expected a string or an object of language → text"));
                }
            };
            if texts.is_empty() {
                return Err(invalid(name, "no text given"));
            }
            // The original language goes first so it is the one recorded as original.
            let mut texts = texts;
            texts.sort_by_key(|(l, _)| l.as_str() != lang);
            for (l, text) in texts {
                if !is_language(&l) {
                    return Err(invalid(name, format!("{l:?} is not a known language ({})", codes::LANGUAGES.list())));
                }
                let chars = text.chars().count();
                if chars > MAX_TEXT_CHARS {
                    return Err(invalid(name, format!("{chars} characters, over the limit of {MAX_TEXT_CHARS}")));
                }
                if spec.required && text.trim().is_empty() {
                    return Err(FieldError::Missing { field: name.to_owned() });
                }
                out.push(Edit::Text { field: name.to_owned(), lang: l, text });
            }
        }
        FieldType::Codes(_) | FieldType::DocRefs => {
            let items = value.as_array().ok_or_else(|| invalid(name, "expected an array"))?;
            let mut wanted = BTreeSet::new();
            for item in items {
                let s = item.as_str().ok_or_else(|| invalid(name, "expected an array of strings"))?;
                let code = match &spec.ty {
                    FieldType::Codes(list) => check_code(name, list, s)?,
                    _ => s.parse::<DocId>().map_err(|e| invalid(name, e.to_string()))?.to_string(),
                };
                wanted.insert(code);
            }
            let had: BTreeSet<String> = match current {
                Some(Value::Object(set)) => set.keys().cloned().collect(),
                _ => BTreeSet::new(),
            };
            out.push(Edit::Members {
                field: name.to_owned(),
                add: wanted.difference(&had).cloned().collect(),
                remove: had.difference(&wanted).cloned().collect(),
            });
        }
        FieldType::Records(fields) => {
            let items = value.as_array().ok_or_else(|| invalid(name, "expected an array of objects"))?;
            if items.len() > MAX_RECORDS {
                return Err(invalid(name, format!("{} records, over the limit of {MAX_RECORDS}", items.len())));
            }
            let mut records = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                let obj = item.as_object().ok_or_else(|| invalid(name, format!("record {i} is not an object")))?;
                let mut record = BTreeMap::new();
                for sub in fields.iter().filter(|s| s.required) {
                    if obj.get(sub.name).is_none_or(Value::is_null) {
                        return Err(FieldError::Missing { field: format!("{name}[{i}].{}", sub.name) });
                    }
                }
                for (key, v) in obj {
                    let sub = fields
                        .iter()
                        .find(|s| s.name == key)
                        .ok_or_else(|| invalid(name, format!("record {i} has unknown field {key:?}")))?;
                    if !v.is_null() {
                        record.insert(key.clone(), scalar(sub, v)?);
                    }
                }
                records.push(record);
            }
            out.push(Edit::Records { field: name.to_owned(), records });
        }
        _ => out.push(Edit::Put { field: name.to_owned(), value: scalar(spec, value)? }),
    }
    Ok(())
}

fn check_code(field: &str, list: &CodeList, code: &str) -> Result<String, FieldError> {
    if list.contains(code) {
        Ok(code.to_owned())
    } else {
        Err(invalid(field, format!("unknown {} code {code:?}; expected one of: {}", list.name, list.list())))
    }
}

fn scalar(spec: &FieldSpec, value: &Value) -> Result<Scalar, FieldError> {
    let name = spec.name;
    let string = || value.as_str().ok_or_else(|| invalid(name, "expected a string"));
    Ok(match &spec.ty {
        FieldType::Plain => {
            let s = string()?;
            if spec.required && s.trim().is_empty() {
                return Err(FieldError::Missing { field: name.to_owned() });
            }
            let chars = s.chars().count();
            if chars > MAX_PLAIN_CHARS {
                return Err(invalid(name, format!("{chars} characters, over the limit of {MAX_PLAIN_CHARS}")));
            }
            Scalar::Str(s.to_owned())
        }
        FieldType::Email => {
            let s = string()?;
            let ok = s.len() <= 254
                && s.split_once('@')
                    .is_some_and(|(user, host)| !user.is_empty() && host.contains('.') && !host.contains('@'));
            if !ok {
                return Err(invalid(name, format!("{s:?} is not an e-mail address")));
            }
            Scalar::Str(s.to_owned())
        }
        FieldType::Code(list) => Scalar::Str(check_code(name, list, string()?)?),
        FieldType::Date => {
            let s = string()?;
            if !is_date(s) {
                return Err(invalid(name, format!("{s:?} is not a date of the form YYYY-MM-DD")));
            }
            Scalar::Str(s.to_owned())
        }
        FieldType::Bool => Scalar::Bool(value.as_bool().ok_or_else(|| invalid(name, "expected true or false"))?),
        FieldType::Int(lo, hi) => {
            let n = value.as_i64().ok_or_else(|| invalid(name, "expected a whole number"))?;
            if n < *lo || n > *hi {
                return Err(invalid(name, format!("{n} is outside {lo}..={hi}")));
            }
            Scalar::Int(n)
        }
        FieldType::Number => {
            let n = value.as_f64().filter(|n| n.is_finite()).ok_or_else(|| invalid(name, "expected a number"))?;
            Scalar::F64(n)
        }
        FieldType::Country => {
            let s = string()?.to_ascii_uppercase();
            if !codes::is_country(&s) {
                return Err(invalid(
                    name,
                    format!("{:?} is not an ISO 3166-1 alpha-2 country code (e.g. BE, MA)", string()?),
                ));
            }
            Scalar::Str(s)
        }
        FieldType::Commune => {
            Scalar::Str(string()?.parse::<CommuneId>().map_err(|e| invalid(name, e.to_string()))?.to_string())
        }
        FieldType::DocRef => {
            Scalar::Str(string()?.parse::<DocId>().map_err(|e| invalid(name, e.to_string()))?.to_string())
        }
        FieldType::Text | FieldType::Codes(_) | FieldType::DocRefs | FieldType::Records(_) => {
            return Err(invalid(name, "not a scalar field"));
        }
    })
}

/// Whether `s` is a real calendar date `YYYY-MM-DD`.
pub fn is_date(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return false;
    }
    let num = |r: std::ops::Range<usize>| s[r].parse::<u32>().ok();
    let (Some(y), Some(m), Some(d)) = (num(0..4), num(5..7), num(8..10)) else {
        return false;
    };
    if !s[0..4].bytes().all(|c| c.is_ascii_digit()) {
        return false;
    }
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days = match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    (1..=days).contains(&d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    fn create(kind: DocKind, v: Value) -> Result<Vec<Edit>, FieldError> {
        schema_of(&kind).unwrap().edits(&obj(v), &InputContext { lang: "fr", current: None })
    }

    #[test]
    fn a_valid_request_becomes_edits() {
        let edits = create(
            DocKind::Request,
            json!({"title": "Compostage de quartier", "theme": "THEME:waste", "dimensions": ["SPIRAL:B"],
                   "deadline": "2026-03-31", "consent_relay": true}),
        )
        .unwrap();
        assert!(edits.contains(&Edit::Put { field: "theme".into(), value: Scalar::Str("THEME:waste".into()) }));
        assert!(edits.iter().any(|e| matches!(e, Edit::Text { lang, .. } if lang == "fr")));
    }

    #[test]
    fn bad_input_names_the_field_and_reason() {
        let err = create(DocKind::Request, json!({"title": "  "})).unwrap_err();
        assert_eq!(err, FieldError::Missing { field: "title".into() });
        let err = create(DocKind::Request, json!({"title": "x", "theme": "THEME:nope"})).unwrap_err();
        assert!(err.to_string().contains("unknown theme code \"THEME:nope\""), "{err}");
        let err = create(DocKind::Profile, json!({"name": "Senneval", "country": "Belgium"})).unwrap_err();
        assert!(err.to_string().contains("country"), "{err}");
        let err = create(DocKind::Request, json!({"title": "x", "colour": "blue"})).unwrap_err();
        assert!(matches!(err, FieldError::Unknown { .. }));
        let err = create(DocKind::Request, json!({"title": "x", "deadline": "2026-02-30"})).unwrap_err();
        assert!(err.to_string().contains("deadline"));
        let err = create(DocKind::Request, json!({"title": {"xx": "x"}})).unwrap_err();
        assert!(err.to_string().contains("language"));
    }

    #[test]
    fn set_updates_remove_only_what_was_seen() {
        let schema = schema_of(&DocKind::Offer).unwrap();
        let current = obj(json!({"themes": {"THEME:waste": true, "THEME:water": true}}));
        let edits = schema
            .edits(
                &obj(json!({"themes": ["THEME:waste", "THEME:youth"]})),
                &InputContext { lang: "fr", current: Some(&current) },
            )
            .unwrap();
        assert_eq!(
            edits,
            vec![Edit::Members {
                field: "themes".into(),
                add: vec!["THEME:youth".into()],
                remove: vec!["THEME:water".into()]
            }]
        );
    }

    #[test]
    fn dates_are_real_dates() {
        assert!(is_date("2024-02-29"));
        assert!(!is_date("2023-02-29"));
        assert!(!is_date("2023-13-01"));
        assert!(!is_date("+023-01-01"));
    }

    #[test]
    fn titles_prefer_the_asked_language() {
        let v = json!({"original": "fr", "fr": "Propreté", "ar": "نظافة"});
        assert_eq!(text_in(&v, "ar").unwrap(), "نظافة");
        assert_eq!(text_in(&v, "nl").unwrap(), "Propreté");
    }
}

#[cfg(test)]
mod doc_tests {
    /// docs/cli.md lists every field of every kind, so it cannot drift.
    #[test]
    fn the_cli_guide_lists_every_field() {
        let guide = include_str!("../../docs/cli.md");
        for schema in &super::SCHEMAS {
            for field in schema.fields {
                assert!(
                    guide.contains(&format!("`{}`", field.name)),
                    "docs/cli.md does not mention {} of {}",
                    field.name,
                    schema.kind
                );
            }
            if let Some(lc) = schema.lifecycle {
                for stage in lc.stages {
                    assert!(guide.contains(stage.code), "docs/cli.md does not mention status {}", stage.code);
                }
            }
        }
    }
}
