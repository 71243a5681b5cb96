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
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}", rem / 3600, rem % 3600 / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    #[test]
    fn times_are_utc_dates() {
        assert_eq!(super::time(0), "1970-01-01 00:00:00");
        assert_eq!(super::time(1_735_689_600_000), "2025-01-01 00:00:00");
        assert_eq!(super::time(951_782_400_000 + 3_661_000), "2000-02-29 01:01:01");
    }
}
