//! Test fixtures that run the real thing: the `hookwire` binary on an
//! ephemeral port with its own rules directory and SQLite file.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tempfile::TempDir;

pub const BIN: &str = env!("CARGO_BIN_EXE_hookwire");

/// Reads a fixture shipped in the repository.
pub fn fixture(rel: &str) -> Vec<u8> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

pub struct Daemon {
    pub dir: TempDir,
    pub addr: SocketAddr,
    child: Option<Child>,
    pub log: Arc<Mutex<String>>,
    env: Vec<(String, String)>,
    args: Vec<String>,
}

impl Daemon {
    /// Starts a daemon with these rule files (name → content).
    pub fn start(files: &[(&str, &str)]) -> Daemon {
        Self::start_with(files, &[], &[])
    }

    pub fn start_with(files: &[(&str, &str)], env: &[(&str, &str)], args: &[&str]) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("rules")).unwrap();
        for (name, content) in files {
            write(&dir.path().join("rules").join(name), content);
        }
        let mut d = Daemon {
            dir,
            addr: "127.0.0.1:0".parse().unwrap(),
            child: None,
            log: Arc::new(Mutex::new(String::new())),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            args: args.iter().map(|s| s.to_string()).collect(),
        };
        d.spawn("127.0.0.1:0");
        d
    }

    fn spawn(&mut self, listen: &str) {
        let mut cmd = Command::new(BIN);
        cmd.arg("serve")
            .arg("--listen")
            .arg(listen)
            .arg("--rules")
            .arg(self.rules_dir())
            .arg("--database")
            .arg(format!("sqlite://{}", self.db_path().display()))
            .args(&self.args)
            .env_remove("HOOKWIRE_ADMIN_TOKEN")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start hookwire");
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = self.log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut l = log.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let (false, Some(addr)) =
                    (sent, line.strip_prefix("hookwire listening on http://"))
                {
                    let _ = tx.send(addr.trim().to_owned());
                    sent = true;
                }
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(a) => a,
            Err(_) => panic!("hookwire did not start; log:\n{}", self.log.lock().unwrap()),
        };
        self.addr = addr.parse().unwrap();
        self.child = Some(child);
    }

    pub fn rules_dir(&self) -> PathBuf {
        self.dir.path().join("rules")
    }

    pub fn db_path(&self) -> PathBuf {
        self.dir.path().join("hookwire.db")
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn write_rule(&self, name: &str, content: &str) {
        write(&self.rules_dir().join(name), content);
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// SIGKILL: no chance to flush or clean up.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts again on the same port, rules and database.
    pub fn restart(&mut self) {
        self.kill();
        let listen = self.addr.to_string();
        self.spawn(&listen);
    }

    /// Rows of a query against the daemon's database, read through a separate connection.
    pub fn db_count(&self, sql: &str) -> i64 {
        let conn = rusqlite::Connection::open(self.db_path()).unwrap();
        conn.query_row(sql, [], |r| r.get(0)).unwrap()
    }

    /// Waits until `/api/rules` satisfies `pred`.
    pub async fn wait_rules(
        &self,
        what: &str,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let v: serde_json::Value = client()
                .get(self.url("/api/rules"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if pred(&v) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; last /api/rules: {v:#}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn write(path: &Path, content: &str) {
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p).unwrap();
    }
    std::fs::write(path, content).unwrap();
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Runs the binary with arguments in a directory; returns (exit code, stdout, stderr).
pub fn run_cli(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(dir).args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
