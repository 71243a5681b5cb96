//! `passerelle <project|request|offer|practice> create|list|show|update` and
//! `passerelle profile show|update`.

use std::process::ExitCode;

use anyhow::Context;
use passerelle_node::api::types::{CreateDoc, DocSummary, DocView, UpdateDoc};
use passerelle_node::client::ApiClient;
use passerelle_node::home::Home;
use passerelle_protocol::ids::{CommuneId, DocId};
use serde_json::{Map, Value};

use super::UsageError;
use crate::output::{Output, time};

/// Fields that can be set from flags. Which ones a kind accepts is listed in
/// docs/cli.md; the node refuses the others and says so.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct FieldArgs {
    /// Title (project, request, offer, practice), in --lang.
    #[arg(long)]
    pub title: Option<String>,
    /// Description (request, offer), in --lang.
    #[arg(long)]
    pub description: Option<String>,
    /// Summary (project), in --lang.
    #[arg(long)]
    pub summary: Option<String>,
    /// Theme code such as THEME:waste; repeat for several (a request has one).
    #[arg(long = "theme", value_name = "CODE")]
    pub themes: Vec<String>,
    /// SPIRAL dimension code such as SPIRAL:B; repeat for several.
    #[arg(long = "dimension", value_name = "CODE")]
    pub dimensions: Vec<String>,
    /// Deadline of a request, YYYY-MM-DD.
    #[arg(long)]
    pub deadline: Option<String>,
    /// Language of the text given in flags (fr, nl, ar, en, ...); the node's by default.
    #[arg(long)]
    pub lang: Option<String>,
    /// Any field as KEY=VALUE; VALUE is read as JSON when it parses
    /// (numbers, true, ["a","b"], {"fr":"..."}), else as text. Repeatable.
    #[arg(long = "field", value_name = "KEY=VALUE")]
    pub fields: Vec<String>,
}

impl FieldArgs {
    fn to_map(&self, kind: &str) -> Result<Map<String, Value>, UsageError> {
        let mut map = Map::new();
        let mut put = |k: &str, v: Value| map.insert(k.to_owned(), v);
        if let Some(t) = &self.title {
            put("title", t.clone().into());
        }
        if let Some(t) = &self.description {
            put("description", t.clone().into());
        }
        if let Some(t) = &self.summary {
            put("summary", t.clone().into());
        }
        if !self.themes.is_empty() {
            if kind == "request" {
                if self.themes.len() > 1 {
                    return Err(UsageError("a request has one theme: give --theme once".into()));
                }
                put("theme", self.themes[0].clone().into());
            } else {
                put("themes", self.themes.clone().into());
            }
        }
        if !self.dimensions.is_empty() {
            put("dimensions", self.dimensions.clone().into());
        }
        if let Some(d) = &self.deadline {
            put("deadline", d.clone().into());
        }
        for kv in &self.fields {
            let (k, v) =
                kv.split_once('=').ok_or_else(|| UsageError(format!("--field expects KEY=VALUE, got {kv:?}")))?;
            let value = serde_json::from_str(v).unwrap_or_else(|_| Value::String(v.to_owned()));
            put(k.trim(), value);
        }
        Ok(map)
    }
}

/// What can be done with a kind of document.
#[derive(Debug, clap::Subcommand)]
pub enum DocCommand {
    /// Create a document owned by this commune.
    Create {
        #[command(flatten)]
        fields: FieldArgs,
        /// Initial status (the kind's first status by default).
        #[arg(long)]
        status: Option<String>,
        /// Who receives it: network or partnership (the kind's default otherwise).
        #[arg(long)]
        scope: Option<String>,
        /// Another commune allowed to change it (its commune id); repeatable.
        #[arg(long = "writer", value_name = "COMMUNE_ID")]
        writers: Vec<CommuneId>,
    },
    /// List documents of this kind, most recently changed first.
    List {
        /// Only this status.
        #[arg(long)]
        status: Option<String>,
        /// Only documents owned by this commune id.
        #[arg(long, conflicts_with = "mine")]
        owner: Option<String>,
        /// Only this commune's own documents.
        #[arg(long)]
        mine: bool,
    },
    /// Show one document.
    Show {
        /// The document's id, or a unique prefix of it.
        id: String,
        /// Show text in this language when there is a translation.
        #[arg(long)]
        lang: Option<String>,
    },
    /// Change fields or move the status forward.
    Update {
        /// The document's id, or a unique prefix of it.
        id: String,
        #[command(flatten)]
        fields: FieldArgs,
        /// New status (forward moves only).
        #[arg(long)]
        status: Option<String>,
        /// A note recorded with the status move.
        #[arg(long, requires = "status")]
        note: Option<String>,
    },
}

/// What can be done with requests: what any document allows, and the
/// relay workflow.
#[derive(Debug, clap::Subcommand)]
pub enum RequestCommand {
    #[command(flatten)]
    Doc(Box<DocCommand>),
    /// Relay a request addressed to this commune to its national network
    /// (only if the requester consented): creates a network request that
    /// names the original, and records the relay on it.
    Relay {
        /// The request's id, or a unique prefix of it.
        id: String,
        /// A note recorded with the relay.
        #[arg(long)]
        note: Option<String>,
    },
    /// Accept an offer answering this commune's request (or a relay of it):
    /// the offer becomes accepted, the request and its relays answered.
    Accept {
        /// The request's id, or a unique prefix of it.
        id: String,
        /// The offer's id, or a unique prefix of it.
        #[arg(long)]
        offer: String,
    },
}

/// Runs `request ...`.
pub fn run_request(home: &Home, command: RequestCommand, out: &Output) -> anyhow::Result<ExitCode> {
    match command {
        RequestCommand::Doc(c) => run(home, "request", *c, out),
        RequestCommand::Relay { id, note } => {
            let client = super::client(home)?;
            let id = resolve_id(&client, Some("request"), &id)?;
            let relay = client.relay(&id, note.as_deref())?;
            out.print(&relay, || format!("relayed to the network as request {}\n{}", relay.id, render(&relay)));
            Ok(ExitCode::SUCCESS)
        }
        RequestCommand::Accept { id, offer } => {
            let client = super::client(home)?;
            let id = resolve_id(&client, Some("request"), &id)?;
            let offer = resolve_id(&client, Some("offer"), &offer)?;
            let doc = client.accept(&id, &offer)?;
            out.print(&doc, || format!("offer accepted\n{}", render(&doc)));
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// What can be done with the profile.
#[derive(Debug, clap::Subcommand)]
pub enum ProfileCommand {
    /// Show this commune's profile.
    Show,
    /// Change fields of this commune's profile.
    Update {
        #[command(flatten)]
        fields: FieldArgs,
    },
}

/// Runs a document command for `kind`.
pub fn run(home: &Home, kind: &str, command: DocCommand, out: &Output) -> anyhow::Result<ExitCode> {
    let client = super::client(home)?;
    match command {
        DocCommand::Create { fields, status, scope, writers } => {
            let req = CreateDoc {
                kind: kind.to_owned(),
                fields: fields.to_map(kind)?,
                lang: fields.lang.clone(),
                scope,
                writers,
                status,
            };
            let doc = client.create(&req)?;
            out.print(&doc, || format!("created {}\n{}", doc.kind, render(&doc)));
        }
        DocCommand::List { status, owner, mine } => {
            let owner = if mine { Some(client.status()?.commune_id.to_string()) } else { owner };
            let docs = client.list(Some(kind), status.as_deref(), owner.as_deref())?;
            out.print(&docs, || render_list(kind, &docs));
        }
        DocCommand::Show { id, lang } => {
            let id = resolve_id(&client, Some(kind), &id)?;
            let doc = client.show(&id, lang.as_deref())?;
            if doc.kind != kind {
                anyhow::bail!("document {id} is a {}, not a {kind}: use `passerelle {} show {id}`", doc.kind, doc.kind);
            }
            out.print(&doc, || render(&doc));
        }
        DocCommand::Update { id, fields, status, note } => {
            let id = resolve_id(&client, Some(kind), &id)?;
            let map = fields.to_map(kind)?;
            if map.is_empty() && status.is_none() {
                return Err(UsageError("nothing to update: give fields to change or --status".into()).into());
            }
            let req = UpdateDoc { fields: map, lang: fields.lang.clone(), status, note };
            let doc = client.update(&id, &req)?;
            out.print(&doc, || format!("updated {}\n{}", doc.kind, render(&doc)));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs a profile command.
pub fn run_profile(home: &Home, command: ProfileCommand, out: &Output) -> anyhow::Result<ExitCode> {
    let client = super::client(home)?;
    let me = client.status()?.commune_id.to_string();
    let profile = client
        .list(Some("profile"), None, Some(&me))?
        .into_iter()
        .next()
        .context("this node holds no profile of its commune")?;
    let doc = match command {
        ProfileCommand::Show => client.show(&profile.id, None)?,
        ProfileCommand::Update { fields } => {
            let map = fields.to_map("profile")?;
            if map.is_empty() {
                return Err(UsageError("nothing to update: give fields with --field KEY=VALUE".into()).into());
            }
            client.update(&profile.id, &UpdateDoc { fields: map, lang: fields.lang.clone(), ..UpdateDoc::default() })?
        }
    };
    out.print(&doc, || render(&doc));
    Ok(ExitCode::SUCCESS)
}

/// A full document id from a full id or a unique prefix (at least 4 hex
/// characters) among the documents of `kind`.
pub fn resolve_id(client: &ApiClient, kind: Option<&str>, given: &str) -> anyhow::Result<DocId> {
    if let Ok(id) = given.parse::<DocId>() {
        return Ok(id);
    }
    let prefix = given.to_ascii_lowercase();
    if prefix.len() < 4 || !prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(UsageError(format!(
            "{given:?} is not a document id (64 hex characters, or a unique prefix of 4 or more)"
        ))
        .into());
    }
    let matches: Vec<DocId> = client
        .list(kind, None, None)?
        .into_iter()
        .map(|d| d.id)
        .filter(|id| id.to_string().starts_with(&prefix))
        .collect();
    match matches.as_slice() {
        [one] => Ok(*one),
        [] => anyhow::bail!("no {} document with an id starting with {prefix}", kind.unwrap_or("")),
        many => anyhow::bail!("{} documents have ids starting with {prefix}: give more characters", many.len()),
    }
}

fn render_value(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(items) if items.iter().all(Value::is_string) => {
            items.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", ")
        }
        Value::Object(map) if map.contains_key("original") => {
            let original = map.get("original").and_then(Value::as_str).unwrap_or("");
            let mut parts: Vec<String> = Vec::new();
            if let Some(t) = map.get(original).and_then(Value::as_str) {
                parts.push(format!("[{original}] {t}"));
            }
            for (lang, t) in map.iter().filter(|(k, _)| k.as_str() != "original" && k.as_str() != original) {
                parts.push(format!("[{lang}] {}", t.as_str().unwrap_or("")));
            }
            parts.join("\n               ")
        }
        other => other.to_string(),
    }
}

/// A document as text.
pub fn render(doc: &DocView) -> String {
    let mut text = format!(
        "{} {}  {}\n  id           {}\n  status       {}\n  owner        {}  scope {}\n  created      {}  updated {}  ({} changes)",
        doc.kind,
        doc.id.short(),
        doc.title.as_deref().unwrap_or(""),
        doc.id,
        doc.status.as_deref().unwrap_or("-"),
        doc.owner.short(),
        doc.scope,
        time(doc.created_ms),
        time(doc.updated_ms),
        doc.changes
    );
    for (name, value) in &doc.fields {
        text.push_str(&format!("\n  {name:<12} {}", render_value(value)));
    }
    if doc.status_log.len() > 1 {
        text.push_str("\n  status log");
        for e in &doc.status_log {
            let note = e.note.as_deref().map(|n| format!(" — {n}")).unwrap_or_default();
            text.push_str(&format!(
                "\n    {}  {:<10} by {}{note}",
                time(e.at_ms),
                e.status,
                &e.by[..8.min(e.by.len())]
            ));
        }
    }
    text
}

fn render_list(kind: &str, docs: &[DocSummary]) -> String {
    if docs.is_empty() {
        return format!("no {kind} documents");
    }
    let mut text = format!("{:<10} {:<12} {:<19}  TITLE", "ID", "STATUS", "UPDATED");
    for d in docs {
        text.push_str(&format!(
            "\n{:<10} {:<12} {:<19}  {}",
            d.id.short(),
            d.status.as_deref().unwrap_or("-"),
            time(d.updated_ms),
            d.title.as_deref().unwrap_or("")
        ));
    }
    text.push_str(&format!(
        "\n{} {kind} document(s); `passerelle {kind} show <id>` takes an id or a unique prefix",
        docs.len()
    ));
    text
}
