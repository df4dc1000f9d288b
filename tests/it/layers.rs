//! The module graph points one way: each module of the crate uses only the
//! modules listed above it in the table of `src/lib.rs` (the layers the
//! README's "Architecture" section draws). Read from the code's own
//! `crate::` paths, test modules left out.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

const SRC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src");

/// The modules in the order of the table in `lib.rs` (`//! | [`name`] | …`).
fn layer_order(lib: &str) -> Vec<String> {
    lib.lines()
        .filter_map(|l| {
            l.strip_prefix("//! | [`")?
                .split_once("`]")
                .map(|(m, _)| m.to_owned())
        })
        .collect()
}

/// Non-test code: everything before the first `#[cfg(test)]` (test modules
/// sit at the end of a file), without line comments.
fn code(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        if line.trim_start().starts_with("#[cfg(test)]") {
            break;
        }
        let line = match line.find("//") {
            Some(i) => &line[..i],
            None => line,
        };
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// The crate's top-level modules that `text` (a file of module `own`, at the
/// module's root when `root`) names.
fn uses(text: &str, own: &str, root: bool) -> BTreeSet<String> {
    let code = code(text);
    let mut out = BTreeSet::new();
    let single = regex::Regex::new(r"crate::([a-z_][a-z0-9_]*)\b").unwrap();
    let group = regex::Regex::new(r"crate::\{([^}]*)\}").unwrap();
    let parent = regex::Regex::new(r"\bsuper::([a-z_][a-z0-9_]*)\b").unwrap();
    for c in single.captures_iter(&code) {
        out.insert(c[1].to_owned());
    }
    for c in group.captures_iter(&code) {
        for item in c[1].split(',') {
            let name = item.trim().split("::").next().unwrap_or("").trim();
            if !name.is_empty() {
                out.insert(name.to_owned());
            }
        }
    }
    // In `src/x.rs` or `src/x/mod.rs`, `super::` is the crate itself.
    if root {
        for c in parent.captures_iter(&code) {
            out.insert(c[1].to_owned());
        }
    }
    out.remove(own);
    out.remove("self");
    out
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs")
            && path.file_name().is_some_and(|n| n != "tests.rs")
        {
            out.push(path);
        }
    }
}

/// `module uses upper` for each arrow that points up the table (or to a
/// module the table does not name).
fn upward_arrows(order: &[String], files: &[(String, bool, String)]) -> Vec<String> {
    let rank = |m: &str| order.iter().position(|x| x == m);
    let mut wrong = Vec::new();
    for (module, root, text) in files {
        let Some(own) = rank(module) else {
            wrong.push(format!("{module} is not in the table of src/lib.rs"));
            continue;
        };
        for used in uses(text, module, *root) {
            match rank(&used) {
                Some(r) if r < own => {}
                Some(_) => wrong.push(format!("{module} uses {used}, which is listed below it")),
                None => wrong.push(format!(
                    "{module} uses {used}, which the table does not name"
                )),
            }
        }
    }
    wrong
}

#[test]
fn every_module_uses_only_the_layers_below_it() {
    let lib = std::fs::read_to_string(Path::new(SRC).join("lib.rs")).unwrap();
    let order = layer_order(&lib);
    assert!(order.len() > 15, "{order:?}");
    let mut files = Vec::new();
    for module in &order {
        let single = Path::new(SRC).join(format!("{module}.rs"));
        let mut paths = Vec::new();
        if single.exists() {
            paths.push(single);
        } else if Path::new(SRC).join(module).is_dir() {
            rust_files(&Path::new(SRC).join(module), &mut paths);
        }
        assert!(!paths.is_empty(), "no source for module {module}");
        for p in paths {
            let root =
                p.file_name().is_some_and(|n| n == "mod.rs") || p.parent() == Some(Path::new(SRC));
            files.push((module.clone(), root, std::fs::read_to_string(&p).unwrap()));
        }
    }
    let wrong = upward_arrows(&order, &files);
    assert!(
        wrong.is_empty(),
        "imports against the layers of src/lib.rs:\n{}",
        wrong.join("\n")
    );
}

/// The check itself catches an upward arrow in each spelling, and lets test
/// code and comments be.
#[test]
fn the_layer_check_sees_each_way_of_naming_a_module() {
    let order: Vec<String> = ["clock", "store", "dispatch"].map(String::from).to_vec();
    let file = |m: &str, root: bool, text: &str| vec![(m.to_owned(), root, text.to_owned())];
    assert!(upward_arrows(&order, &file("store", false, "use crate::clock::now_ms;")).is_empty());
    for bad in [
        "use crate::dispatch::Dispatcher;",
        "fn f() { crate::dispatch::run() }",
        "use crate::{clock, dispatch::Dispatcher};",
    ] {
        assert_eq!(
            upward_arrows(&order, &file("store", false, bad)),
            ["store uses dispatch, which is listed below it"],
            "{bad}"
        );
    }
    assert_eq!(
        upward_arrows(&order, &file("store", true, "use super::dispatch;")),
        ["store uses dispatch, which is listed below it"]
    );
    // `super::` below a module's root is the module itself.
    assert!(upward_arrows(&order, &file("store", false, "use super::dispatch;")).is_empty());
    let ignored =
        "// crate::dispatch in a comment\n#[cfg(test)]\nmod tests { use crate::dispatch; }";
    assert!(upward_arrows(&order, &file("store", false, ignored)).is_empty());
    assert_eq!(
        upward_arrows(&order, &file("store", false, "use crate::elsewhere::X;")),
        ["store uses elsewhere, which the table does not name"]
    );
}
