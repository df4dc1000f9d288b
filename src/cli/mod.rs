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

/// Writes a line to stdout with every secret masked; a closed pipe
/// (`hookwire test … | head`) is not an error.
pub fn out(line: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stdout().lock(), "{}", crate::redact::text(line));
}

/// Writes a line to stderr with every secret masked.
pub fn err(line: impl std::fmt::Display) {
    use std::io::Write as _;
    let _ = writeln!(
        std::io::stderr().lock(),
        "{}",
        crate::redact::text(&line.to_string())
    );
}
