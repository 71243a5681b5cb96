//! `passerelle demo`: a local federation of real nodes on loopback, each in
//! its own temporary home, playing the story of `DOMAIN.md` as far as the
//! built features go, with a readable timeline.
//!
//! ```text
//!   Tala-n-Asif (MA) ─── Senneval (BE) ─── Verbois (BE)
//!                            │    \            │
//!                            │     ─────── Hautrieu (BE)
//!                      Secrétariat ───────────┘
//! ```

use std::path::PathBuf;
use std::time::{Duration, Instant};

use passerelle_protocol::ids::DocId;
use serde_json::{Map, Value, json};

use crate::home::Home;
use crate::identity;
use crate::runtime::{self, RunningNode};
use crate::views::{CreateDoc, UpdateDoc};

/// The communes of the story: name, country.
pub const COMMUNES: [(&str, &str); 5] =
    [("Tala-n-Asif", "MA"), ("Senneval", "BE"), ("Verbois", "BE"), ("Hautrieu", "BE"), ("Secrétariat", "BE")];
/// Links of the demo federation (indexes into [`COMMUNES`]); Tala-n-Asif's
/// link (0–1) comes up later in the story.
const LINKS: [(usize, usize); 5] = [(1, 2), (2, 3), (1, 3), (4, 1), (4, 3)];
/// The coordinator of the demo network (index into [`COMMUNES`]).
const SECRETARIAT: usize = 4;
/// How long the demo waits for a document to travel before saying so.
const TRAVEL_DEADLINE: Duration = Duration::from_secs(30);

/// A running demo federation.
#[derive(Debug)]
pub struct Demo {
    /// Where the homes are.
    pub root: PathBuf,
    /// The nodes, in [`COMMUNES`] order.
    pub nodes: Vec<RunningNode>,
    /// The homes, in the same order.
    pub homes: Vec<Home>,
    started: Instant,
    /// Tala-n-Asif's emulated poor link to Senneval, with `--poor-link`.
    poor_link: Option<crate::netem::Link>,
    /// How long to wait for a document to travel.
    deadline: Duration,
}

fn fields(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap_or_default()
}

impl Demo {
    fn say(&self, text: &str) {
        eprintln!("[{:>6.1} s] {text}", self.started.elapsed().as_secs_f64());
    }

    async fn link(&self, a: usize, b: usize) -> Result<(), Box<dyn std::error::Error>> {
        let status = self.nodes[b].net.info().await?;
        let mut addr: libp2p::Multiaddr = status.listen.first().ok_or("no listen address")?.parse()?;
        if let (Some(poor), (0, 1)) = (&self.poor_link, (a, b)) {
            addr = poor.multiaddr().parse()?;
        }
        let node = crate::identity::load(&self.homes[b])?.node_id();
        self.nodes[a].engine.add_peer(node, vec![addr.to_string()]).await?;
        self.nodes[a].net.dial(node, vec![addr]).await?;
        Ok(())
    }

    async fn unlink(&self, a: usize, b: usize) -> Result<(), Box<dyn std::error::Error>> {
        let node = crate::identity::load(&self.homes[b])?.node_id();
        self.nodes[a].engine.remove_peer(node).await?;
        self.nodes[a].net.forget(node).await?;
        Ok(())
    }

    /// Waits until node `i` holds `doc` and `check` holds on it.
    async fn wait_for(&self, i: usize, doc: DocId, check: impl Fn(&crate::views::DocView) -> bool) -> bool {
        let end = Instant::now() + self.deadline;
        while Instant::now() < end {
            if let Ok(view) = self.nodes[i].engine.get(doc, None).await
                && check(&view)
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }

    async fn arrives(&self, i: usize, doc: DocId, what: &str, check: impl Fn(&crate::views::DocView) -> bool) {
        if self.wait_for(i, doc, check).await {
            self.say(&format!("   ✓ {what} on {}", COMMUNES[i].0));
        } else {
            self.say(&format!("   ✗ {what} did not reach {} within {:?}", COMMUNES[i].0, self.deadline));
        }
    }

    /// The secretariat founds the network and invites every commune; each
    /// joins through the secretariat's node; Tala-n-Asif and Senneval sign
    /// their partnership. Tala-n-Asif then leaves the secretariat's link:
    /// in the story it reaches the network through Senneval only.
    async fn form_network(&self) -> Result<(), Box<dyn std::error::Error>> {
        let sec = &self.nodes[SECRETARIAT];
        let listen = sec.net.info().await?.listen;
        let network = sec.engine.create_network("Réseau TOGETHER Belgique–Maroc".into(), listen.clone()).await?;
        self.say(&format!("The secretariat founds « {} » (network {})", network.name, &network.network[..16]));
        for i in [1, 2, 3, 0] {
            let (name, country) = COMMUNES[i];
            let req = crate::views::InviteRequest {
                name: name.into(),
                country: country.into(),
                role: None,
                expires_in_hours: Some(1),
            };
            let invite = sec.engine.invite(req, listen.clone()).await?;
            let invitation = passerelle_protocol::network::Invitation::from_token(&invite.token)?;
            crate::runtime::join(&self.nodes[i].engine, &self.nodes[i].net, invitation).await?;
        }
        self.say("   ✓ Senneval, Verbois, Hautrieu and Tala-n-Asif joined with single-use invitations");
        let tala = identity::load(&self.homes[0])?.commune_id().to_string();
        let senneval = identity::load(&self.homes[1])?.commune_id().to_string();
        // Each side waits until its roster names the other (the rest of the
        // roster follows the welcome in the first reconciliation).
        let end = Instant::now() + TRAVEL_DEADLINE;
        while let Err(e) = self.nodes[0].engine.partner(senneval.clone(), "propose".into()).await {
            if Instant::now() > end {
                return Err(format!("Tala-n-Asif could not propose the partnership: {e}").into());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        while let Err(e) = self.nodes[1].engine.partner(tala.clone(), "accept".into()).await {
            if Instant::now() > end {
                return Err(format!("Senneval could not accept the partnership: {e}").into());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.say("   ✓ Tala-n-Asif and Senneval signed their partnership");
        self.unlink(0, SECRETARIAT).await?;
        Ok(())
    }

    /// Stops every node.
    pub async fn shutdown(self, keep: bool) {
        for node in self.nodes {
            node.shutdown().await;
        }
        if !keep {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }
}

/// Starts the federation; returns the running demo. With `poor_link`,
/// Tala-n-Asif reaches Senneval through an emulated link of 64 kbit/s with a
/// 600 ms round trip, cut every 20 s.
///
/// # Errors
/// When a node cannot start.
pub async fn start(root: Option<PathBuf>, poor_link: bool) -> Result<Demo, Box<dyn std::error::Error>> {
    let root = root.unwrap_or_else(|| {
        std::env::temp_dir().join(format!("passerelle-demo-{}", hex::encode(crate::clock::random_bytes::<4>())))
    });
    std::fs::create_dir_all(&root)?;
    let mut homes = Vec::new();
    let mut nodes = Vec::new();
    let started = Instant::now();
    for (name, country) in COMMUNES {
        let slug: String = name.to_lowercase().chars().filter(char::is_ascii_alphanumeric).collect();
        let home = Home::new(root.join(slug));
        if !home.config().exists() {
            identity::init_with_listen(&home, name, country, 0, Some(vec!["/ip4/127.0.0.1/tcp/0".into()]))?;
            let config = std::fs::read_to_string(home.config())?;
            // The story decides who links with whom and when: no automatic links.
            let config = config.replace("anti_entropy_secs = 30", "anti_entropy_secs = 2");
            // Heartbeats often enough for the dashboard to follow the story.
            let config = config.replace("heartbeat_secs = 60", "heartbeat_secs = 5");
            std::fs::write(home.config(), config.replace("auto_links = true", "auto_links = false"))?;
        }
        nodes.push(runtime::start(&home).await?);
        homes.push(home);
    }
    let mut demo = Demo { root, nodes, homes, started, poor_link: None, deadline: TRAVEL_DEADLINE };
    demo.say(&format!("5 nodes running on loopback, homes in {}", demo.root.display()));
    let secretariat = &demo.nodes[SECRETARIAT];
    demo.say(&format!(
        "watch it live: the coordinators' dashboard at {} (English: {}; each link opens a session once, \
         within 5 minutes; for another: passerelle --home {} login)",
        secretariat.login_url("/"),
        secretariat.login_url("/?lang=en"),
        demo.homes[SECRETARIAT].root().display()
    ));
    if poor_link {
        use crate::bench::sync::{POOR_LINK_CUT_EVERY, POOR_LINK_KBIT_S, POOR_LINK_RTT};
        let listen = demo.nodes[1].net.info().await?.listen;
        let port: u16 = listen.first().and_then(|a| a.rsplit('/').next()).ok_or("no listen address")?.parse()?;
        let shape = crate::netem::LinkShape::poor(POOR_LINK_KBIT_S, POOR_LINK_RTT);
        let mut link = crate::netem::Link::start(([127, 0, 0, 1], port).into(), shape).await?;
        link.cut_every(POOR_LINK_CUT_EVERY);
        demo.poor_link = Some(link);
        demo.deadline = TRAVEL_DEADLINE * 4;
        demo.say(&format!(
            "Tala-n-Asif's link to Senneval: {POOR_LINK_KBIT_S} kbit/s, {} ms round trip, cut every {} s",
            POOR_LINK_RTT.as_millis(),
            POOR_LINK_CUT_EVERY.as_secs()
        ));
    }
    if demo.nodes[SECRETARIAT].engine.network().await.is_err() {
        demo.form_network().await?;
    }
    for (a, b) in LINKS {
        demo.link(a, b).await?;
    }
    demo.say("Belgian network linked: Senneval, Verbois, Hautrieu; the secretariat follows it");
    Ok(demo)
}

/// Plays the story on a started demo.
///
/// # Errors
/// When a node refuses a write (a bug in the demo).
pub async fn play(demo: &Demo) -> Result<(), Box<dyn std::error::Error>> {
    let (tala, senneval, verbois, hautrieu, secretariat) = (0, 1, 2, 3, 4);
    let e = |i: usize| demo.nodes[i].engine.clone();

    demo.say(
        "1. Tala-n-Asif's citizens named dirty streets as ill-being (SPIRAL dimension B): project « Quartier propre »",
    );
    let project = e(tala)
        .create(CreateDoc {
            kind: "project".into(),
            fields: fields(json!({"title": "Quartier propre", "project_kind": "demonstrative_action",
                                 "dimensions": ["SPIRAL:B"], "themes": ["THEME:waste"]})),
            status: Some("co_decided".into()),
            ..CreateDoc::default()
        })
        .await?;
    demo.say("2. Offline, its officer writes a request to its partner Senneval: waste sorting and composting");
    let senneval_id = identity::load(&demo.homes[senneval])?.commune_id();
    let request = e(tala)
        .create(CreateDoc {
            kind: "request".into(),
            fields: fields(json!({
                "title": "Expertise en tri des déchets et compostage de quartier",
                "description": "Le projet « Quartier propre » cherche un savoir-faire en tri et en compostage.",
                "theme": "THEME:waste", "dimensions": ["SPIRAL:B"], "need_types": ["expertise", "mission"],
                "deadline": "2027-03-31", "consent_relay": true, "project": project.id.to_string(),
                "addressee": senneval_id.to_string(),
            })),
            ..CreateDoc::default()
        })
        .await?;
    let req = request.id;
    demo.say(&format!("   (scope « {} »: it goes to Tala-n-Asif's partners only; relaying is allowed)", request.scope));
    demo.say("3. The link comes up: Tala-n-Asif ─── Senneval");
    demo.link(tala, senneval).await?;
    demo.arrives(senneval, req, "the request", |_| true).await;
    demo.say("4. Senneval has no such expertise: it relays the request to the Belgian network");
    let relay = e(senneval).relay(req, Some("Relais vers le réseau belge".into())).await?;
    let rel = relay.id;
    for i in [verbois, hautrieu] {
        demo.arrives(i, rel, "the relayed request (Senneval's, naming Tala-n-Asif's)", |_| true).await;
    }
    demo.arrives(tala, req, "the relay recorded on the original request", |v| {
        v.fields.get("relays").and_then(|r| r.as_array()).is_some_and(|r| !r.is_empty())
    })
    .await;
    demo.arrives(secretariat, rel, "5. a new open network request, seen by the coordinator", |v| {
        v.status.as_deref() == Some("open")
    })
    .await;

    demo.say("6. Hautrieu offers a practice sheet and to host a mission; Verbois offers a leaflet template");
    e(hautrieu)
        .create(CreateDoc {
            kind: "practice".into(),
            fields: fields(json!({"title": "Compostage de quartier", "themes": ["THEME:waste"],
                                 "steps": "Réunir les habitants, choisir un lieu, former des guides-composteurs."})),
            ..CreateDoc::default()
        })
        .await?;
    let offer = e(hautrieu)
        .create(CreateDoc {
            kind: "offer".into(),
            fields: fields(json!({"title": "Accueil d'une mission sur le compostage", "request": rel.to_string(),
                                 "resource_types": ["host_mission", "expertise_days"], "themes": ["THEME:waste"]})),
            ..CreateDoc::default()
        })
        .await?;
    e(verbois)
        .create(CreateDoc {
            kind: "offer".into(),
            fields: fields(json!({"title": "Modèle de dépliant sur le tri", "request": rel.to_string(),
                                 "resource_types": ["documents"]})),
            ..CreateDoc::default()
        })
        .await?;
    demo.arrives(tala, offer.id, "Hautrieu's offer (through Senneval)", |_| true).await;

    demo.say("7. Tala-n-Asif goes offline; meanwhile it extends the deadline and adds an Arabic description");
    demo.unlink(tala, senneval).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    e(tala)
        .update(req, UpdateDoc { fields: fields(json!({"deadline": "2027-06-30"})), ..UpdateDoc::default() })
        .await?;
    e(tala)
        .update(
            req,
            UpdateDoc {
                fields: fields(json!({"description": "مشروع « حي نظيف » يبحث عن خبرة في الفرز والتسميد."})),
                lang: Some("ar".into()),
                ..UpdateDoc::default()
            },
        )
        .await?;
    demo.say("8. At the next window everything converges everywhere, through Senneval");
    demo.link(tala, senneval).await?;
    demo.arrives(senneval, req, "the new deadline and the Arabic text", |v| v.fields["deadline"] == "2027-06-30").await;
    for i in [verbois, hautrieu, secretariat] {
        demo.arrives(i, rel, "the new deadline and the Arabic text (on the relay)", |v| {
            v.fields["deadline"] == "2027-06-30"
        })
        .await;
    }
    demo.say("9. Tala-n-Asif accepts Hautrieu's offer: the request becomes answered");
    e(tala).accept(req, offer.id).await?;
    demo.arrives(senneval, req, "status « answered »", |v| v.status.as_deref() == Some("answered")).await;
    for i in [senneval, verbois, hautrieu, secretariat] {
        demo.arrives(i, rel, "status « answered » (on the relay)", |v| v.status.as_deref() == Some("answered")).await;
    }
    demo.arrives(hautrieu, offer.id, "its offer « accepted »", |v| v.status.as_deref() == Some("accepted")).await;
    demo.say("10. The coordinator sees the request answered; every node holds the same signed history");
    for i in [verbois, hautrieu, secretariat] {
        if demo.nodes[i].engine.get(req, None).await.is_ok() {
            demo.say(&format!("   ✗ {} holds the partnership request: scopes leak", COMMUNES[i].0));
        }
    }
    demo.say("   ✓ the original request never left the partnership Tala-n-Asif ─── Senneval");
    Ok(())
}
