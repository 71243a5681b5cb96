//! `passerelle`: run a commune's node and talk to it.
//!
//! Thin by design: parse arguments, set up logging, call the node library or
//! its API client, render the answer, exit with a documented code
//! (`docs/cli.md`): 0 ok, 1 failed, 2 usage, 3 node not reachable.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use passerelle_node::client::ClientError;
use passerelle_node::home::Home;

mod cmd;
mod output;

/// Passerelle: federated sync nodes for territories that cooperate across
/// borders. Each commune runs a node holding its own signed documents.
#[derive(Debug, Parser)]
#[command(name = "passerelle", version, propagate_version = true, max_term_width = 100)]
struct Cli {
    /// The node's home directory [default: $PASSERELLE_HOME, else the
    /// platform's data directory]/passerelle.
    #[arg(long, global = true, value_name = "DIR")]
    home: Option<PathBuf>,
    /// Print the result as one JSON object on stdout.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create this commune's identity: its key, a node key it certifies, and
    /// a configuration file. Never overwrites an existing identity.
    Init(cmd::init::Args),
    /// Show this commune's and node's ids.
    Id,
    /// Run the node until Ctrl-C or SIGTERM.
    Run(cmd::run::Args),
    /// Start a local demo federation (five communes on loopback) and play
    /// the story of a request relayed across the network.
    Demo(cmd::demo::Args),
    /// Show the running node's ids, addresses and document counts.
    Status,
    /// Print a one-time link that opens the node's web pages in a browser
    /// (valid 5 minutes; the session lasts 12 hours).
    Login,
    /// This commune's profile.
    #[command(subcommand)]
    Profile(cmd::docs::ProfileCommand),
    /// Projects (demonstrative actions, co-responsibility actions, ...).
    #[command(subcommand)]
    Project(cmd::docs::DocCommand),
    /// Requests: needs a commune asks help for.
    #[command(subcommand)]
    Request(cmd::docs::RequestCommand),
    /// Offers: capabilities, or answers to requests.
    #[command(subcommand)]
    Offer(cmd::docs::DocCommand),
    /// Practice and method sheets.
    #[command(subcommand)]
    Practice(cmd::docs::DocCommand),
    /// Follow-ups: a coordinator's tags and next steps on a document, or an
    /// observer's comment (never a change to the document itself).
    #[command(subcommand)]
    Followup(cmd::docs::DocCommand),
    /// Show every change of a document: author, key, time, what changed.
    History(cmd::history::Args),
    /// Re-check every stored signature and record, and name what fails
    /// (through the running node, or on the store of a stopped one).
    Verify,
    /// On a stopped node: set damaged records aside (into the store's
    /// quarantine), rebuild what can be rebuilt; dropped documents come
    /// back from the peers at the next sync.
    Repair,
    /// Add or remove a peer node.
    #[command(subcommand)]
    Peer(cmd::peers::PeerCommand),
    /// List peers: connected or not, last sync, bytes, last error.
    Peers,
    /// The network: found one, show it, remove a member, revoke a key.
    #[command(subcommand)]
    Network(cmd::network::NetworkCommand),
    /// Issue a single-use invitation for a new member (coordinators).
    Invite(cmd::network::InviteArgs),
    /// Join a network with an invitation token.
    Join(cmd::network::JoinArgs),
    /// List the network's members and their roles.
    Members,
    /// Propose, accept or end a partnership with a commune of another country.
    #[command(subcommand)]
    Partner(cmd::network::PartnerCommand),
    /// List partnerships: active, or waiting for the other side.
    Partners,
    /// Offline bundles: export what a partner lacks to a file, import one.
    #[command(subcommand)]
    Bundle(cmd::bundle::BundleCommand),
    /// The node key: rotate it.
    #[command(subcommand)]
    Key(cmd::key::KeyCommand),
    /// Measure performance (prints JSON lines; see shared BENCH.md).
    #[command(subcommand)]
    Bench(cmd::bench::BenchCommand),
}

/// Exit codes (docs/cli.md).
pub mod exit {
    /// The command failed.
    pub const FAILED: u8 = 1;
    /// The command line is wrong (clap uses 2 as well).
    pub const USAGE: u8 = 2;
    /// No node answers for this home.
    pub const NOT_REACHABLE: u8 = 3;
}

fn init_tracing(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let json = std::env::var("PASSERELLE_LOG_FORMAT").is_ok_and(|v| v == "json");
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let is_run = matches!(cli.command, Command::Run(_) | Command::Bench(_));
    init_tracing(if is_run { "info" } else { "warn" });
    let home = Home::resolve(cli.home.as_deref());
    let out = output::Output::new(cli.json);
    let result = match cli.command {
        Command::Init(args) => cmd::init::run(&home, args, &out),
        Command::Id => cmd::init::show_id(&home, &out),
        Command::Run(args) => cmd::run::run(&home, args),
        Command::Demo(args) => cmd::demo::run(args),
        Command::Status => cmd::status::run(&home, &out),
        Command::Login => cmd::status::login(&home, &out),
        Command::Profile(c) => cmd::docs::run_profile(&home, c, &out),
        Command::Project(c) => cmd::docs::run(&home, "project", c, &out),
        Command::Request(c) => cmd::docs::run_request(&home, c, &out),
        Command::Offer(c) => cmd::docs::run(&home, "offer", c, &out),
        Command::Practice(c) => cmd::docs::run(&home, "practice", c, &out),
        Command::Followup(c) => cmd::docs::run(&home, "followup", c, &out),
        Command::History(args) => cmd::history::run(&home, args, &out),
        Command::Verify => cmd::verify::run(&home, &out),
        Command::Repair => cmd::verify::repair(&home, &out),
        Command::Peer(c) => cmd::peers::run(&home, c, &out),
        Command::Peers => cmd::peers::list(&home, &out),
        Command::Network(c) => cmd::network::run(&home, c, &out),
        Command::Invite(args) => cmd::network::invite(&home, args, &out),
        Command::Join(args) => cmd::network::join(&home, args, &out),
        Command::Members => cmd::network::members(&home, &out),
        Command::Partner(c) => cmd::network::partner(&home, c, &out),
        Command::Partners => cmd::network::partners(&home, &out),
        Command::Bundle(c) => cmd::bundle::run(&home, c, &out),
        Command::Key(c) => cmd::key::run(&home, c, &out),
        Command::Bench(c) => cmd::bench::run(c, &out),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            let code = match e.downcast_ref::<ClientError>() {
                Some(ClientError::NotReachable { .. }) => exit::NOT_REACHABLE,
                _ if e.downcast_ref::<cmd::UsageError>().is_some() => exit::USAGE,
                _ => exit::FAILED,
            };
            eprintln!("error: {e:#}");
            ExitCode::from(code)
        }
    }
}
