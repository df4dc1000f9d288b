//! The authoring commands: `hookwire check` and `hookwire test`.

pub mod check;
pub mod ops;
pub mod rule_tests;
pub mod send;
pub mod test;

/// The Content-Type a payload file most likely has, by its extension.
pub fn guess_content_type(path: &std::path::Path) -> Option<String> {
    let ext = path.extension()?.to_str()?;
    Some(
        match ext {
            "json" => "application/json",
            "xml" => "application/xml",
            "form" | "urlencoded" => "application/x-www-form-urlencoded",
            _ => return None,
        }
        .to_owned(),
    )
}

/// Writes a line to stdout; a closed pipe (`hookwire test … | head`) is not an error.
pub fn out(line: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stdout().lock(), "{line}");
}

/// Replaces every secret (a value that came from `${VAR}`) with `[redacted]`.
pub fn redact(text: &str, secrets: &[String]) -> String {
    let mut out = text.to_owned();
    let mut sorted: Vec<&String> = secrets.iter().filter(|s| s.len() >= 3).collect();
    // Longest first, so a secret that contains another is replaced whole.
    sorted.sort_by_key(|s| std::cmp::Reverse(s.len()));
    for s in sorted {
        if out.contains(s.as_str()) {
            out = out.replace(s.as_str(), "[redacted]");
        }
    }
    out
}
