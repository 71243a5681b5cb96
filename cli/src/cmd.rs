//! One module per subcommand.

pub mod bench;
pub mod bundle;
pub mod demo;
pub mod docs;
pub mod history;
pub mod init;
pub mod key;
pub mod network;
pub mod peers;
pub mod run;
pub mod status;
pub mod verify;

use passerelle_node::client::{ApiClient, ClientError};
use passerelle_node::home::Home;

/// A command line that parses but makes no sense (exit code 2).
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// The client of the node running on `home`.
pub fn client(home: &Home) -> Result<ApiClient, ClientError> {
    ApiClient::for_home(home)
}
