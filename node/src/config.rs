//! The node's configuration file (`config.toml` in its home).

use std::net::SocketAddr;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// Default port of the local API.
pub const DEFAULT_API_PORT: u16 = 7420;
/// Default number of Automerge documents kept in memory.
pub const DEFAULT_CACHED_DOCUMENTS: usize = 256;

/// Errors reading or writing the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read or written.
    #[error("cannot access {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("invalid configuration in {path}: {reason}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
}

/// Who this node speaks for.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CommuneConfig {
    /// The commune's name.
    pub name: String,
    /// ISO 3166-1 alpha-2 country code.
    pub country: String,
    /// Language of text typed without a language (French by default).
    #[serde(default = "default_language")]
    pub language: String,
}

fn default_language() -> String {
    "fr".into()
}

/// The local HTTP API.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ApiConfig {
    /// Address to listen on; port 0 picks any free port. Loopback by
    /// default. Reads need the token or a browser session (`passerelle
    /// login`), writes need the token.
    #[serde(default = "default_api_listen")]
    pub listen: SocketAddr,
    /// Host names, besides IP addresses and `localhost`, that browsers may
    /// use to reach the API (e.g. `passerelle.senneval.be` behind a reverse
    /// proxy). Any other name in `Host` is refused (DNS rebinding).
    #[serde(default)]
    pub hosts: Vec<String>,
}

fn default_api_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], DEFAULT_API_PORT))
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self { listen: default_api_listen(), hosts: Vec::new() }
    }
}

/// The document store.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct StoreConfig {
    /// How many Automerge documents stay loaded; others are loaded on demand.
    #[serde(default = "default_cached")]
    pub cached_documents: usize,
}

fn default_cached() -> usize {
    DEFAULT_CACHED_DOCUMENTS
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self { cached_documents: DEFAULT_CACHED_DOCUMENTS }
    }
}

/// Default libp2p port (TCP and QUIC).
pub const DEFAULT_P2P_PORT: u16 = 7421;
/// Default seconds between anti-entropy rounds with each peer.
pub const DEFAULT_ANTI_ENTROPY_SECS: u64 = 30;

/// The peer-to-peer side.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NetworkConfig {
    /// Multiaddrs to listen on: TCP and QUIC on all interfaces by default.
    #[serde(default = "default_listen")]
    pub listen: Vec<String>,
    /// Discover peers on the local network with mDNS (off by default: a
    /// commune's node should only talk to the peers it was told about).
    #[serde(default)]
    pub mdns: bool,
    /// Seconds between anti-entropy rounds with each connected peer.
    #[serde(default = "default_anti_entropy")]
    pub anti_entropy_secs: u64,
    /// Link up on its own with partners and with members of the same
    /// country when the roster first names them (from the contact
    /// addresses they joined with). Peers removed by hand stay removed.
    #[serde(default = "default_true")]
    pub auto_links: bool,
    /// Serve as a circuit relay (libp2p relay v2) for the nodes that
    /// connect to this one: a node with a public address lets nodes behind
    /// NAT be reached through it. Off by default.
    #[serde(default)]
    pub relay_server: bool,
    /// With `relay_server`: relay for any peer, not only for the registered
    /// nodes of the network's members (the default).
    #[serde(default)]
    pub relay_for_anyone: bool,
    /// Relays this node uses (multiaddrs ending in `/p2p/<peer id>`, e.g.
    /// a partner's node with a public address): it stays reachable through
    /// each (a reservation), and dials through them the peers it cannot
    /// reach directly. A relayed connection is upgraded to a direct one by
    /// hole punching (DCUtR) when the NATs allow it. Nodes that use or
    /// serve relays also run AutoNAT, which tells whether this node can be
    /// dialled (`passerelle status`).
    #[serde(default)]
    pub relays: Vec<String>,
    /// Most bytes per second sent to any one peer, to leave room on a
    /// shared or metered link (absent: no cap).
    #[serde(default)]
    pub peer_budget_bytes_per_s: Option<u64>,
    /// Seconds between two signed heartbeats of this node (its status, as
    /// coordinators see it network-wide).
    #[serde(default = "default_heartbeat")]
    pub heartbeat_secs: u64,
}

/// A heartbeat a minute: a few hundred bytes per node and minute.
pub const DEFAULT_HEARTBEAT_SECS: u64 = 60;

fn default_heartbeat() -> u64 {
    DEFAULT_HEARTBEAT_SECS
}

fn default_true() -> bool {
    true
}

fn default_listen() -> Vec<String> {
    vec![format!("/ip4/0.0.0.0/tcp/{DEFAULT_P2P_PORT}"), format!("/ip4/0.0.0.0/udp/{DEFAULT_P2P_PORT}/quic-v1")]
}

fn default_anti_entropy() -> u64 {
    DEFAULT_ANTI_ENTROPY_SECS
}

impl Default for NetworkConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            mdns: false,
            anti_entropy_secs: DEFAULT_ANTI_ENTROPY_SECS,
            auto_links: true,
            relay_server: false,
            relay_for_anyone: false,
            relays: Vec::new(),
            peer_budget_bytes_per_s: None,
            heartbeat_secs: DEFAULT_HEARTBEAT_SECS,
        }
    }
}

/// The whole configuration file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Config {
    /// Who this node speaks for.
    pub commune: CommuneConfig,
    /// The local API.
    #[serde(default)]
    pub api: ApiConfig,
    /// The store.
    #[serde(default)]
    pub store: StoreConfig,
    /// The peer-to-peer side.
    #[serde(default)]
    pub network: NetworkConfig,
}

impl Config {
    /// A configuration with defaults for a commune.
    pub fn new(name: &str, country: &str, api_port: u16) -> Self {
        Self {
            commune: CommuneConfig { name: name.to_owned(), country: country.to_owned(), language: default_language() },
            api: ApiConfig { listen: SocketAddr::from(([127, 0, 0, 1], api_port)), hosts: Vec::new() },
            store: StoreConfig::default(),
            network: NetworkConfig::default(),
        }
    }

    /// Reads and checks a configuration file.
    ///
    /// # Errors
    /// [`ConfigError`] naming the file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Io { path: path.display().to_string(), source })?;
        let config: Config = toml::from_str(&text)
            .map_err(|e| ConfigError::Invalid { path: path.display().to_string(), reason: e.to_string() })?;
        if config.network.anti_entropy_secs == 0 {
            return Err(ConfigError::Invalid {
                path: path.display().to_string(),
                reason: "network.anti_entropy_secs must be at least 1".into(),
            });
        }
        if config.store.cached_documents == 0 {
            return Err(ConfigError::Invalid {
                path: path.display().to_string(),
                reason: "store.cached_documents must be at least 1".into(),
            });
        }
        Ok(config)
    }

    /// Writes the configuration, refusing to replace an existing file.
    ///
    /// # Errors
    /// [`ConfigError::Io`], including when the file exists.
    pub fn write_new(&self, path: &Path) -> Result<(), ConfigError> {
        use std::io::Write;
        let text = format!(
            "# Passerelle node configuration.\n# See docs/cli.md; changes take effect at the next `passerelle run`.\n\n{}",
            toml::to_string(self).expect("the configuration always serializes")
        );
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(|source| ConfigError::Io { path: path.display().to_string(), source })?;
        file.write_all(text.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|source| ConfigError::Io { path: path.display().to_string(), source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_config_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        let config = Config::new("Senneval", "BE", 0);
        config.write_new(&path).unwrap();
        assert_eq!(Config::load(&path).unwrap(), config);
        assert!(config.write_new(&path).is_err(), "an existing config is never overwritten");
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, "[commune]\nname = \"Verbois\"\ncountry = \"BE\"\n").unwrap();
        let config = Config::load(&path).unwrap();
        assert_eq!(config.api.listen.port(), DEFAULT_API_PORT);
        assert_eq!(config.commune.language, "fr");
        std::fs::write(&path, "[commune]\nname = 3\n").unwrap();
        assert!(Config::load(&path).unwrap_err().to_string().contains("invalid configuration"));
    }
}
