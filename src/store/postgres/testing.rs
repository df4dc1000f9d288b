//! A real PostgreSQL server for tests (SPEC §7: never a mock): Debian's
//! binaries, one server per test process, started on first use, and a fresh
//! database per test.
//!
//! The server lives in a temporary directory: `initdb` (as the `postgres`
//! user through `runuser` when the tests run as root, since PostgreSQL
//! refuses to run as root), then `pg_ctl start` on an ephemeral port of
//! 127.0.0.1 with password (SCRAM) authentication over TCP, and TLS with a
//! certificate for `localhost` and 127.0.0.1 from a CA of its own
//! ([`Server::ca`]), so that every `sslmode` can be tried for real.
//!
//! Stopping it: statics are never dropped, so no `Drop` can be relied on.
//! Instead a small watchdog shell, in a process group of its own (so a
//! Ctrl-C to the tests does not kill it first), reads a pipe whose only
//! writer is this process. However the test process ends — success,
//! panic, abort, SIGKILL — the kernel closes the pipe, the watchdog reads
//! end-of-file, stops the server (`pg_ctl stop -m immediate`) and removes
//! the directory.
//!
//! tests/it cannot use this module (it is compiled only into the library's
//! own tests); it would need the same ~100 lines in its support code, or
//! this module behind a `testing` feature.

// Test-only, and the one place outside actions/command.rs that starts
// processes: the server the tests run against.
#![allow(clippy::disallowed_methods)]

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU32, Ordering};

pub struct Server {
    pub port: u16,
    pub password: String,
    /// The PEM file of the CA that issued the server's certificate.
    pub ca: PathBuf,
    bin: PathBuf,
    /// `pg_ctl`, as the user the server runs as, with its data directory.
    #[allow(dead_code)] // stop/start: used by tests/it only
    pg_ctl: Vec<std::ffi::OsString>,
    /// The `-o` options it was started with (port, socket, TLS).
    #[allow(dead_code)]
    options: String,
    /// Held open until the process ends: see the module doc.
    _watchdog: ChildStdin,
}

static SERVER: LazyLock<Server> = LazyLock::new(Server::start);

/// The shared server, started on first use.
pub fn server() -> &'static Server {
    &SERVER
}

/// A fresh, empty database on the shared server; its URL.
pub fn database() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "t_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let s = server();
    s.psql("postgres", &format!("CREATE DATABASE {name}"));
    s.url(&name)
}

/// The name of the database a URL from [`database`] names.
pub fn name_of(url: &str) -> &str {
    url.rsplit('/').next().unwrap_or_default()
}

/// A server of the caller's own, for a test that stops and starts it (the
/// shared one serves the other tests meanwhile). Used by tests/it only.
#[allow(dead_code)]
pub fn own_server() -> Server {
    Server::start()
}

#[allow(dead_code)] // stop and start: used by tests/it only
impl Server {
    /// `pg_ctl stop -m fast`: every connection is cut and the server is down.
    pub fn stop(&self) {
        self.pg_ctl(&["-w", "-m", "fast", "stop"]);
    }

    /// Starts the stopped server again, on the same port.
    pub fn start_again(&self) {
        self.pg_ctl(&["-w", "-t", "60", "-o", &self.options, "start"]);
    }

    fn pg_ctl(&self, args: &[&str]) {
        let (program, rest) = self.pg_ctl.split_first().expect("pg_ctl");
        let out = Command::new(program)
            .args(rest)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("pg_ctl runs");
        assert!(
            out.status.success(),
            "pg_ctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn url(&self, db: &str) -> String {
        format!(
            "postgres://postgres:{}@127.0.0.1:{}/{db}",
            self.password, self.port
        )
    }

    /// Runs SQL as the superuser; its output, one row a line, `|` between columns.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .args([
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
            ])
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                db,
                "-c",
                sql,
            ])
            .env("PGPASSWORD", &self.password)
            .output()
            .expect("psql runs");
        assert!(
            out.status.success(),
            "psql {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    fn start() -> Server {
        let bin = binaries();
        let dir = tempfile::Builder::new()
            .prefix("hookwire-pg-")
            .tempdir()
            .expect("a temporary directory")
            .keep();
        let data = dir.join("data");
        let as_root = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
        // Runs a server binary as the user PostgreSQL accepts.
        let run = |program: &str| -> Command {
            if as_root {
                let mut c = Command::new("runuser");
                c.args(["-u", "postgres", "--"]).arg(bin.join(program));
                c
            } else {
                Command::new(bin.join(program))
            }
        };
        if as_root {
            let ok = Command::new("chown")
                .args(["postgres:postgres"])
                .arg(&dir)
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "cannot hand {} to the postgres user", dir.display());
        }
        let watchdog = watchdog(&run("pg_ctl"), &data, &dir);
        let password = format!("pw-{:016x}", rand::random::<u64>());
        let pwfile = dir.join("pwfile");
        std::fs::write(&pwfile, &password).expect("the password file is written");
        if as_root {
            let _ = Command::new("chown")
                .args(["postgres:postgres"])
                .arg(&pwfile)
                .status();
        }
        let ca = certificates(&dir, as_root);
        let log = dir.join("log");
        let out = || {
            File::options()
                .create(true)
                .append(true)
                .open(&log)
                .expect("log file")
        };
        let ok = run("initdb")
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
            ])
            .args(["-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions"])
            .arg(format!("--pwfile={}", pwfile.display()))
            .stdout(out())
            .stderr(out())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "initdb failed: {}", read(&log));
        for _ in 0..5 {
            let port = free_port();
            let options = format!(
                "-p {port} -k {dir} -c listen_addresses=127.0.0.1 -c max_connections=300 \
                 -c fsync=off -c synchronous_commit=off -c full_page_writes=off \
                 -c ssl=on -c ssl_cert_file={dir}/server.crt -c ssl_key_file={dir}/server.key",
                dir = dir.display()
            );
            let started = run("pg_ctl")
                .arg("-D")
                .arg(&data)
                .args(["-w", "-t", "60", "-o", &options, "-l"])
                .arg(dir.join("server.log"))
                .arg("start")
                .stdin(Stdio::null())
                .stdout(out())
                .stderr(out())
                .status()
                .is_ok_and(|s| s.success());
            if started {
                let ctl = run("pg_ctl");
                let mut pg_ctl = vec![ctl.get_program().to_owned()];
                pg_ctl.extend(ctl.get_args().map(ToOwned::to_owned));
                pg_ctl.extend(["-D".into(), data.clone().into_os_string()]);
                pg_ctl.extend(["-l".into(), dir.join("server.log").into_os_string()]);
                return Server {
                    port,
                    password,
                    ca,
                    bin,
                    pg_ctl,
                    options,
                    _watchdog: watchdog,
                };
            }
        }
        panic!(
            "PostgreSQL did not start: {}\n{}",
            read(&log),
            read(&dir.join("server.log"))
        );
    }
}

/// A CA, and a certificate it issued for `localhost` and 127.0.0.1 with its
/// key (readable by the server only, as PostgreSQL demands), in `dir`.
/// Returns the CA's file.
fn certificates(dir: &Path, as_root: bool) -> PathBuf {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "hookwire test CA");
    let ca_key = rcgen::KeyPair::generate().expect("a CA key");
    let ca = rcgen::CertifiedIssuer::self_signed(params, ca_key).expect("the CA");
    let key = rcgen::KeyPair::generate().expect("a server key");
    let cert = rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
        .expect("server params")
        .signed_by(&key, &ca)
        .expect("the server certificate");
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).expect("the CA is written");
    std::fs::write(dir.join("server.crt"), cert.pem()).expect("the certificate is written");
    let key_file = dir.join("server.key");
    std::fs::write(&key_file, key.serialize_pem()).expect("the key is written");
    std::fs::set_permissions(
        &key_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .expect("the key is private");
    if as_root {
        let ok = Command::new("chown")
            .arg("postgres:postgres")
            .arg(&key_file)
            .arg(dir.join("server.crt"))
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "cannot hand the key to the postgres user");
    }
    ca_file
}

/// The newest of Debian's PostgreSQL versions installed.
fn binaries() -> PathBuf {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    found
        .pop()
        .map(|(_, bin)| bin)
        .expect("PostgreSQL is installed (Debian's postgresql package: /usr/lib/postgresql/*/bin)")
}

/// Stops the server and removes `dir` once this process has ended.
// Never waited for: it outlives this process on purpose.
#[allow(clippy::zombie_processes)]
fn watchdog(pg_ctl: &Command, data: &Path, dir: &Path) -> ChildStdin {
    let mut stop: Vec<String> = std::iter::once(pg_ctl.get_program())
        .chain(pg_ctl.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    stop.extend(["-D".into(), data.display().to_string()]);
    stop.extend(["stop".into(), "-m".into(), "immediate".into()]);
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(r#"cat >/dev/null; "$@" >/dev/null 2>&1; rm -rf "$DIR""#)
        .arg("watchdog")
        .args(&stop)
        .env("DIR", dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("the watchdog starts");
    child.stdin.take().expect("the watchdog's stdin")
}

/// A port nothing listens on now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}
