//! Entry points for fuzzing: each takes arbitrary bytes as a peer, a
//! bundle or a web page could send them, decodes and checks them the way
//! the node does, and asserts what must hold whatever the input (no panic,
//! re-encoding what decoded gives bytes that decode to the same value).
//!
//! The cargo-fuzz targets in `protocol/fuzz` call these, and
//! `tests/fuzz_corpus.rs` replays the corpus kept in the repository on the
//! stable toolchain, so a crash found once stays fixed.

use std::sync::OnceLock;

use serde_json::{Map, Value};

use crate::bundle::Bundle;
use crate::envelope::{ChangeEnvelope, verify_signatures};
use crate::header::{DocKind, SignedHeader};
use crate::heartbeat::{PulseChain, SignedHeartbeat, StoredHeartbeat};
use crate::keys::SecretKey;
use crate::network::{Invitation, Roster, SignedStatement};
use crate::schema::{InputContext, schema_of};
use crate::sync::message::{SyncMessage, SyncReply};

/// A fuzz target: takes any bytes, panics only on a bug.
pub type Target = fn(&[u8]);

/// The fuzz targets, by name (the directories of the corpus).
pub const TARGETS: [(&str, Target); 6] = [
    ("wire", wire),
    ("envelope", envelope),
    ("statement", statement),
    ("heartbeat", heartbeat),
    ("bundle", bundle),
    ("api_json", api_json),
];

/// A sync message or reply off the wire.
pub fn wire(data: &[u8]) {
    if let Ok(msg) = SyncMessage::decode(data) {
        let again = msg.encode();
        let back = SyncMessage::decode(&again).expect("what decoded re-encodes to bytes that decode");
        assert_eq!(back.encode(), again, "encoding is stable");
    }
    if let Ok(reply) = SyncReply::decode(data) {
        let again = reply.encode();
        assert_eq!(SyncReply::decode(&again).map(|r| r.encode()).ok(), Some(again));
    }
}

/// A change envelope and a document header, checked as a receiver checks
/// them (the batch path and the single path agree).
pub fn envelope(data: &[u8]) {
    if let Ok(env) = ChangeEnvelope::decode(data) {
        let single = env.check_signature().is_ok();
        let batch = verify_signatures(std::slice::from_ref(&env));
        assert_eq!(batch.len(), 1);
        assert_eq!(batch[0].is_ok(), single, "batch and single verification agree");
        assert_eq!(ChangeEnvelope::decode(&env.encode()).map(|e| e.encode()).ok(), Some(env.encode()));
    }
    if let Ok(header) = SignedHeader::decode(data) {
        let _ = header.verify();
        let _ = header.verify_for(&header.id());
    }
}

/// A roster fixed for the fuzzer: founded by a known key.
fn roster() -> &'static Roster {
    static ROSTER: OnceLock<Roster> = OnceLock::new();
    ROSTER.get_or_init(|| {
        let founder = SecretKey::from_seed([7; 32]);
        Roster::founded(SignedStatement::found(&founder, "Réseau", "Fondatrice", "BE", 1))
            .expect("a founding statement")
    })
}

/// A membership statement and an invitation, folded into a roster.
pub fn statement(data: &[u8]) {
    if let Ok(st) = SignedStatement::decode(data) {
        let mut r = roster().clone();
        let before = r.statements().count();
        if r.insert(st.clone()).unwrap_or(false) {
            assert!(r.statements().count() <= before + 1, "one statement adds at most one");
        }
        assert_eq!(SignedStatement::decode(&st.encode()).map(|s| s.encode()).ok(), Some(st.encode()));
    }
    if let Ok(inv) = Invitation::decode(data) {
        let _ = inv.verify(1_700_000_000_000);
    }
}

/// A heartbeat (as received and as stored) and a pulse chain.
pub fn heartbeat(data: &[u8]) {
    if let Ok(beat) = SignedHeartbeat::decode(data) {
        let _ = beat.check(roster(), 1_700_000_000_000);
        assert_eq!(SignedHeartbeat::decode(&beat.encode()).map(|b| b.encode()).ok(), Some(beat.encode()));
    }
    let _ = StoredHeartbeat::decode(data);
    if let Ok(chain) = PulseChain::decode(data) {
        let _ = chain.verify(&roster().network());
    }
}

/// An offline bundle, verified as `bundle import` verifies it.
pub fn bundle(data: &[u8]) {
    let _ = Bundle::decode_verified(data);
}

/// A JSON body the API accepts for a document: `{kind, fields, lang?}`,
/// validated by the kind's schema as a create and as an update.
pub fn api_json(data: &[u8]) {
    let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(data) else { return };
    let kind = body.get("kind").and_then(Value::as_str).and_then(|k| k.parse::<DocKind>().ok());
    let Some(schema) = kind.as_ref().and_then(schema_of) else { return };
    let empty = Map::new();
    let fields = body.get("fields").and_then(Value::as_object).unwrap_or(&empty);
    let lang = body.get("lang").and_then(Value::as_str).unwrap_or("fr");
    let _ = schema.edits(fields, &InputContext { lang, current: None });
    let _ = schema.edits(fields, &InputContext { lang, current: Some(fields) });
    let _ = schema.present(fields);
    let _ = schema.title(fields, lang);
}

/// Valid inputs for each target, from which the fuzzers start: what an
/// honest node sends (a hello, a round, a push of a signed document with
/// its header and certificate, roster statements, a heartbeat, a bundle,
/// API bodies). `cargo test -p passerelle-protocol --test fuzz_corpus --
/// --ignored` writes them into `fuzz/corpus`.
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    use crate::certificate::NodeCertificate;
    use crate::document::{Edit, Scalar, commit, new_document};
    use crate::header::{DocHeader, Scope};
    use crate::heartbeat::{Heartbeat, PeerBeat};
    use crate::network::{InvitationTerms, Role, Statement};
    use crate::sync::fingerprint::BUCKETS;

    let founder = SecretKey::from_seed([7; 32]);
    let node = SecretKey::from_seed([8; 32]);
    let cert = NodeCertificate::issue(&founder, node.node_id(), 1);
    let roster = roster();
    let network = roster.network();
    let found = roster.statements().next().expect("the founding statement").clone();
    let member = SecretKey::from_seed([9; 32]);
    let admit = SignedStatement::sign(
        &founder,
        network,
        2,
        Statement::Admit {
            member: member.commune_id(),
            name: "Tala-n-Asif".into(),
            country: "MA".into(),
            role: Role::Commune,
            invitation: [3; 16],
            node: member.node_id(),
            addrs: vec!["/ip4/127.0.0.1/tcp/7421".into()],
        },
    );
    let partner = SignedStatement::sign(&member, network, 3, Statement::Partner { with: founder.commune_id() });
    let header = SignedHeader::sign(
        DocHeader::new(DocKind::Request, founder.commune_id(), Scope::Partnership, 1, [4; 16]),
        &node,
        cert.clone(),
    );
    let mut doc = new_document(&node.node_id());
    let edits = [Edit::Put { field: "title".into(), value: Scalar::Str("Compostage".into()) }];
    let change = commit(&mut doc, &edits, "create request", 1).expect("commit").expect("a change");
    let env = ChangeEnvelope::sign(header.id(), &change, &node);
    let beat = SignedHeartbeat::sign(
        Heartbeat {
            network,
            certificate: cert.clone(),
            time_ms: 1_700_000_000_000,
            version: "0.1.0".into(),
            uptime_s: 60,
            peers: vec![PeerBeat {
                node: member.node_id(),
                connected: true,
                last_contact_ms: 1,
                last_sync_ms: 1,
                unacknowledged: 0,
                queued: 2,
            }],
            documents: vec![("request".into(), "open".into(), 1)],
            disk_bytes: 4096,
            rejected: vec![("bad_signature".into(), 1)],
        },
        &node,
    );
    let invitation = Invitation::issue(
        &founder,
        InvitationTerms {
            network,
            name: "Hautrieu".into(),
            country: "BE".into(),
            role: Role::Commune,
            expires_ms: 1_800_000_000_000,
            id: [5; 16],
            issuer_node: node.node_id(),
            addrs: vec!["/ip4/127.0.0.1/tcp/7421".into()],
        },
    );
    let bundle = Bundle::sign(
        crate::bundle::BundleContents {
            network,
            recipient: member.commune_id(),
            created_ms: 2,
            since_ms: 0,
            statements: vec![found.clone(), admit.clone()],
            certificates: vec![cert.clone()],
            headers: vec![header.clone()],
            changes: vec![env.clone()],
        },
        &node,
        cert.clone(),
    );
    let messages = [
        SyncMessage::Hello {
            certificate: cert.clone(),
            network,
            roster_count: 1,
            roster_fingerprint: [1; 16],
            proof: vec![found.clone()],
            summary: Some(crate::sync::message::SetSummary { count: 1, fingerprint: [2; 16], pending: 0 }),
            routes: vec![(cert.node, 1)],
        },
        SyncMessage::ProofWanted,
        SyncMessage::RosterHave { hashes: vec![[2; 16]] },
        SyncMessage::Roster { statements: vec![admit.clone(), partner.clone()], complete: true },
        SyncMessage::Join { invitation: Box::new(invitation.clone()), certificate: cert.clone(), addrs: vec![] },
        SyncMessage::Summary {
            count: 1,
            fingerprint: [3; 16],
            roster_count: 2,
            roster_fingerprint: [4; 16],
            pending: 0,
        },
        SyncMessage::Buckets { buckets: vec![Default::default(); BUCKETS] },
        SyncMessage::Items { buckets: vec![(header.id().as_bytes()[0], vec![(header.id(), vec![[5; 32]])])] },
        SyncMessage::Have { docs: vec![(header.id(), vec![[6; 32]])], statements: vec![[7; 16]] },
        SyncMessage::Heartbeats { beats: vec![beat.clone()] },
        SyncMessage::Routes { hops: vec![(member.node_id(), 2)] },
        SyncMessage::BeatsWanted { nodes: vec![[9; 8]] },
        SyncMessage::Differ {
            answer: false,
            roster_count: 2,
            roster_fingerprint: [4; 16],
            docs: vec![(header.id(), "revoked".into())],
        },
        SyncMessage::Push {
            certificates: vec![cert.clone()],
            headers: vec![header.clone()],
            changes: vec![env.clone()],
        },
        SyncMessage::Docs {
            certificates: vec![cert.clone()],
            headers: vec![header.clone()],
            changes: vec![env.clone()],
        },
    ];
    let mut out: Vec<(&'static str, Vec<u8>)> = messages.iter().map(|m| ("wire", m.encode())).collect();
    out.push(("wire", SyncReply::Ok.encode()));
    out.push(("envelope", env.encode()));
    out.push(("envelope", header.encode()));
    for st in [&found, &admit, &partner] {
        out.push(("statement", st.encode()));
    }
    out.push(("statement", invitation.encode()));
    out.push(("heartbeat", beat.encode()));
    out.push(("bundle", bundle.encode()));
    for body in [
        r#"{"kind":"request","fields":{"title":{"fr":"Tri des déchets","ar":"فرز النفايات"},"theme":"THEME:waste","deadline":"2027-03-31","consent_relay":true},"lang":"fr"}"#,
        r#"{"kind":"offer","fields":{"title":"Formation","request":"00","need_types":["expertise"]}}"#,
        r#"{"kind":"profile","fields":{"name":"Senneval","country":"BE"},"lang":"nl"}"#,
    ] {
        out.push(("api_json", body.as_bytes().to_vec()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seeds_pass_their_targets() {
        for (target, bytes) in seeds() {
            let (_, run) = TARGETS.iter().find(|(n, _)| *n == target).unwrap();
            run(&bytes);
            let decodes = match target {
                "wire" => SyncMessage::decode(&bytes).is_ok() || SyncReply::decode(&bytes).is_ok(),
                "envelope" => ChangeEnvelope::decode(&bytes).is_ok() || SignedHeader::decode(&bytes).is_ok(),
                "statement" => SignedStatement::decode(&bytes).is_ok() || Invitation::decode(&bytes).is_ok(),
                "heartbeat" => SignedHeartbeat::decode(&bytes).is_ok(),
                "bundle" => Bundle::decode_verified(&bytes).is_ok(),
                _ => serde_json::from_slice::<Value>(&bytes).is_ok(),
            };
            assert!(decodes, "a {target} seed that does not decode: the fuzzer would start from noise");
        }
    }
}
