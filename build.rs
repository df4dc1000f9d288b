//! `hookwire --version`: the package version, and the commit it was built
//! from when built from a git checkout (`0.1.0 (3f2c1ab)`).

use std::process::Command;

fn main() {
    let version = env!("CARGO_PKG_VERSION");
    let commit = git(&["rev-parse", "--short=12", "HEAD"]);
    match &commit {
        Some(c) => println!("cargo:rustc-env=HOOKWIRE_VERSION={version} ({c})"),
        None => println!("cargo:rustc-env=HOOKWIRE_VERSION={version}"),
    }
    // Built again when HEAD moves (a commit, a checkout), not on every build.
    // (A path that does not exist would make Cargo run this on every build.)
    if let Some(dir) = git(&["rev-parse", "--git-dir"]) {
        let mut watched = vec![format!("{dir}/HEAD"), format!("{dir}/packed-refs")];
        if let Some(head) = git(&["symbolic-ref", "-q", "HEAD"]) {
            watched.push(format!("{dir}/{head}"));
        }
        for path in watched.iter().filter(|p| std::path::Path::new(p).exists()) {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    println!("cargo:rerun-if-changed=build.rs");
}

/// A git command's trimmed output, or `None` outside a checkout or without git.
fn git(args: &[&str]) -> Option<String> {
    #[allow(clippy::disallowed_methods)] // the build asks git which commit it builds
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (!text.is_empty()).then_some(text)
}
