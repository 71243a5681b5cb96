//! The dashboard in a real browser: Debian's Chromium, headless, loads the
//! page a node serves at `/`, runs its script against the node's API, and
//! the page shows what the API says — the communes, the request and the
//! offer answering it — in French by default, in English with `?lang=en`,
//! right to left in Arabic. Screenshots are kept in
//! `target/test-artifacts/`. The page runs with `?live=0` (polling instead
//! of server-sent events): Chromium's virtual time, which lets the script
//! run before the dump, never ends while a stream is open. The event
//! stream itself is tested in `observatory.rs`.
//!
//! Chromium is `PASSERELLE_CHROMIUM` or `/usr/bin/chromium` (`.ci/run`
//! installs Debian's package when it is missing).

use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{Value, json};

use passerelle_tests::{TestNode, form_network, make_partners, wait_until};

const DEADLINE: Duration = Duration::from_secs(60);

/// Headless, as root, on a machine whose only network is loopback: no
/// sandbox, no GPU, none of Chromium's own background connections.
const HEADLESS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
];

fn chromium() -> PathBuf {
    let path =
        std::env::var_os("PASSERELLE_CHROMIUM").map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from);
    assert!(
        path.exists(),
        "{} not found: install Debian's chromium package (./.ci/run does) or set PASSERELLE_CHROMIUM",
        path.display()
    );
    path
}

fn artifacts() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts");
    std::fs::create_dir_all(&dir).expect("artifact directory");
    dir
}

/// A one-time login link of `node` (`passerelle login`) that goes on to `next`.
fn login(node: &TestNode, next: &str) -> anyhow::Result<String> {
    let url = node.cli_json(&["login"])?["url"].as_str().context("login url")?.to_owned();
    let next: String = next.replace('?', "%3F").replace('&', "%26").replace('=', "%3D");
    Ok(format!("{url}&next={next}"))
}

/// Runs headless Chromium on `url`: dumps the DOM once the page has run,
/// or takes a screenshot when `extra` asks for one; returns stdout.
fn browse(url: &str, extra: &[&str]) -> anyhow::Result<String> {
    let profile = tempfile::tempdir()?;
    let dump: &[&str] = if extra.iter().any(|a| a.starts_with("--screenshot")) { &[] } else { &["--dump-dom"] };
    let out = Command::new(chromium())
        .args(HEADLESS)
        .args([
            "--hide-scrollbars",
            "--window-size=1280,1100",
            // Let the page fetch the state and draw before the dump.
            "--virtual-time-budget=15000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(extra)
        .args(dump)
        .arg(url)
        .output()?;
    anyhow::ensure!(out.status.success(), "chromium failed: {}", String::from_utf8_lossy(&out.stderr));
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Chromium driven over the DevTools protocol on a pipe (its fds 3 and 4,
/// `--remote-debugging-pipe`): to click the language buttons and to watch
/// the page follow the event stream in real time.
struct Devtools {
    child: Child,
    to: std::fs::File,
    from: BufReader<std::fs::File>,
    next: u64,
    session: Option<String>,
    _profile: tempfile::TempDir,
}

fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    #[allow(unsafe_code)]
    // SAFETY: `fds` has room for the two descriptors pipe(2) writes.
    let r = unsafe { libc::pipe(fds.as_mut_ptr()) };
    assert_eq!(r, 0, "pipe");
    #[allow(unsafe_code)]
    // SAFETY: pipe(2) returned two fresh descriptors that nothing else owns.
    unsafe {
        (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1]))
    }
}

impl Devtools {
    fn launch() -> anyhow::Result<Self> {
        let profile = tempfile::tempdir()?;
        let (chrome_reads, we_write) = pipe();
        let (we_read, chrome_writes) = pipe();
        let (r, w) = (chrome_reads.as_raw_fd(), chrome_writes.as_raw_fd());
        let mut cmd = Command::new(chromium());
        cmd.args(HEADLESS)
            .arg("--remote-debugging-pipe")
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        #[allow(unsafe_code)]
        // SAFETY: only dup2(2), which is async-signal-safe, runs between fork and exec.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
                if libc::dup2(r, 3) < 0 || libc::dup2(w, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn()?;
        drop((chrome_reads, chrome_writes));
        Ok(Self {
            child,
            to: std::fs::File::from(we_write),
            from: BufReader::new(std::fs::File::from(we_read)),
            next: 0,
            session: None,
            _profile: profile,
        })
    }

    /// Sends a command and waits for its answer (events are skipped).
    fn call(&mut self, method: &str, params: Value) -> anyhow::Result<Value> {
        self.next += 1;
        let mut msg = json!({"id": self.next, "method": method, "params": params});
        if let Some(s) = &self.session {
            msg["sessionId"] = json!(s);
        }
        self.to.write_all(msg.to_string().as_bytes())?;
        self.to.write_all(&[0])?;
        loop {
            let mut buf = Vec::new();
            anyhow::ensure!(self.from.read_until(0, &mut buf)? > 0, "chromium closed the pipe");
            buf.pop();
            let answer: Value = serde_json::from_slice(&buf)?;
            if answer["id"] == self.next {
                anyhow::ensure!(answer.get("error").is_none(), "{method}: {}", answer["error"]);
                return Ok(answer["result"].clone());
            }
        }
    }

    /// Opens `url` in a new page and talks to that page from then on.
    fn open(&mut self, url: &str) -> anyhow::Result<()> {
        let target = self.call("Target.createTarget", json!({"url": url}))?;
        let attached = self.call("Target.attachToTarget", json!({"targetId": target["targetId"], "flatten": true}))?;
        self.session = attached["sessionId"].as_str().map(str::to_owned);
        Ok(())
    }

    /// Evaluates an expression in the page; its value.
    fn eval(&mut self, expression: &str) -> anyhow::Result<Value> {
        let r = self.call("Runtime.evaluate", json!({"expression": expression, "returnByValue": true}))?;
        Ok(r["result"]["value"].clone())
    }

    /// Waits until the expression is true in the page.
    fn wait_for(&mut self, what: &str, expression: &str) -> anyhow::Result<()> {
        let end = Instant::now() + DEADLINE;
        while self.eval(expression)? != json!(true) {
            anyhow::ensure!(Instant::now() < end, "{what}: not within {DEADLINE:?}");
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(())
    }
}

impl Drop for Devtools {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_dashboard_shows_what_the_api_says_in_each_language() -> anyhow::Result<()> {
    let mut senneval = TestNode::init_p2p("Senneval", "BE")?;
    let mut tala = TestNode::init_p2p("Tala-n-Asif", "MA")?;
    for n in [&senneval, &tala] {
        n.set_network("heartbeat_secs", "1")?;
    }
    senneval.start()?;
    tala.start()?;
    form_network(&senneval, &[&tala])?;
    make_partners(&senneval, &tala)?;
    let request = tala.cli_json(&[
        "request",
        "create",
        "--title",
        "Formation au compostage collectif",
        "--scope",
        "network",
        "--theme",
        "THEME:waste",
    ])?;
    let request_id = request["id"].as_str().unwrap().to_owned();
    wait_until(
        "the request to reach Senneval",
        DEADLINE,
        || Ok(senneval.cli(&["request", "show", &request_id]).code),
        |c| *c == 0,
    )?;
    let offer = senneval.cli_json(&[
        "offer",
        "create",
        "--title",
        "Maître-composteur disponible",
        "--field",
        &format!("request={request_id}"),
    ])?;
    let offer_id = offer["id"].as_str().unwrap().to_owned();
    let state = wait_until(
        "Senneval's state to show both nodes and the offer",
        DEADLINE,
        || Ok(senneval.client()?.network_state()?),
        |s| {
            s.members.iter().all(|m| !m.nodes.is_empty())
                && s.requests.iter().any(|r| r.id.to_string() == request_id && r.candidates.iter().any(|c| c.answers))
        },
    )?;

    let api = std::fs::read_to_string(senneval.home().api_addr())?.trim().to_owned();
    let base = if api.starts_with("http") { api } else { format!("http://{api}") };
    let shots = artifacts();

    // Without a session the page holds no data and says how to log in.
    let dom = browse(&format!("{base}/?live=0"), &[])?;
    assert!(dom.contains("data-login=\"1\"") && dom.contains("passerelle login"), "{dom}");
    assert!(!dom.contains("Formation au compostage collectif"));

    // French, by default.
    let dom = browse(&login(&senneval, "/?live=0")?, &[])?;
    assert!(dom.contains("data-ready=\"1\""), "the script drew the page:\n{dom}");
    assert!(dom.contains("lang=\"fr\"") && dom.contains("Observatoire du réseau") && dom.contains(">Demandes<"));
    for m in &state.members {
        assert!(dom.contains(&format!("data-commune=\"{}\"", m.name)), "{} missing from the graph", m.name);
    }
    assert_eq!(dom.matches("class=\"request\"").count(), state.requests.len(), "one card per request of the API");
    assert!(dom.contains("Formation au compostage collectif"));
    assert!(dom.contains(&format!("data-request-id=\"{request_id}\"")));
    assert!(dom.contains(&format!("data-offer-id=\"{offer_id}\"")), "the answering offer is listed under the request");
    assert!(dom.contains("y répond"));
    assert!(dom.contains("ouverte"), "statuses in French on the board");
    let rows: usize = state.members.iter().map(|m| m.nodes.len().max(1)).sum();
    let tbody = dom.split("<tbody>").nth(1).and_then(|s| s.split("</tbody>").next()).unwrap_or_default();
    assert_eq!(tbody.matches("<tr").count(), rows, "one row per node of the API");

    // English.
    let dom = browse(&login(&senneval, "/?lang=en&live=0")?, &[])?;
    assert!(dom.contains("lang=\"en\"") && dom.contains("Network observatory") && dom.contains(">Requests<"));
    assert!(dom.contains("answers it"));
    assert!(dom.contains("Tala-n-Asif · open"), "statuses in English on the board");
    assert!(!dom.contains("Observatoire du réseau"));

    // Arabic: right to left.
    let dom = browse(&login(&senneval, "/?lang=ar&live=0")?, &[])?;
    assert!(dom.contains("dir=\"rtl\"") && dom.contains("lang=\"ar\""));

    // Screenshots, kept as test artifacts.
    for (lang, file) in [("fr", "dashboard-fr.png"), ("en", "dashboard-en.png"), ("ar", "dashboard-ar.png")] {
        let path = shots.join(file);
        let _ = std::fs::remove_file(&path);
        browse(&login(&senneval, &format!("/?lang={lang}&live=0"))?, &[&format!("--screenshot={}", path.display())])?;
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        assert!(size > 10_000, "{} is {size} bytes", path.display());
    }

    // In a live page: the language buttons switch the page, and a new
    // offer appears on its own (server-sent events).
    let mut browser = Devtools::launch()?;
    browser.open(&login(&senneval, "/")?)?;
    browser.wait_for("the live page to draw", "document.body.dataset.ready === '1'")?;
    assert_eq!(browser.eval("document.documentElement.lang")?, "fr");
    browser.eval("document.querySelector('#langs button[data-lang=en]').click()")?;
    assert_eq!(browser.eval("document.documentElement.lang")?, "en");
    assert_eq!(browser.eval("document.querySelector('h2[data-i18n=requests]').textContent")?, "Requests");
    assert_eq!(browser.eval("new URLSearchParams(location.search).get('lang')")?, "en");
    browser.eval("document.querySelector('#langs button[data-lang=ar]').click()")?;
    assert_eq!(browser.eval("document.documentElement.dir")?, "rtl");
    browser.eval("document.querySelector('#langs button[data-lang=fr]').click()")?;
    assert_eq!(browser.eval("document.querySelector('h2[data-i18n=requests]').textContent")?, "Demandes");
    let late = senneval.cli_json(&[
        "offer",
        "create",
        "--title",
        "Offre arrivée en direct",
        "--field",
        &format!("request={request_id}"),
    ])?;
    let late_id = late["id"].as_str().unwrap().to_owned();
    browser.wait_for(
        "the new offer to appear without a reload",
        &format!("!!document.querySelector('[data-offer-id=\"{late_id}\"]')"),
    )?;
    drop(browser);

    // An unknown asset is a 404 with a reason.
    let host = base.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(host)?;
    std::io::Write::write_all(
        &mut s,
        format!("GET /assets/nope.js HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
    )?;
    let mut answer = String::new();
    std::io::Read::read_to_string(&mut s, &mut answer)?;
    assert!(answer.starts_with("HTTP/1.1 404") && answer.contains("no asset"), "{answer}");
    senneval.terminate()?;
    tala.terminate()?;
    Ok(())
}
