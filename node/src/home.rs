//! The node's home directory: where its configuration, keys, store and
//! run-time files live, and how its location is chosen.

use std::path::{Path, PathBuf};

/// Environment variable naming the home when `--home` is not given.
pub const HOME_ENV: &str = "PASSERELLE_HOME";

/// The paths inside a node's home.
#[derive(Debug, Clone)]
pub struct Home {
    root: PathBuf,
}

impl Home {
    /// A home at `root` (not created).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The home to use: `explicit` if given, else `$PASSERELLE_HOME`, else
    /// `passerelle` in the platform's data directory, else `./passerelle-home`.
    pub fn resolve(explicit: Option<&Path>) -> Self {
        if let Some(p) = explicit {
            return Self::new(p);
        }
        if let Some(p) = std::env::var_os(HOME_ENV).filter(|v| !v.is_empty()) {
            return Self::new(p);
        }
        match dirs::data_dir() {
            Some(d) => Self::new(d.join("passerelle")),
            None => Self::new("passerelle-home"),
        }
    }

    /// The home directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `config.toml`.
    pub fn config(&self) -> PathBuf {
        self.root.join("config.toml")
    }

    /// The directory holding key files.
    pub fn keys(&self) -> PathBuf {
        self.root.join("keys")
    }

    /// The commune's secret key.
    pub fn commune_key(&self) -> PathBuf {
        self.keys().join("commune.key")
    }

    /// The node's secret key.
    pub fn node_key(&self) -> PathBuf {
        self.keys().join("node.key")
    }

    /// The commune's certificate of the node key.
    pub fn node_certificate(&self) -> PathBuf {
        self.keys().join("node.cert")
    }

    /// The sled store.
    pub fn store(&self) -> PathBuf {
        self.root.join("store")
    }

    /// Written by a running node: the address its API listens on.
    pub fn api_addr(&self) -> PathBuf {
        self.root.join("api.addr")
    }

    /// The API token that write requests must carry (mode 0600).
    pub fn api_token(&self) -> PathBuf {
        self.root.join("api.token")
    }
}
