//! The README's command and flag tables are kept true: every subcommand and
//! flag they document exists (`--help` says so), and every `serve` flag and
//! its environment variable is documented.

use std::collections::BTreeSet;

use crate::support::{BIN, run_cli};

fn readme() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap()
}

/// The rows of the Markdown table whose header row starts with `| {first} |`.
fn table_rows<'a>(text: &'a str, first: &str) -> Vec<Vec<&'a str>> {
    let header = format!("| {first} |");
    let mut lines = text.lines().skip_while(|l| !l.starts_with(&header));
    assert!(
        lines.next().is_some(),
        "no table headed `{header}` in the README"
    );
    let rows: Vec<Vec<&str>> = lines
        .skip(1) // |---|---|
        .take_while(|l| l.starts_with('|'))
        .map(|l| split_row(l))
        .collect();
    assert!(!rows.is_empty(), "the table `{header}` has no rows");
    rows
}

/// Cells of a table row; `\|` inside a cell is not a separator.
fn split_row(line: &str) -> Vec<&str> {
    let inner = line.trim().trim_start_matches('|').trim_end_matches('|');
    let mut cells = Vec::new();
    let (mut start, mut prev) = (0, ' ');
    for (i, c) in inner.char_indices() {
        if c == '|' && prev != '\\' {
            cells.push(inner[start..i].trim());
            start = i + 1;
        }
        prev = c;
    }
    cells.push(inner[start..].trim());
    cells
}

/// `--flag` words in a piece of text.
fn flags(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .filter(|w| w.starts_with("--") && w.len() > 2)
        .map(str::to_owned)
        .collect()
}

fn help(args: &[&str]) -> String {
    let dir = std::env::temp_dir();
    let mut full = args.to_vec();
    full.push("--help");
    let (code, out, err) = run_cli(&dir, &full, &[]);
    assert_eq!(
        code,
        0,
        "`hookwire {}` does not exist: {err}",
        full.join(" ")
    );
    out
}

#[test]
fn every_documented_command_and_flag_exists() {
    let text = readme();
    let mut checked = 0;
    for row in table_rows(&text, "command") {
        // `hookwire test --source NAME …`, or `hookwire` / `hookwire serve [flags]`.
        for usage in row[0].split(" / ") {
            let usage = usage.trim_matches('`');
            let words: Vec<&str> = usage.split_whitespace().collect();
            assert_eq!(words.first(), Some(&"hookwire"), "{usage}");
            let sub: Vec<&str> = words
                .get(1)
                .filter(|w| w.chars().all(|c| c.is_ascii_lowercase()))
                .into_iter()
                .copied()
                .collect();
            let out = help(&sub);
            let known = flags(&out);
            for f in flags(usage) {
                assert!(
                    known.contains(&f),
                    "README documents `{f}` for `hookwire {}`, which has no such flag:\n{out}",
                    sub.join(" ")
                );
                checked += 1;
            }
        }
    }
    assert!(
        checked > 15,
        "only {checked} flags checked: the table was misread"
    );
}

#[test]
fn every_serve_flag_and_variable_is_documented_and_exists() {
    let text = readme();
    let out = help(&["serve"]);
    let known = flags(&out);
    let mut documented = BTreeSet::new();
    for row in table_rows(&text, "flag") {
        for f in flags(row[0]) {
            assert!(
                known.contains(&f),
                "README documents `serve {f}`, which does not exist:\n{out}"
            );
            documented.insert(f);
        }
        for var in row[1].split(|c: char| !(c.is_ascii_uppercase() || c == '_')) {
            if var.starts_with("HOOKWIRE_") {
                assert!(
                    out.contains(&format!("[env: {var}")),
                    "README names `{var}`, which `serve` does not read:\n{out}"
                );
            }
        }
    }
    let undocumented: Vec<&String> = known
        .iter()
        .filter(|f| !documented.contains(*f) && *f != "--help" && *f != "--version")
        .collect();
    assert!(
        undocumented.is_empty(),
        "`serve` flags missing from the README's flag table: {undocumented:?}"
    );
    // The binary the tests run is the one whose help was read.
    assert!(std::path::Path::new(BIN).exists());
}

#[test]
fn every_module_is_named_in_the_crate_docs() {
    let lib = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/lib.rs")).unwrap();
    let modules: Vec<&str> = lib
        .lines()
        .filter_map(|l| l.strip_prefix("pub mod ")?.strip_suffix(';'))
        .collect();
    assert!(modules.len() > 10, "{modules:?}");
    for m in modules {
        assert!(
            lib.contains(&format!("| [`{m}`] |")),
            "src/lib.rs declares `{m}` but its table of modules does not name it"
        );
    }
}

/// The README's first command, `cargo run --release`, needs to know which
/// binary to run once the benchmark's ceiling server is a second one.
#[test]
fn cargo_run_knows_which_binary_is_the_daemon() {
    let manifest =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml")).unwrap();
    let bins = manifest.matches("[[bin]]").count();
    assert!(
        bins == 0 || manifest.contains("default-run = \"hookwire\""),
        "Cargo.toml declares {bins} extra [[bin]] targets but no default-run: `cargo run` fails"
    );
    assert!(readme().contains("cargo run --release "));
}

/// The subcommands `hookwire --help` lists.
fn subcommands() -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let (code, help, _) = run_cli(dir.path(), &["--help"], &[]);
    assert_eq!(code, 0);
    help.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_owned)
        .collect()
}

/// `--version` names the commit the binary was built from, when it was built
/// from a git checkout (as this test's is, in CI's fresh clone).
#[test]
#[allow(clippy::disallowed_methods)] // asks git for HEAD
fn the_version_names_the_commit_it_was_built_from() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out, _) = run_cli(dir.path(), &["--version"], &[]);
    assert_eq!(code, 0);
    let version = concat!("hookwire ", env!("CARGO_PKG_VERSION"));
    let head = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8(o.stdout).unwrap().trim().to_owned());
    match head {
        Some(commit) => assert_eq!(out.trim(), format!("{version} ({commit})")),
        None => assert_eq!(out.trim(), version),
    }
}

/// Every shell gets a script that knows every subcommand; bash's parses
/// (`bash -n`); a closed pipe is not a crash.
#[test]
#[allow(clippy::disallowed_methods)] // runs bash -n, and the binary with a closed pipe
fn completions_know_every_subcommand() {
    let dir = tempfile::tempdir().unwrap();
    let subcommands = subcommands();
    assert!(subcommands.len() >= 10, "{subcommands:?}");
    for shell in ["bash", "zsh", "fish", "powershell"] {
        let (code, script, err) = run_cli(dir.path(), &["completions", shell], &[]);
        assert_eq!(code, 0, "{shell}: {err}");
        for sub in &subcommands {
            assert!(
                script.contains(sub.as_str()),
                "{shell} completions lack `{sub}`"
            );
        }
        if shell == "bash" {
            let path = dir.path().join("hookwire.bash");
            std::fs::write(&path, &script).unwrap();
            let check = std::process::Command::new("bash")
                .arg("-n")
                .arg(&path)
                .output()
                .unwrap();
            assert!(
                check.status.success(),
                "{}",
                String::from_utf8_lossy(&check.stderr)
            );
        }
    }
    let (code, _, err) = run_cli(dir.path(), &["completions", "tcsh"], &[]);
    assert_eq!(code, 2);
    assert!(err.contains("invalid value 'tcsh'"), "{err}");
    // The reader stops early: the script ends quietly.
    let mut child = std::process::Command::new(BIN)
        .args(["completions", "bash"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `hookwire man DIR` writes a page per subcommand and one for hookwire,
/// each a roff page with its title, and lists them; an unwritable place is
/// a clear error.
#[test]
fn man_pages_are_written_for_every_subcommand() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("man/man1");
    let (code, listed, err) = run_cli(dir.path(), &["man", out_dir.to_str().unwrap()], &[]);
    assert_eq!(code, 0, "{err}");
    let mut want = vec!["hookwire".to_owned()];
    want.extend(subcommands().iter().map(|s| format!("hookwire-{s}")));
    let mut written = Vec::new();
    for name in &want {
        let path = out_dir.join(format!("{name}.1"));
        let page = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{name}.1: {e}"));
        assert!(page.contains(&format!(".TH {name} 1")), "{name}.1:\n{page}");
        written.push(path.display().to_string());
    }
    assert_eq!(listed.lines().collect::<Vec<_>>(), written);
    // The synopsis is what is typed.
    let serve = std::fs::read_to_string(out_dir.join("hookwire-serve.1")).unwrap();
    assert!(serve.contains("hookwire serve"), "{serve}");
    assert!(serve.contains("HOOKWIRE_LISTEN"), "{serve}");

    let file = dir.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    let (code, _, err) = run_cli(
        dir.path(),
        &["man", file.join("man1").to_str().unwrap()],
        &[],
    );
    assert_eq!(code, 1);
    assert!(
        err.starts_with("error: cannot write the man pages into "),
        "{err}"
    );
}
