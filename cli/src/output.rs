//! Rendering results: human text, or one JSON object with `--json`.
//! A closed pipe (`passerelle ... | head`) ends the program quietly.

use std::io::Write;

use serde::Serialize;

/// Where and how results are printed.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    /// Print JSON instead of text.
    pub json: bool,
}

impl Output {
    pub fn new(json: bool) -> Self {
        Self { json }
    }

    /// Prints the result: `value` as JSON with `--json`, else `human()`.
    pub fn print<T: Serialize>(&self, value: &T, human: impl FnOnce() -> String) {
        let text =
            if self.json { serde_json::to_string_pretty(value).expect("results always serialize") } else { human() };
        write_stdout(&text);
    }
}

/// Writes a line to stdout; exits quietly if the reader went away.
pub fn write_stdout(text: &str) {
    let mut out = std::io::stdout().lock();
    let result = if text.ends_with('\n') { out.write_all(text.as_bytes()) } else { writeln!(out, "{text}") };
    if let Err(e) = result.and_then(|()| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: cannot write to stdout: {e}");
        std::process::exit(1);
    }
}

/// A time in milliseconds as `YYYY-MM-DD HH:MM:SS` UTC.
pub fn time(ms: i64) -> String {
    passerelle_node::clock::utc(ms)
}
