//! `passerelle verify`.

use std::process::ExitCode;

use passerelle_node::home::Home;

use crate::output::Output;

/// Re-checks every signature; exits 1 if any fails.
pub fn run(home: &Home, out: &Output) -> anyhow::Result<ExitCode> {
    let report = super::client(home)?.verify()?;
    out.print(&report, || {
        let mut text = format!("checked {} documents, {} changes", report.documents, report.changes);
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
        text
    });
    Ok(if report.failures.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(crate::exit::FAILED) })
}
