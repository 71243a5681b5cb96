//! `passerelle bundle export|import`: offline bundles, for when there is
//! no link at all (a file on a USB stick, or sent by e-mail).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use passerelle_node::home::Home;

use crate::output::{Output, time};

/// Offline bundles.
#[derive(Debug, clap::Subcommand)]
pub enum BundleCommand {
    /// Write what a member lacks, as far as this node knows (the changes
    /// stored here since one of its nodes was last in sync with this one),
    /// into a signed file. Scopes apply as on the wire.
    Export {
        /// The member it is for: commune id, id prefix or name.
        #[arg(long = "for", value_name = "COMMUNE")]
        recipient: String,
        /// The file to write.
        #[arg(short = 'o', long, value_name = "FILE")]
        output: PathBuf,
        /// Everything the member may hold, not only what it lacks.
        #[arg(long)]
        all: bool,
    },
    /// Verify a bundle made for this commune and apply it like a sync;
    /// importing it again changes nothing.
    Import {
        /// The bundle file.
        file: PathBuf,
    },
}

/// The path as the node (on this machine, maybe in another directory) sees it.
fn absolute(path: &Path) -> anyhow::Result<String> {
    let abs = if path.is_absolute() { path.to_owned() } else { std::env::current_dir()?.join(path) };
    Ok(abs.to_string_lossy().into_owned())
}

/// Runs `bundle ...`.
pub fn run(home: &Home, command: BundleCommand, out: &Output) -> anyhow::Result<ExitCode> {
    let client = super::client(home)?;
    match command {
        BundleCommand::Export { recipient, output, all } => {
            let summary = client.export_bundle(&recipient, all, &absolute(&output)?)?;
            out.print(&summary, || {
                let since = if summary.since_ms == 0 {
                    "everything it may hold".to_owned()
                } else {
                    format!("changes since {} UTC (its last sync with this node)", time(summary.since_ms as i64))
                };
                format!(
                    "bundle for {} written to {}: {} changes of {} documents, {} bytes ({since})",
                    summary.recipient_name,
                    output.display(),
                    summary.changes,
                    summary.documents,
                    summary.bytes
                )
            });
        }
        BundleCommand::Import { file } => {
            if !file.exists() {
                anyhow::bail!("{} does not exist", file.display());
            }
            let report = client.import_bundle(&absolute(&file)?)?;
            out.print(&report, || {
                let i = &report.ingest;
                let mut text = format!(
                    "bundle from node {} ({} UTC): {} changes applied, {} already here, {} new documents, {} new statements",
                    report.signer.short(),
                    time(report.created_ms as i64),
                    i.applied,
                    i.duplicates,
                    i.new_documents,
                    report.statements
                );
                for r in &i.rejected {
                    text.push_str(&format!("\n  refused {} {}: {}", r.code, &r.doc[..8.min(r.doc.len())], r.reason));
                }
                text
            });
        }
    }
    Ok(ExitCode::SUCCESS)
}
