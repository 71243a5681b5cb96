// The coordinators' dashboard: reads /v1/network/state, redraws on every
// server-sent event (at most once a second). No framework, no build step:
// this file is embedded in the node's binary.
"use strict";

const I18N = {
  fr: {
    title: "Observatoire du réseau", graph: "Communes et partenariats", nodes: "Nœuds", requests: "Demandes",
    timeline: "Activité", commune: "Commune", country: "Pays", last_heard: "Dernières nouvelles", via: "Par",
    lag: "Retard", peers: "Pairs", unacked: "Non reçus", queued: "En file", health_ok: "lien sain", health_lagging: "en retard",
    health_down: "coupé", partnership: "partenariat", updated: "Mis à jour", ago: "il y a {t}", never: "jamais",
    direct: "direct", this_node: "ce nœud", candidates: "Offres possibles", answers: "y répond",
    no_requests: "Aucune demande pour l’instant.", first_offer: "première offre en {t}", answered_in: "répondue en {t}",
    stats: "{n} demandes · délai médian jusqu’à une offre : {o} · jusqu’à une réponse : {a}", created: "créée",
    by: "par", unknown: "—", status: {}, kind: { request: "demande", offer: "offre" },
    login: "Connexion requise : lancez « passerelle login » sur le serveur du nœud et ouvrez le lien qu’il affiche.",
  },
  en: {
    title: "Network observatory", graph: "Communes and partnerships", nodes: "Nodes", requests: "Requests",
    timeline: "Activity", commune: "Commune", country: "Country", last_heard: "Last heard", via: "Via",
    lag: "Lag", peers: "Peers", unacked: "Not received", queued: "Queued", health_ok: "healthy link", health_lagging: "lagging",
    health_down: "down", partnership: "partnership", updated: "Updated", ago: "{t} ago", never: "never",
    direct: "direct", this_node: "this node", candidates: "Possible offers", answers: "answers it",
    no_requests: "No requests yet.", first_offer: "first offer after {t}", answered_in: "answered after {t}",
    stats: "{n} requests · median time to an offer: {o} · to an answer: {a}", created: "created",
    by: "by", unknown: "—", status: {}, kind: { request: "request", offer: "offer" },
    login: "Log in: run “passerelle login” on the node's server and open the link it prints.",
  },
  // Dutch and Arabic: labels fall back to English until translated; the
  // layout already follows the language's direction.
  nl: {
    title: "Netwerkobservatorium", requests: "Aanvragen", nodes: "Knooppunten",
    login: "Aanmelden: voer „passerelle login” uit op de server van het knooppunt en open de link die het toont.",
  },
  ar: {
    title: "مرصد الشبكة", requests: "الطلبات", nodes: "العُقد",
    login: "تسجيل الدخول: شغّل الأمر ‎passerelle login‎ على خادم العقدة وافتح الرابط الذي يعرضه.",
  },
};
const RTL = new Set(["ar"]);

function pickLang() {
  const asked = new URLSearchParams(location.search).get("lang");
  if (asked && I18N[asked]) return asked;
  try {
    const kept = localStorage.getItem("passerelle.lang");
    if (kept && I18N[kept]) return kept;
  } catch (_) { /* storage may be off */ }
  return "fr";
}

let lang = pickLang();
let state = null;

function t(key, vars) {
  const text = (I18N[lang] && I18N[lang][key]) ?? I18N.en[key] ?? I18N.fr[key] ?? key;
  if (typeof text !== "string") return text;
  return text.replace(/\{(\w+)\}/g, (_, k) => (vars && k in vars ? vars[k] : ""));
}

// A status in the page's language (the schema names them in French and
// English; other languages show the English name).
function statusLabel(kind, code) {
  const l = state && state.status_labels && state.status_labels[`${kind}/${code}`];
  if (!l) return code;
  return l[lang] ?? l.en ?? code;
}

function duration(seconds) {
  if (seconds == null) return t("unknown");
  if (seconds < 60) return `${seconds} s`;
  if (seconds < 3600) return `${Math.round(seconds / 60)} min`;
  if (seconds < 86400) return `${Math.round(seconds / 3600)} h`;
  return `${Math.round(seconds / 86400)} d`;
}

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c ?? "")));
  return e;
}

function svg(tag, attrs, text) {
  const e = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text != null) e.textContent = text;
  return e;
}

function applyLang() {
  document.documentElement.lang = lang;
  document.documentElement.dir = RTL.has(lang) ? "rtl" : "ltr";
  for (const e of document.querySelectorAll("[data-i18n]")) e.textContent = t(e.dataset.i18n);
  for (const b of document.querySelectorAll("#langs button")) b.setAttribute("aria-pressed", String(b.dataset.lang === lang));
}

function drawGraph(s) {
  const g = document.getElementById("graph");
  g.replaceChildren();
  const members = s.members;
  const cx = 320, cy = 210, r = 160;
  const pos = new Map();
  members.forEach((m, i) => {
    const a = (2 * Math.PI * i) / Math.max(members.length, 1) - Math.PI / 2;
    pos.set(m.commune, { x: cx + r * Math.cos(a), y: cy + r * Math.sin(a), m });
  });
  const communeOfNode = new Map();
  for (const m of members) for (const n of m.nodes) communeOfNode.set(n.node, m.commune);
  for (const p of s.partnerships.filter((p) => p.active)) {
    const a = pos.get(p.a), b = pos.get(p.b);
    if (a && b) g.append(svg("line", { x1: a.x, y1: a.y, x2: b.x, y2: b.y, stroke: "var(--partner)", "stroke-width": 3, "stroke-dasharray": "6 4" }));
  }
  const drawn = new Set();
  for (const l of s.links) {
    const a = pos.get(communeOfNode.get(l.from)), b = pos.get(communeOfNode.get(l.to));
    const key = [l.from, l.to].sort().join("-");
    if (!a || !b || drawn.has(key)) continue;
    drawn.add(key);
    g.append(svg("line", { x1: a.x, y1: a.y, x2: b.x, y2: b.y, stroke: `var(--${l.health})`, "stroke-width": 1.5, "data-health": l.health }));
  }
  for (const { x, y, m } of pos.values()) {
    const heard = m.nodes.length > 0;
    g.append(svg("circle", { cx: x, cy: y, r: 9, fill: heard ? "#fff" : "#eee", stroke: "#333", "stroke-width": 1.5 }));
    g.append(svg("text", { x, y: y + 24, "text-anchor": "middle", "data-commune": m.name }, `${m.name} (${m.country})`));
  }
}

function drawNodes(s) {
  const body = document.querySelector("#nodes tbody");
  body.replaceChildren();
  const now = s.generated_ms;
  for (const m of s.members) {
    const nodes = m.nodes.length ? m.nodes : [null];
    for (const n of nodes) {
      const heard = n ? t("ago", { t: duration(Math.max(0, Math.round((now - n.last_heard_ms) / 1000))) }) : t("never");
      const via = !n ? t("unknown") : n.via == null ? t("this_node") : n.via === m.name ? t("direct") : n.via;
      body.append(el("tr", { "data-commune": m.name },
        el("td", {}, el("bdi", {}, m.name)), el("td", {}, m.country), el("td", {}, heard), el("td", {}, el("bdi", {}, via)),
        el("td", {}, n ? duration(n.lag_s) : "—"), el("td", {}, n ? `${n.peers_connected}/${n.peers_known}` : "—"), el("td", {}, n ? n.unacknowledged : "—"),
        el("td", {}, n ? n.queued : "—")));
    }
  }
}

function drawBoard(s) {
  const rt = s.response_times;
  const total = Object.values(s.requests_by_status).reduce((a, b) => a + b, 0);
  document.getElementById("stats").textContent =
    t("stats", { n: total, o: duration(rt.first_offer_median_s), a: duration(rt.answer_median_s) });
  const board = document.getElementById("board");
  board.replaceChildren();
  if (!s.requests.length) board.append(el("p", {}, t("no_requests")));
  for (const r of s.requests) {
    const meta = [r.owner, r.status ? statusLabel("request", r.status) : "", r.theme ?? "", ...r.dimensions]
      .filter(Boolean).join(" · ");
    const times = [r.first_offer_s != null ? t("first_offer", { t: duration(r.first_offer_s) }) : "",
      r.answered_s != null ? t("answered_in", { t: duration(r.answered_s) }) : ""].filter(Boolean).join(" · ");
    const card = el("article", { class: "request", "data-request-id": r.id },
      el("h3", {}, el("bdi", {}, r.title ?? r.id)), el("p", { class: "meta" }, meta), el("p", { class: "meta" }, times));
    if (r.candidates.length) {
      const list = el("ul", { class: "candidates", "aria-label": t("candidates") });
      for (const c of r.candidates) {
        const why = c.answers ? t("answers") : c.shared.join(", ");
        list.append(el("li", { "data-offer-id": c.id }, el("bdi", {}, c.title ?? c.id), ` — ${c.owner} (${why})`));
      }
      card.append(list);
    }
    board.append(card);
  }
}

function drawTimeline(s) {
  const ol = document.getElementById("timeline");
  ol.replaceChildren();
  for (const e of s.timeline) {
    const when = new Date(e.at_ms).toLocaleString(lang);
    const kind = (t("kind") || {})[e.kind] ?? e.kind;
    const what = e.what === "created" ? t("created") : statusLabel(e.kind, e.what);
    ol.append(el("li", {}, `${when} — ${kind} `, el("bdi", {}, e.title ?? e.doc), ` ${what} ${t("by")} `, el("bdi", {}, e.by)));
  }
}

function render() {
  applyLang();
  if (!state) return;
  document.getElementById("network").textContent = state.network ?? "";
  document.getElementById("updated").textContent =
    `${t("updated")} ${new Date(state.generated_ms).toLocaleTimeString(lang)}`;
  drawGraph(state);
  drawNodes(state);
  drawBoard(state);
  drawTimeline(state);
  document.body.dataset.ready = "1";
}

async function refresh() {
  try {
    const r = await fetch("/v1/network/state");
    if (r.ok) state = await r.json();
    if (r.status === 401) {
      document.getElementById("updated").textContent = t("login");
      document.body.dataset.login = "1";
    }
  } catch (_) { /* the node may be restarting: keep the last view */ }
  render();
}

let pending = null;
function soon() {
  if (pending) return;
  pending = setTimeout(() => { pending = null; refresh(); }, 1000);
}

for (const b of document.querySelectorAll("#langs button")) {
  b.addEventListener("click", () => {
    lang = b.dataset.lang;
    try { localStorage.setItem("passerelle.lang", lang); } catch (_) { /* ignore */ }
    const url = new URL(location.href);
    url.searchParams.set("lang", lang);
    history.replaceState(null, "", url);
    render();
  });
}
// Live by default (server-sent events); `?live=0` polls once a minute
// instead, for a very poor link (and for headless snapshots).
const live = new URLSearchParams(location.search).get("live") !== "0";
if (live && "EventSource" in window) {
  const events = new EventSource("/v1/events");
  for (const kind of ["doc", "heartbeat", "peer", "lagged"]) events.addEventListener(kind, soon);
} else {
  setInterval(refresh, 60000);
}
refresh();
