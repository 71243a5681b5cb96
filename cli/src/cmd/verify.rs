//! `passerelle verify` and `passerelle repair`.

use std::process::ExitCode;

use anyhow::Context;
use passerelle_node::client::ClientError;
use passerelle_node::home::Home;
use passerelle_node::store::RepairReport;
use passerelle_node::views::VerifyReport;

use crate::output::Output;

/// Re-checks every signature and every record's encoding, through the
/// running node or, when none runs on this home, on its store directly;
/// exits 1 if anything fails.
pub fn run(home: &Home, out: &Output) -> anyhow::Result<ExitCode> {
    let (report, stopped) = match super::client(home).and_then(|c| c.verify()) {
        Ok(r) => (r, false),
        Err(ClientError::NotReachable { .. }) => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            (rt.block_on(passerelle_node::runtime::verify_stopped(home))?, true)
        }
        Err(e) => return Err(e.into()),
    };
    out.print(&report, || text(&report, stopped));
    let clean = report.failures.is_empty() && report.damaged.is_empty();
    Ok(if clean { ExitCode::SUCCESS } else { ExitCode::from(crate::exit::FAILED) })
}

fn text(report: &VerifyReport, stopped: bool) -> String {
    let mut text = format!("checked {} documents, {} changes", report.documents, report.changes);
    if stopped {
        text.push_str(" (no node runs on this home: its store was read directly)");
    }
    if report.failures.is_empty() {
        text.push_str(": every signature holds");
    }
    for f in &report.failures {
        let at = match (f.seq, &f.hash) {
            (Some(seq), Some(h)) => format!("change #{seq} ({})", &h[..12.min(h.len())]),
            (Some(seq), None) => format!("change #{seq}"),
            _ => "header".to_owned(),
        };
        text.push_str(&format!("\nFAILED document {} {at}: {}", f.doc, f.reason));
    }
    for d in &report.damaged {
        text.push_str(&format!("\nDAMAGED {} record {}: {}", d.kind, short(&d.key), d.reason));
    }
    if !report.damaged.is_empty() {
        text.push_str("\nstop the node and run `passerelle repair` to set the damaged records aside");
    }
    for a in &report.apart {
        let who = if a.note.refused_by == "here" { "this node refused" } else { "the peer refused" };
        text.push_str(&format!(
            "\nagreed to differ with peer {} on document {}: {who} part of it ({}); not a failure",
            a.peer.short(),
            a.doc,
            a.note.code
        ));
    }
    text
}

fn short(key: &str) -> &str {
    &key[..key.len().min(24)]
}

/// Sets the damaged records of a stopped node's store aside.
pub fn repair(home: &Home, out: &Output) -> anyhow::Result<ExitCode> {
    let report = passerelle_node::runtime::repair_stopped(home).map_err(|e| match e {
        passerelle_node::runtime::NodeError::Store(passerelle_node::store::StoreError::Locked(path)) => {
            anyhow::anyhow!("the store at {path} is in use: stop the node first (repair works on a stopped node)")
        }
        e => e.into(),
    })?;
    out.print(&report, || repair_text(&report));
    Ok(ExitCode::SUCCESS)
}

fn repair_text(r: &RepairReport) -> String {
    if r.damaged.is_empty() {
        return "no damaged record: nothing to repair".to_owned();
    }
    let mut text =
        format!("{} damaged records found; {} records moved to the store's quarantine", r.damaged.len(), r.quarantined);
    for d in &r.damaged {
        text.push_str(&format!("\n  {} record {}: {}", d.kind, short(&d.key), d.reason));
    }
    for doc in &r.rebuilt {
        text.push_str(&format!("\nrebuilt the metadata of document {doc} from its header and changes"));
    }
    for doc in &r.dropped {
        text.push_str(&format!("\nset document {doc} aside: the next sync fetches it again from the peers"));
    }
    text
}
