//! # passerelle-tests
//!
//! The harness for workspace-level tests: real `passerelle` processes, each
//! in its own temporary home, on loopback with ports chosen by the OS. Tests
//! act through the real CLI (or the API client the CLI uses), wait for
//! conditions with deadlines (never a bare sleep), and can kill a node with
//! SIGKILL or stop it with SIGTERM.
//!
//! The binary is found through `PASSERELLE_BIN`, else next to the test
//! executable (`target/<profile>/passerelle`, which `cargo test --workspace`
//! builds because the `passerelle` package has integration tests).
#![warn(missing_docs)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use passerelle_node::client::ApiClient;
use passerelle_node::home::Home;
use serde_json::Value;

pub mod rogue;

/// How long a node may take to start answering.
pub const START_DEADLINE: Duration = Duration::from_secs(30);

/// The `passerelle` binary under test.
///
/// # Panics
/// If it cannot be found: build it with `cargo build -p passerelle`.
pub fn passerelle_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("PASSERELLE_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("the test knows its own path");
    // target/<profile>/deps/<test> -> target/<profile>/passerelle
    let dir = exe.parent().and_then(Path::parent).expect("tests run from target/<profile>/deps");
    let bin = dir.join(format!("passerelle{}", std::env::consts::EXE_SUFFIX));
    assert!(bin.exists(), "{} not found: run `cargo build -p passerelle` or set PASSERELLE_BIN", bin.display());
    bin
}

/// What a CLI invocation returned.
#[derive(Debug)]
pub struct CliResult {
    /// Exit code (-1 if killed by a signal).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl CliResult {
    fn from_output(o: Output) -> Self {
        Self {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    /// Standard output parsed as JSON.
    ///
    /// # Panics
    /// If it is not JSON, showing both streams.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}\nstderr:\n{}", self.stdout, self.stderr))
    }
}

/// A node under test: a temporary home and, while running, its process.
#[derive(Debug)]
pub struct TestNode {
    /// The commune's name.
    pub name: String,
    /// Its country code.
    pub country: String,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl TestNode {
    /// Creates a home and an identity (`passerelle init`) with a free API port
    /// and a libp2p listener on a free loopback port.
    ///
    /// # Errors
    /// When `init` fails.
    pub fn init(name: &str, country: &str) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix(&format!("passerelle-{}-", name.to_lowercase())).tempdir()?;
        let node = Self { name: name.to_owned(), country: country.to_owned(), dir, child: None };
        let r = node.cli(&[
            "init",
            "--name",
            name,
            "--country",
            country,
            "--api-port",
            "0",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
        ]);
        if r.code != 0 {
            bail!("init failed: {}", r.stderr);
        }
        Ok(node)
    }

    /// Creates a node that listens for peers on loopback only, on a port
    /// the OS picks, with anti-entropy every second.
    ///
    /// # Errors
    /// When `init` fails.
    pub fn init_p2p(name: &str, country: &str) -> anyhow::Result<Self> {
        let node = Self::init(name, country)?;
        let path = node.home().config();
        let config = std::fs::read_to_string(&path)?;
        std::fs::write(&path, config.replace("anti_entropy_secs = 30", "anti_entropy_secs = 1"))?;
        Ok(node)
    }

    /// Replaces the libp2p listen addresses in the configuration (before start).
    ///
    /// # Errors
    /// When the configuration cannot be rewritten.
    pub fn set_listen(&self, addrs: &[&str]) -> anyhow::Result<()> {
        let path = self.home().config();
        let config = std::fs::read_to_string(&path)?;
        let list: Vec<String> = addrs.iter().map(|a| format!("\"{a}\"")).collect();
        let mut out = String::new();
        for line in config.lines() {
            if line.starts_with("listen = [\"/") {
                out.push_str(&format!("listen = [{}]\n", list.join(", ")));
            } else {
                out.push_str(line);
                out.push('\n');
            }
        }
        std::fs::write(&path, out)?;
        Ok(())
    }

    /// Sets `key = value` (TOML) in the `[network]` section of the
    /// configuration (before start).
    ///
    /// # Errors
    /// When the configuration cannot be rewritten.
    pub fn set_network(&self, key: &str, value: &str) -> anyhow::Result<()> {
        let path = self.home().config();
        let config = std::fs::read_to_string(&path)?;
        let mut out = String::new();
        let mut section = "";
        let mut done = false;
        for line in config.lines() {
            if line.starts_with('[') {
                if section == "[network]" && !done {
                    out.push_str(&format!("{key} = {value}\n"));
                    done = true;
                }
                section = line.trim();
            }
            if section == "[network]" && line.split('=').next().is_some_and(|k| k.trim() == key) {
                out.push_str(&format!("{key} = {value}\n"));
                done = true;
                continue;
            }
            out.push_str(line);
            out.push('\n');
        }
        if !done {
            anyhow::ensure!(section == "[network]", "no [network] section in {}", path.display());
            out.push_str(&format!("{key} = {value}\n"));
        }
        std::fs::write(&path, out)?;
        Ok(())
    }

    /// This node's id.
    ///
    /// # Errors
    /// When the identity cannot be read.
    pub fn node_id(&self) -> anyhow::Result<String> {
        Ok(self.cli_json(&["id"])?["node_id"].as_str().context("node_id")?.to_owned())
    }

    /// This node's commune id.
    ///
    /// # Errors
    /// When the identity cannot be read.
    pub fn commune_id(&self) -> anyhow::Result<String> {
        Ok(self.cli_json(&["id"])?["commune_id"].as_str().context("commune_id")?.to_owned())
    }

    /// The running node's first libp2p listen address.
    ///
    /// # Errors
    /// When the node does not answer.
    pub fn p2p_addr(&self) -> anyhow::Result<String> {
        let status = self.cli_json(&["status"])?;
        Ok(status["listen"][0].as_str().context("no listen address")?.to_owned())
    }

    /// Tells this node to connect to `other` (which must be running).
    ///
    /// # Errors
    /// When `peer add` fails.
    pub fn connect_to(&self, other: &TestNode) -> anyhow::Result<()> {
        let r = self.cli(&["peer", "add", &other.node_id()?, &other.p2p_addr()?]);
        if r.code != 0 {
            bail!("peer add failed: {}", r.stderr);
        }
        Ok(())
    }

    /// Every document this node holds, with its heads: `id -> heads`.
    ///
    /// # Errors
    /// When the node does not answer.
    pub fn doc_heads(&self) -> anyhow::Result<std::collections::BTreeMap<String, Vec<String>>> {
        let docs = self.client()?.list(None, None, None)?;
        Ok(docs
            .into_iter()
            .map(|d| {
                let mut heads = d.heads;
                heads.sort();
                (d.id.to_string(), heads)
            })
            .collect())
    }

    /// The home directory.
    pub fn home(&self) -> Home {
        Home::new(self.dir.path())
    }

    /// Runs the CLI on this node's home.
    pub fn cli(&self, args: &[&str]) -> CliResult {
        let out = Command::new(passerelle_bin())
            .args(args)
            .arg("--home")
            .arg(self.dir.path())
            .env_remove("PASSERELLE_HOME")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .output()
            .expect("the passerelle binary runs");
        CliResult::from_output(out)
    }

    /// Runs the CLI with `--json` and parses the answer; fails on a non-zero exit.
    ///
    /// # Errors
    /// When the command fails, with its stderr.
    pub fn cli_json(&self, args: &[&str]) -> anyhow::Result<Value> {
        let mut all = args.to_vec();
        all.push("--json");
        let r = self.cli(&all);
        if r.code != 0 {
            bail!("`passerelle {}` exited {}: {}", args.join(" "), r.code, r.stderr);
        }
        Ok(r.json())
    }

    /// Starts `passerelle run` and waits until its API answers.
    ///
    /// # Errors
    /// When the node does not answer before [`START_DEADLINE`].
    pub fn start(&mut self) -> anyhow::Result<()> {
        assert!(self.child.is_none(), "{} is already running", self.name);
        // A node killed with SIGKILL leaves its address file behind.
        let _ = std::fs::remove_file(self.home().api_addr());
        let log = std::fs::File::create(self.dir.path().join("node.log"))?;
        let child = Command::new(passerelle_bin())
            .args(["run", "--home"])
            .arg(self.dir.path())
            .env_remove("PASSERELLE_HOME")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("spawn passerelle run")?;
        self.child = Some(child);
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            if let Ok(client) = self.client()
                && client.status().is_ok()
            {
                return Ok(());
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                self.child = None;
                bail!("{} exited with {status} while starting; log:\n{}", self.name, self.log());
            }
            if Instant::now() > deadline {
                bail!("{} did not answer within {:?}; log:\n{}", self.name, START_DEADLINE, self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The process id of the running node, to read its memory and CPU.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The API client of the running node.
    ///
    /// # Errors
    /// When the node has not written its address.
    pub fn client(&self) -> anyhow::Result<ApiClient> {
        Ok(ApiClient::for_home(&self.home())?)
    }

    /// The node's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("node.log")).unwrap_or_default()
    }

    /// Kills the node with SIGKILL: no shutdown, no flush.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the node with SIGTERM and waits for it to exit; returns its exit code.
    ///
    /// # Errors
    /// When it does not exit within 20 s (it is then killed).
    pub fn terminate(&mut self) -> anyhow::Result<i32> {
        let Some(mut child) = self.child.take() else { bail!("{} is not running", self.name) };
        send_signal(child.id(), libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status.code().unwrap_or(-1));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                bail!("{} ignored SIGTERM for 20 s; log:\n{}", self.name, self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the process is running.
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        self.kill9();
    }
}

#[allow(unsafe_code)]
fn send_signal(pid: u32, signal: i32) {
    // SAFETY: kill(2) with a pid we spawned and a valid signal number has no
    // memory-safety preconditions.
    unsafe {
        libc::kill(pid as i32, signal);
    }
}

/// Waits until every node holds the same documents with the same heads
/// (and at least `min_docs` of them); on timeout, reports what each holds.
///
/// # Errors
/// On timeout.
pub fn wait_converged(nodes: &[&TestNode], min_docs: usize, deadline: Duration) -> anyhow::Result<()> {
    let end = Instant::now() + deadline;
    loop {
        let states: Vec<_> = nodes.iter().map(|n| n.doc_heads()).collect::<anyhow::Result<_>>()?;
        if states[0].len() >= min_docs && states.windows(2).all(|w| w[0] == w[1]) {
            return Ok(());
        }
        if Instant::now() > end {
            let mut report = String::new();
            for (n, s) in nodes.iter().zip(&states) {
                report.push_str(&format!("\n  {}: {} docs", n.name, s.len()));
                for (id, heads) in s {
                    report.push_str(&format!(
                        "\n    {} {:?}",
                        &id[..8],
                        heads.iter().map(|h| &h[..8]).collect::<Vec<_>>()
                    ));
                }
            }
            bail!("no convergence within {deadline:?}:{report}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Founds a network on `coordinator` (running) and admits each member
/// (running) through its own invitation, then waits until every node knows
/// every member. Each member is left connected to the coordinator's node.
///
/// # Errors
/// When a step fails or the rosters do not meet in time.
pub fn form_network(coordinator: &TestNode, members: &[&TestNode]) -> anyhow::Result<()> {
    coordinator.cli_json(&["network", "create", "--name", "Réseau de test"])?;
    for m in members {
        let inv = coordinator.cli_json(&["invite", "--name", &m.name, "--country", &m.country])?;
        let token = inv["token"].as_str().context("token")?;
        let r = m.cli(&["join", token]);
        if r.code != 0 {
            bail!("{} could not join: {}", m.name, r.stderr);
        }
    }
    let everyone: Vec<&TestNode> = std::iter::once(coordinator).chain(members.iter().copied()).collect();
    for n in &everyone {
        wait_until(
            &format!("{} to know every member", n.name),
            Duration::from_secs(30),
            || Ok(n.cli_json(&["members"])?.as_array().map_or(0, Vec::len)),
            |count| *count == everyone.len(),
        )?;
    }
    Ok(())
}

/// Starts one node per `(name, country)` on loopback and forms a network:
/// the first founds it and invites the others, who join through it.
///
/// # Errors
/// When a node cannot start or join.
pub fn federation<const N: usize>(communes: [(&str, &str); N]) -> anyhow::Result<[TestNode; N]> {
    let mut nodes = Vec::with_capacity(N);
    for (name, country) in communes {
        let mut node = TestNode::init_p2p(name, country)?;
        node.start()?;
        nodes.push(node);
    }
    if let Some((first, rest)) = nodes.split_first() {
        let rest: Vec<&TestNode> = rest.iter().collect();
        form_network(first, &rest)?;
    }
    nodes.try_into().map_err(|_| anyhow::anyhow!("node count"))
}

/// Makes `a` and `b` (members of two countries, running) partners and waits
/// until both see the partnership active.
///
/// # Errors
/// When a step fails or the partnership is not seen in time.
pub fn make_partners(a: &TestNode, b: &TestNode) -> anyhow::Result<()> {
    a.cli_json(&["partner", "propose", &b.commune_id()?])?;
    wait_until(
        &format!("{} to see {}'s proposal", b.name, a.name),
        Duration::from_secs(30),
        || Ok(b.cli(&["partner", "accept", &a.commune_id()?]).code),
        |code| *code == 0,
    )?;
    for n in [a, b] {
        wait_until(
            &format!("{} to see the partnership active", n.name),
            Duration::from_secs(30),
            || n.cli_json(&["partners"]),
            |p| p.as_array().is_some_and(|l| l.iter().any(|p| p["active"] == true)),
        )?;
    }
    Ok(())
}

/// Forgets every peer of `node` (so it is cut from everyone) and waits
/// until no connection is left.
///
/// # Errors
/// When a step fails.
pub fn disconnect_all(node: &TestNode) -> anyhow::Result<()> {
    for p in node.cli_json(&["peers"])?.as_array().context("peers")? {
        let id = p["node"].as_str().context("node")?;
        node.cli(&["peer", "remove", id]);
    }
    wait_until(
        &format!("{} to have no connection", node.name),
        Duration::from_secs(30),
        || Ok(node.cli_json(&["status"])?["peers_connected"].clone()),
        |c| c == 0,
    )?;
    Ok(())
}

/// Waits until `cond` holds, checking every 50 ms, or fails after `deadline`
/// with `what` and the last observation.
///
/// # Errors
/// On timeout.
pub fn wait_until<T: std::fmt::Debug>(
    what: &str,
    deadline: Duration,
    mut probe: impl FnMut() -> anyhow::Result<T>,
    mut cond: impl FnMut(&T) -> bool,
) -> anyhow::Result<T> {
    let end = Instant::now() + deadline;
    loop {
        let last = probe();
        if let Ok(v) = &last
            && cond(v)
        {
            return last;
        }
        if Instant::now() > end {
            bail!("timed out after {deadline:?} waiting for {what}; last observation: {last:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
