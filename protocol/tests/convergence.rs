//! Concurrent edits of the same request converge to the same state whatever
//! order the replicas merge in, and merging twice changes nothing.

use passerelle_protocol::automerge::Automerge;
use passerelle_protocol::document::{self, Edit, actor_of};
use passerelle_protocol::header::DocKind;
use passerelle_protocol::keys::SecretKey;
use passerelle_protocol::schema::{InputContext, schema_of};
use passerelle_protocol::status::REQUEST;
use proptest::prelude::*;
use serde_json::{Map, Value, json};

/// One user action on a replica, as the API would receive it.
#[derive(Debug, Clone)]
enum Action {
    Title(usize),
    Translate(usize),
    Deadline(u32),
    AddTheme(usize),
    Dimensions(Vec<usize>),
    Status(usize),
}

const TITLES: [&str; 4] = ["Compostage", "Tri des déchets", "Quartier propre", "Propreté des rues"];
const DIMS: [&str; 4] = ["SPIRAL:A", "SPIRAL:B", "SPIRAL:C", "SPIRAL:D"];
const NEEDS: [&str; 3] = ["expertise", "training", "mission"];

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        (0..4usize).prop_map(Action::Title),
        (0..4usize).prop_map(Action::Translate),
        (1..28u32).prop_map(Action::Deadline),
        (0..3usize).prop_map(Action::AddTheme),
        proptest::collection::vec(0..4usize, 0..3).prop_map(Action::Dimensions),
        (0..7usize).prop_map(Action::Status),
    ]
}

/// Applies an action the way the node does: schema checks on the current
/// content, then one change; refused actions (e.g. a backwards status) do nothing.
fn apply(doc: &mut Automerge, who: &str, action: &Action, time: i64) {
    let schema = schema_of(&DocKind::Request).unwrap();
    let content = document::to_json(doc);
    let current_status =
        REQUEST.current(document::status_log(doc).iter().map(|e| e.status.as_str())).map(str::to_owned);
    let (input, lang) = match action {
        Action::Title(i) => (json!({"title": TITLES[*i]}), "fr"),
        Action::Translate(i) => (json!({"title": format!("ترجمة {i}")}), "ar"),
        Action::Deadline(d) => (json!({"deadline": format!("2026-02-{d:02}")}), "fr"),
        Action::AddTheme(i) => {
            let mut needs: Vec<Value> = content
                .get("need_types")
                .and_then(Value::as_object)
                .map(|m| m.keys().map(|k| json!(k)).collect())
                .unwrap_or_default();
            needs.push(json!(NEEDS[*i]));
            (json!({"need_types": needs}), "fr")
        }
        Action::Dimensions(ds) => (json!({"dimensions": ds.iter().map(|d| DIMS[*d]).collect::<Vec<_>>()}), "fr"),
        Action::Status(s) => {
            let to = REQUEST.stages[*s].code;
            if REQUEST.check_move(current_status.as_deref(), to).is_err() {
                return;
            }
            let edit = Edit::Status { code: to.into(), at_ms: time, by: who.into(), note: None };
            document::commit(doc, &[edit], "status", time).unwrap();
            return;
        }
    };
    let input: Map<String, Value> = input.as_object().unwrap().clone();
    let edits = schema.edits(&input, &InputContext { lang, current: Some(&content) }).unwrap();
    document::commit(doc, &edits, "update", time).unwrap();
}

fn state(doc: &Automerge) -> (Value, Option<&'static str>, Vec<String>) {
    let mut heads: Vec<String> = doc.get_heads().iter().map(|h| h.to_string()).collect();
    heads.sort();
    let status = REQUEST.current(document::status_log(doc).iter().map(|e| e.status.as_str()));
    (Value::Object(document::to_json(doc)), status, heads)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn concurrent_edits_converge_in_any_merge_order(
        a in proptest::collection::vec(action(), 1..6),
        b in proptest::collection::vec(action(), 1..6),
        c in proptest::collection::vec(action(), 1..6),
        order in Just([0usize, 1, 2]).prop_shuffle(),
    ) {
        let nodes: Vec<_> = (1..=3u8).map(|i| SecretKey::from_seed([i; 32]).node_id()).collect();
        let mut base = document::new_document(&nodes[0]);
        let schema = schema_of(&DocKind::Request).unwrap();
        let create = schema.edits(json!({"title": "Demande"}).as_object().unwrap(), &InputContext { lang: "fr", current: None }).unwrap();
        document::commit(&mut base, &create, "create", 1).unwrap();
        document::commit(&mut base, &[Edit::Status { code: "open".into(), at_ms: 1, by: "a".into(), note: None }], "open", 1).unwrap();

        let mut replicas: Vec<Automerge> = nodes.iter().map(|n| base.fork().with_actor(actor_of(n))).collect();
        for (r, actions) in [&a, &b, &c].into_iter().enumerate() {
            for (t, act) in actions.iter().enumerate() {
                apply(&mut replicas[r], &format!("c{r}"), act, 10 + t as i64);
            }
        }

        // Replica X merges the others in the given order; replica Y in the reverse.
        let mut x = replicas[order[0]].fork();
        for &i in &order[1..] { x.merge(&mut replicas[i].clone()).unwrap(); }
        let mut y = replicas[order[2]].fork();
        for &i in order[..2].iter().rev() { y.merge(&mut replicas[i].clone()).unwrap(); }
        prop_assert_eq!(state(&x), state(&y));

        // Idempotent: merging again changes nothing.
        let before = state(&x);
        for r in &replicas { x.merge(&mut r.clone()).unwrap(); }
        prop_assert_eq!(before, state(&x));

        // The status is the most advanced any replica reached.
        let most = replicas.iter().filter_map(|r| REQUEST.current(document::status_log(r).iter().map(|e| e.status.as_str())))
            .max_by_key(|s| (REQUEST.stage(s).unwrap().rank, std::cmp::Reverse(REQUEST.stages.iter().position(|t| t.code == *s))));
        prop_assert_eq!(state(&x).1, most);
    }
}
