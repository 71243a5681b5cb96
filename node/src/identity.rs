//! The commune's identity on disk: its key, the node key it certifies, the
//! certificate, and the configuration that names the commune.
//!
//! Key files are created with mode 0600 inside a 0700 directory and are never
//! overwritten: `init` refuses a home that already holds an identity.

use std::io::Write;
use std::path::{Path, PathBuf};

use passerelle_protocol::certificate::NodeCertificate;
use passerelle_protocol::codes;
use passerelle_protocol::ids::{CommuneId, NodeId};
use passerelle_protocol::keys::SecretKey;

use crate::clock;
use crate::config::{Config, ConfigError};
use crate::home::Home;

const COMMUNE_KEY_LABEL: &str = "PASSERELLE COMMUNE SECRET KEY";
const NODE_KEY_LABEL: &str = "PASSERELLE NODE SECRET KEY";
/// Longest commune name accepted.
pub const MAX_NAME_CHARS: usize = 100;

/// Errors creating or loading an identity.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// `init` found an identity already there.
    #[error("an identity already exists in {0}: it is never overwritten (use another --home)")]
    AlreadyExists(PathBuf),
    /// No identity in the home.
    #[error("no identity in {0}: create one with `passerelle init --name <commune> --country <code> --home {0}`")]
    Missing(PathBuf),
    /// A file could not be read or written.
    #[error("cannot access {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A key or certificate file is damaged.
    #[error("damaged key file {path}: {reason}")]
    BadKeyFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The configuration could not be read or written.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The name or country given is not acceptable.
    #[error("{0}")]
    InvalidInput(String),
}

/// A loaded identity.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The commune's long-term key.
    pub commune_key: SecretKey,
    /// The node's key: signs changes, and identifies the node on the wire.
    pub node_key: SecretKey,
    /// The commune's certificate of the node key.
    pub certificate: NodeCertificate,
    /// The node's configuration.
    pub config: Config,
}

impl Identity {
    /// The commune's id.
    pub fn commune_id(&self) -> CommuneId {
        self.commune_key.commune_id()
    }

    /// The node's id.
    pub fn node_id(&self) -> NodeId {
        self.node_key.node_id()
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> IdentityError + '_ {
    move |source| IdentityError::Io { path: path.to_owned(), source }
}

/// Checks and normalises a commune name and country code.
///
/// # Errors
/// [`IdentityError::InvalidInput`] saying what is wrong.
pub fn check_commune(name: &str, country: &str) -> Result<(String, String), IdentityError> {
    let name = name.trim();
    if name.is_empty() {
        return Err(IdentityError::InvalidInput("the commune name must not be empty".into()));
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(IdentityError::InvalidInput(format!(
            "the commune name is longer than {MAX_NAME_CHARS} characters"
        )));
    }
    let country_up = country.trim().to_ascii_uppercase();
    if !codes::is_country(&country_up) {
        return Err(IdentityError::InvalidInput(format!(
            "{country:?} is not an ISO 3166-1 alpha-2 country code (e.g. BE, MA)"
        )));
    }
    Ok((name.to_owned(), country_up))
}

/// Creates a new identity in `home`: a commune key, a node key, the
/// certificate binding them, and `config.toml`.
///
/// # Errors
/// [`IdentityError::AlreadyExists`] if any identity file is there already;
/// [`IdentityError::InvalidInput`] for a bad name or country; I/O errors.
pub fn init(home: &Home, name: &str, country: &str, api_port: u16) -> Result<Identity, IdentityError> {
    init_with_listen(home, name, country, api_port, None)
}

/// As [`init`], with the libp2p listen addresses to write in the
/// configuration (the defaults when `None`).
///
/// # Errors
/// As [`init`]; [`IdentityError::InvalidInput`] for an address that is not a multiaddr.
pub fn init_with_listen(
    home: &Home,
    name: &str,
    country: &str,
    api_port: u16,
    listen: Option<Vec<String>>,
) -> Result<Identity, IdentityError> {
    let (name, country) = check_commune(name, country)?;
    if let Some(addrs) = &listen {
        for a in addrs {
            a.parse::<libp2p::Multiaddr>()
                .map_err(|e| IdentityError::InvalidInput(format!("{a:?} is not a multiaddr: {e}")))?;
        }
    }
    for path in [home.config(), home.commune_key(), home.node_key(), home.node_certificate()] {
        if path.exists() {
            return Err(IdentityError::AlreadyExists(home.root().to_owned()));
        }
    }
    std::fs::create_dir_all(home.root()).map_err(io(home.root()))?;
    keep_private(home.root())?;
    create_private_dir(&home.keys())?;

    let commune_key = SecretKey::from_seed(clock::random_bytes());
    let node_key = SecretKey::from_seed(clock::random_bytes());
    let certificate = NodeCertificate::issue(&commune_key, node_key.node_id(), clock::now_ms() as u64);
    write_private(&home.commune_key(), key_text(COMMUNE_KEY_LABEL, &commune_key).as_bytes())?;
    write_private(&home.node_key(), key_text(NODE_KEY_LABEL, &node_key).as_bytes())?;
    write_private(&home.node_certificate(), format!("{}\n", hex::encode(certificate.encode())).as_bytes())?;
    let mut config = Config::new(&name, &country, api_port);
    if let Some(listen) = listen {
        config.network.listen = listen;
    }
    config.write_new(&home.config())?;
    Ok(Identity { commune_key, node_key, certificate, config })
}

/// Loads the identity of `home`.
///
/// # Errors
/// [`IdentityError::Missing`] when there is none; other variants when a file
/// is unreadable or damaged, or the certificate does not bind the two keys.
pub fn load(home: &Home) -> Result<Identity, IdentityError> {
    if !home.config().exists() || !home.node_key().exists() {
        return Err(IdentityError::Missing(home.root().to_owned()));
    }
    let config = Config::load(&home.config())?;
    let commune_key = read_key(&home.commune_key(), COMMUNE_KEY_LABEL)?;
    let node_key = read_key(&home.node_key(), NODE_KEY_LABEL)?;
    let cert_path = home.node_certificate();
    let text = std::fs::read_to_string(&cert_path).map_err(io(&cert_path))?;
    let bad = |reason: String| IdentityError::BadKeyFile { path: cert_path.clone(), reason };
    let bytes = hex::decode(text.trim()).map_err(|e| bad(e.to_string()))?;
    let certificate = NodeCertificate::decode(&bytes).map_err(|e| bad(e.to_string()))?;
    certificate.verify().map_err(|e| bad(e.to_string()))?;
    if certificate.node != node_key.node_id() || certificate.commune != commune_key.commune_id() {
        return Err(bad("the certificate does not bind this node key to this commune key".into()));
    }
    Ok(Identity { commune_key, node_key, certificate, config })
}

/// Replaces the node key with a new one certified by the commune key (a
/// reinstall after a suspected theft, or a routine rotation). The old key
/// and certificate move to `keys/retired/`, named by the old node id; the
/// store keeps the old certificate, so everything the old key signed stays
/// verifiable. Run with the node stopped; revoke the old key afterwards
/// with `passerelle network revoke <old-node-id>` if it may be in other hands.
///
/// Crash-safe: the new files are written beside the old ones first, and
/// only then moved into place.
///
/// # Errors
/// [`IdentityError`] when the identity cannot be loaded or a file written.
pub fn rotate_node_key(home: &Home) -> Result<(NodeId, Identity), IdentityError> {
    let old = load(home)?;
    let old_id = old.node_id();
    let retired = home.keys().join("retired");
    create_private_dir(&retired)?;
    let node_key = SecretKey::from_seed(clock::random_bytes());
    let certificate = NodeCertificate::issue(&old.commune_key, node_key.node_id(), clock::now_ms() as u64);
    let staged_key = home.keys().join("node.key.new");
    let staged_cert = home.keys().join("node.cert.new");
    for p in [&staged_key, &staged_cert] {
        if p.exists() {
            std::fs::remove_file(p).map_err(io(p))?;
        }
    }
    write_private(&staged_key, key_text(NODE_KEY_LABEL, &node_key).as_bytes())?;
    write_private(&staged_cert, format!("{}\n", hex::encode(certificate.encode())).as_bytes())?;
    let old_key_dest = retired.join(format!("{old_id}.key"));
    let old_cert_dest = retired.join(format!("{old_id}.cert"));
    std::fs::rename(home.node_key(), &old_key_dest).map_err(io(&old_key_dest))?;
    std::fs::rename(home.node_certificate(), &old_cert_dest).map_err(io(&old_cert_dest))?;
    std::fs::rename(&staged_key, home.node_key()).map_err(io(&staged_key))?;
    std::fs::rename(&staged_cert, home.node_certificate()).map_err(io(&staged_cert))?;
    Ok((old_id, Identity { commune_key: old.commune_key, node_key, certificate, config: old.config }))
}

fn key_text(label: &str, key: &SecretKey) -> String {
    format!("{label}\n{}\n", hex::encode(key.to_seed()))
}

fn read_key(path: &Path, label: &str) -> Result<SecretKey, IdentityError> {
    let text = std::fs::read_to_string(path).map_err(io(path))?;
    let bad = |reason: &str| IdentityError::BadKeyFile { path: path.to_owned(), reason: reason.to_owned() };
    let mut lines = text.lines();
    if lines.next() != Some(label) {
        return Err(bad(&format!("expected a first line {label:?}")));
    }
    let mut seed = [0u8; 32];
    hex::decode_to_slice(lines.next().unwrap_or("").trim(), &mut seed)
        .map_err(|_| bad("expected 64 hexadecimal characters on the second line"))?;
    Ok(SecretKey::from_seed(seed))
}

#[cfg(unix)]
fn create_private_dir(path: &Path) -> Result<(), IdentityError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(path).map_err(io(path))
}

#[cfg(not(unix))]
fn create_private_dir(path: &Path) -> Result<(), IdentityError> {
    std::fs::create_dir_all(path).map_err(io(path))
}

/// Makes a directory (or file) readable by its owner only, if others could
/// read it: the home holds the API token, keys and invitations. Returns
/// whether it had to change anything.
///
/// # Errors
/// [`IdentityError::Io`].
pub fn keep_private(path: &Path) -> Result<bool, IdentityError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path).map_err(io(path))?.permissions().mode();
        if mode & 0o077 != 0 {
            let private = if path.is_dir() { 0o700 } else { 0o600 };
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(private)).map_err(io(path))?;
            return Ok(true);
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(false)
}

/// Writes a file readable by its owner only, replacing any: what a command
/// writes for its operator (an invitation token).
///
/// # Errors
/// [`IdentityError::Io`].
pub fn write_private_replacing(path: &Path, contents: &[u8]) -> Result<(), IdentityError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(io(path))?;
    keep_private(path)?;
    file.write_all(contents).and_then(|()| file.sync_all()).map_err(io(path))
}

/// Writes a new file readable by its owner only; never replaces one.
///
/// # Errors
/// [`IdentityError::Io`], including when the file exists.
pub fn write_private(path: &Path, contents: &[u8]) -> Result<(), IdentityError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(io(path))?;
    file.write_all(contents).and_then(|()| file.sync_all()).map_err(io(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_then_load_gives_the_same_identity() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::new(dir.path().join("h"));
        let made = init(&home, " Senneval ", "be", 0).unwrap();
        assert_eq!(made.config.commune.name, "Senneval");
        assert_eq!(made.config.commune.country, "BE");
        let loaded = load(&home).unwrap();
        assert_eq!(loaded.commune_id(), made.commune_id());
        assert_eq!(loaded.node_id(), made.node_id());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for p in [home.commune_key(), home.node_key()] {
                assert_eq!(std::fs::metadata(p).unwrap().permissions().mode() & 0o777, 0o600);
            }
        }
    }

    #[test]
    fn a_rotated_node_key_is_certified_and_the_old_one_retired() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::new(dir.path());
        let first = init(&home, "Verbois", "BE", 0).unwrap();
        let (old, new) = rotate_node_key(&home).unwrap();
        assert_eq!(old, first.node_id());
        assert_ne!(new.node_id(), old);
        let loaded = load(&home).unwrap();
        assert_eq!(loaded.node_id(), new.node_id());
        assert_eq!(loaded.commune_id(), first.commune_id());
        assert!(home.keys().join("retired").join(format!("{old}.key")).exists());
    }

    #[test]
    fn init_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::new(dir.path());
        let first = init(&home, "Verbois", "BE", 0).unwrap();
        assert!(matches!(init(&home, "Other", "MA", 0), Err(IdentityError::AlreadyExists(_))));
        assert_eq!(load(&home).unwrap().commune_id(), first.commune_id());
    }

    #[test]
    fn bad_input_and_missing_identity_are_explained() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::new(dir.path());
        assert!(init(&home, "", "BE", 0).unwrap_err().to_string().contains("name"));
        assert!(init(&home, "X", "Belgique", 0).unwrap_err().to_string().contains("country"));
        assert!(matches!(load(&home), Err(IdentityError::Missing(_))));
    }
}
