//! Test fixtures that run the real thing: the `hookwire` binary on an
//! ephemeral port with its own rules directory and SQLite file.
#![allow(clippy::disallowed_methods)] // test fixtures start the daemon and other processes

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
    /// A command the daemon runs under (e.g. `unshare …`), its argv prefix.
    wrapper: Vec<String>,
    /// `http`, or `https` when started with a certificate.
    pub scheme: String,
    /// The SQLite file, `hookwire.db` in `dir` unless the test chose one.
    db: PathBuf,
    /// `--database`: `sqlite://` of `db`, or a PostgreSQL URL.
    database: String,
}

impl Daemon {
    /// Starts a daemon with these rule files (name → content).
    pub fn start(files: &[(&str, &str)]) -> Daemon {
        Self::start_with(files, &[], &[])
    }

    pub fn start_with(files: &[(&str, &str)], env: &[(&str, &str)], args: &[&str]) -> Daemon {
        Self::start_wrapped(files, env, args, &[])
    }

    /// Runs `wrapper… hookwire serve …`: the wrapper ends by exec'ing its arguments.
    pub fn start_wrapped(
        files: &[(&str, &str)],
        env: &[(&str, &str)],
        args: &[&str],
        wrapper: &[&str],
    ) -> Daemon {
        Self::start_full(files, env, args, wrapper, None)
    }

    /// Starts a daemon whose SQLite file is `db` (e.g. on a small tmpfs).
    pub fn start_on_database(files: &[(&str, &str)], db: &Path) -> Daemon {
        Self::start_full(files, &[], &[], &[], Some(db.to_owned()))
    }

    /// A daemon on `database` (a `postgres://` URL), with `args`.
    pub fn start_on_url(files: &[(&str, &str)], args: &[&str], database: &str) -> Daemon {
        Self::start_on(files, &[], args, Some(database))
    }

    /// A daemon with `env` and `args`, on `database` (a `postgres://` URL)
    /// or, when `None`, on a SQLite file of its own.
    pub fn start_on(
        files: &[(&str, &str)],
        env: &[(&str, &str)],
        args: &[&str],
        database: Option<&str>,
    ) -> Daemon {
        let mut d = Self::prepare(files, env, args, &[], None);
        if let Some(url) = database {
            d.database = url.to_owned();
        }
        d.spawn("127.0.0.1:0");
        d
    }

    /// Sets (or with `None` removes) a variable of the daemon's
    /// environment, from its next start on.
    pub fn set_env(&mut self, key: &str, value: Option<&str>) {
        self.env.retain(|(k, _)| k != key);
        if let Some(v) = value {
            self.env.push((key.to_owned(), v.to_owned()));
        }
    }

    /// Waits for the daemon to exit by itself (a fault that kills it).
    pub async fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = std::time::Instant::now() + within;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the daemon did not exit within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn start_full(
        files: &[(&str, &str)],
        env: &[(&str, &str)],
        args: &[&str],
        wrapper: &[&str],
        db: Option<PathBuf>,
    ) -> Daemon {
        let mut d = Self::prepare(files, env, args, wrapper, db);
        d.spawn("127.0.0.1:0");
        d
    }

    fn prepare(
        files: &[(&str, &str)],
        env: &[(&str, &str)],
        args: &[&str],
        wrapper: &[&str],
        db: Option<PathBuf>,
    ) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let db = db.unwrap_or_else(|| dir.path().join("hookwire.db"));
        std::fs::create_dir_all(dir.path().join("rules")).unwrap();
        for (name, content) in files {
            write(&dir.path().join("rules").join(name), content);
        }
        Daemon {
            dir,
            addr: "127.0.0.1:0".parse().unwrap(),
            child: None,
            log: Arc::new(Mutex::new(String::new())),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            args: args.iter().map(|s| s.to_string()).collect(),
            wrapper: wrapper.iter().map(|s| s.to_string()).collect(),
            scheme: "http".into(),
            database: format!("sqlite://{}", db.display()),
            db,
        }
    }

    fn spawn(&mut self, listen: &str) {
        if let Err(log) = self.try_spawn(listen) {
            panic!("hookwire did not start; log:\n{log}");
        }
    }

    /// Starts the daemon on `listen`; the log when it exits before listening.
    fn try_spawn(&mut self, listen: &str) -> Result<(), String> {
        let mut cmd = match self.wrapper.split_first() {
            None => Command::new(BIN),
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(BIN);
                c
            }
        };
        cmd.arg("serve");
        // A test may choose the listen address itself (e.g. 0.0.0.0:0).
        if !self.args.iter().any(|a| a == "--listen") {
            cmd.arg("--listen").arg(listen);
        }
        cmd.arg("--rules")
            .arg(self.rules_dir())
            .arg("--database")
            .arg(&self.database)
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
                if let (false, Some(url)) = (sent, line.strip_prefix("hookwire listening on ")) {
                    let _ = tx.send(url.trim().to_owned());
                    sent = true;
                }
            }
        });
        let url = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                // The stderr reader may still be copying the last lines.
                std::thread::sleep(Duration::from_millis(100));
                return Err(self.log.lock().unwrap().clone());
            }
        };
        let (scheme, addr) = url.split_once("://").unwrap();
        self.scheme = scheme.to_owned();
        self.addr = addr.parse().unwrap();
        self.child = Some(child);
        Ok(())
    }

    pub fn rules_dir(&self) -> PathBuf {
        self.dir.path().join("rules")
    }

    pub fn db_path(&self) -> PathBuf {
        self.db.clone()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}://{}{}", self.scheme, self.addr, path)
    }

    pub fn write_rule(&self, name: &str, content: &str) {
        write(&self.rules_dir().join(name), content);
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// `GET path` (no token), its body as JSON.
    pub async fn get_json(&self, path: &str) -> serde_json::Value {
        client()
            .get(self.url(path))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// `GET path` (no token), its body as text.
    pub async fn get_text(&self, path: &str) -> String {
        client()
            .get(self.url(path))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// `POST path` with a JSON body; the answer's body as JSON.
    pub async fn post_json(&self, path: &str, body: impl Into<reqwest::Body>) -> serde_json::Value {
        client()
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Waits until the daemon's log satisfies `pred`; returns the log.
    pub async fn wait_log(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let log = self.log_text();
            if pred(&log) {
                return log;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what} in the log:\n{log}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap()
    }

    /// SIGKILL: no chance to flush or clean up.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts again on the same port, rules and database.
    /// Kills and starts again on the same address, so clients keep their
    /// URLs. Between the two, another test may have been given that port
    /// (any bind to port 0 can get it): then, after a few tries, on a new one.
    pub fn restart(&mut self) {
        self.kill();
        let listen = self.addr.to_string();
        for _ in 0..20 {
            match self.try_spawn(&listen) {
                Ok(()) => return,
                Err(log) if log.contains("cannot listen on") => {
                    std::thread::sleep(Duration::from_millis(100))
                }
                Err(log) => panic!("hookwire did not restart; log:\n{log}"),
            }
        }
        self.spawn("127.0.0.1:0");
    }

    /// `GET path` of the admin API, with the daemon's admin token if it has one.
    pub async fn api(&self, path: &str) -> reqwest::Response {
        let mut req = client().get(self.url(path));
        if let Some(token) = self.admin_token() {
            req = req.bearer_auth(token);
        }
        req.send().await.unwrap()
    }

    fn admin_token(&self) -> Option<&str> {
        let at = self.args.iter().position(|a| a == "--admin-token")?;
        self.args.get(at + 1).map(String::as_str)
    }

    /// One stored event as the admin API shows it; `None` when there is none.
    pub async fn event(&self, id: &str) -> Option<serde_json::Value> {
        let r = self.api(&format!("/api/events/{id}")).await;
        match r.status().as_u16() {
            404 => None,
            200 => Some(r.json().await.unwrap()),
            other => panic!("GET /api/events/{id}: {other}"),
        }
    }

    /// Every item of a paged admin list (`events` or `deliveries`), newest
    /// first; `query` narrows it (`source=github`, `status=dead`).
    pub async fn list(&self, what: &str, query: &str) -> Vec<serde_json::Value> {
        let mut all = Vec::new();
        let mut before = String::new();
        loop {
            let page: serde_json::Value = self
                .api(&format!("/api/{what}?limit=500&{query}{before}"))
                .await
                .json()
                .await
                .unwrap();
            let items = page[what].as_array().cloned().unwrap_or_default();
            all.extend(items);
            match page["next_before"].as_str() {
                Some(next) if page[what].as_array().is_some_and(|a| a.len() == 500) => {
                    before = format!("&before={next}");
                }
                _ => return all,
            }
        }
    }

    /// The sum of every series of a counter or gauge in `/metrics`
    /// (`hookwire_events_stored_total`), 0 when it has none yet.
    pub async fn metric(&self, name: &str) -> f64 {
        let text = self.get_text("/metrics").await;
        text.lines()
            .filter(|l| {
                l.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// How many events are stored (of one source, with `source=NAME`).
    pub async fn count_events(&self, query: &str) -> usize {
        self.list("events", query).await.len()
    }

    /// How many deliveries are in any of `states` (every delivery when empty).
    pub async fn count_deliveries(&self, states: &[&str]) -> usize {
        if states.is_empty() {
            return self.list("deliveries", "").await.len();
        }
        let mut n = 0;
        for s in states {
            n += self.list("deliveries", &format!("status={s}")).await.len();
        }
        n
    }

    /// How many attempts were made, over every stored delivery's life.
    pub async fn count_attempts(&self) -> i64 {
        self.list("deliveries", "")
            .await
            .iter()
            .map(|d| d["attempts"].as_i64().unwrap())
            .sum()
    }

    /// Stops the daemon (SIGTERM) and opens its database through hookwire's
    /// own store, to look at what was written at rest. Every attempt of every
    /// delivery, oldest delivery first.
    pub async fn stored_attempts(&mut self) -> Vec<hookwire::store::StoredAttempt> {
        assert!(self.terminate().success());
        let url = self.database.clone();
        let store = hookwire::store::open(&url).unwrap();
        let page = hookwire::store::Page {
            limit: 1000,
            before: None,
        };
        let mut all = Vec::new();
        for d in store.delivery_page(None, page).await.unwrap().iter().rev() {
            all.extend(store.attempts(&d.id).await.unwrap());
        }
        all
    }

    /// SIGTERM, then the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("running");
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status();
        c.wait().unwrap()
    }

    /// Waits until `/api/rules` satisfies `pred`.
    pub async fn wait_rules(
        &self,
        what: &str,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let v = self.get_json("/api/rules").await;
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

/// A small tmpfs mounted for one test (we run as root), unmounted when
/// dropped — also when the test panics. Declare it before the daemon that
/// uses it, so that the daemon is stopped first.
pub struct Tmpfs {
    dir: TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (`mount -o size=…`, e.g. `2m`); panics with
    /// mount's message when that is impossible here.
    pub fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "cannot mount a tmpfs (the test needs root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `path` until the file system is full; returns the bytes written.
    pub fn fill(&self, path: &Path) -> u64 {
        use std::io::Write as _;
        let mut f = std::fs::File::create(path).unwrap();
        let chunk = vec![0xa5u8; 4096];
        let mut written = 0u64;
        // Page by page, then byte by byte: not even a sliver of a block stays free.
        for size in [4096, 1] {
            while f.write_all(&chunk[..size]).is_ok() {
                written += size as u64;
            }
        }
        let _ = f.sync_all();
        written
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: a process still holding a file there does not keep the mount busy.
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
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

/// Scripted answers per path: `(status, Retry-After)`, first answer first.
type Script = std::collections::HashMap<String, std::collections::VecDeque<(u16, Option<String>)>>;

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub at: Instant,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }

    /// How many times the header `name` (lowercase) arrived.
    pub fn count(&self, name: &str) -> usize {
        self.headers.iter().filter(|(k, _)| k == name).count()
    }

    /// This request checked by hookwire's own verifier, now; `verify` is a
    /// rule file's `verify:` block as JSON, e.g. `{"github": {"secret": "s"}}`.
    pub fn verify(&self, verify: serde_json::Value) -> Result<(), hookwire::verify::VerifyError> {
        use hookwire::verify::{Received, Verifier, VerifyConfig};
        let config: VerifyConfig = serde_json::from_value(verify).unwrap();
        let verifier = Verifier::compile(&config).unwrap();
        let mut headers = axum::http::HeaderMap::new();
        for (k, v) in &self.headers {
            headers.append(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                axum::http::HeaderValue::from_str(v).unwrap(),
            );
        }
        verifier.verify(&Received {
            headers: &headers,
            query: None,
            body: &self.body,
            now: std::time::SystemTime::now(),
        })
    }
}

/// A real HTTP server on 127.0.0.1:0 that records every request and answers
/// with statuses a test scripts per path (then 200): `[500, 500]` means two
/// failures, then success. `/redirect` answers 302 to `/redirected`.
#[derive(Clone)]
pub struct Receiver {
    pub addr: SocketAddr,
    script: Arc<Mutex<Script>>,
    /// A JSON body answered on a path instead of `answer {status}`.
    bodies: Arc<Mutex<std::collections::HashMap<String, String>>>,
    seen: Arc<Mutex<Vec<Received>>>,
    notify: Arc<tokio::sync::Notify>,
}

impl Receiver {
    pub async fn start() -> Receiver {
        Self::start_on("127.0.0.1:0").await
    }

    /// A receiver on a given address (a target that comes back where it was).
    pub async fn start_on(addr: &str) -> Receiver {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let r = Receiver {
            addr: listener.local_addr().unwrap(),
            script: Arc::default(),
            bodies: Arc::default(),
            seen: Arc::default(),
            notify: Arc::default(),
        };
        let me = r.clone();
        let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
            let me = me.clone();
            async move { me.answer(req).await }
        });
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        r
    }

    async fn answer(&self, req: axum::extract::Request) -> axum::response::Response {
        use axum::response::IntoResponse;
        let (parts, body) = req.into_parts();
        let body = axum::body::to_bytes(body, 16 << 20)
            .await
            .unwrap_or_default()
            .to_vec();
        let path = parts.uri.path().to_owned();
        self.seen.lock().unwrap().push(Received {
            method: parts.method.to_string(),
            path: path.clone(),
            headers: parts
                .headers
                .iter()
                .map(|(k, v)| {
                    (
                        k.to_string(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect(),
            body,
            at: Instant::now(),
        });
        self.notify.notify_waiters();
        if path == "/redirect" {
            return (
                axum::http::StatusCode::FOUND,
                [("location", "/redirected")],
                "moved",
            )
                .into_response();
        }
        let scripted = self
            .script
            .lock()
            .unwrap()
            .get_mut(&path)
            .and_then(|q| q.pop_front());
        let (status, retry_after) = scripted.unwrap_or((200, None));
        let body = self.bodies.lock().unwrap().get(&path).cloned();
        let mut resp = match body {
            Some(json) => (
                axum::http::StatusCode::from_u16(status).unwrap(),
                [("content-type", "application/json")],
                json,
            )
                .into_response(),
            None => (
                axum::http::StatusCode::from_u16(status).unwrap(),
                format!("answer {status}"),
            )
                .into_response(),
        };
        if let Some(ra) = retry_after {
            resp.headers_mut()
                .insert("retry-after", ra.parse().unwrap());
        }
        resp
    }

    /// The next answers for `path`, in order: `(status, Retry-After)`.
    pub fn script(&self, path: &str, answers: &[(u16, Option<&str>)]) {
        self.script.lock().unwrap().insert(
            path.to_owned(),
            answers
                .iter()
                .map(|(s, r)| (*s, r.map(str::to_owned)))
                .collect(),
        );
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Answers `path` with this JSON body (and the scripted statuses).
    pub fn answer_json(&self, path: &str, json: &str) {
        self.bodies
            .lock()
            .unwrap()
            .insert(path.to_owned(), json.to_owned());
    }

    pub fn requests(&self, path: &str) -> Vec<Received> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }

    /// Waits until `path` has seen at least `n` requests.
    pub async fn wait_for(&self, path: &str, n: usize, within: Duration) -> Vec<Received> {
        let deadline = Instant::now() + within;
        loop {
            let notified = self.notify.notified();
            let got = self.requests(path);
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "{path}: {} of {n} requests within {within:?}",
                got.len()
            );
            let _ = tokio::time::timeout(Duration::from_millis(100), notified).await;
        }
    }
}

/// A real SMTP server (mailin-embedded) on 127.0.0.1:0 keeping every message.
pub struct SmtpServer {
    pub addr: SocketAddr,
    pub mail: Arc<Mutex<Vec<Mail>>>,
}

#[derive(Debug, Clone, Default)]
pub struct Mail {
    pub from: String,
    pub to: Vec<String>,
    pub data: String,
}

#[derive(Clone)]
struct MailHandler {
    mail: Arc<Mutex<Vec<Mail>>>,
    current: Mail,
}

impl mailin_embedded::Handler for MailHandler {
    fn data_start(
        &mut self,
        _domain: &str,
        from: &str,
        _is8bit: bool,
        to: &[String],
    ) -> mailin_embedded::Response {
        self.current = Mail {
            from: from.to_owned(),
            to: to.to_vec(),
            data: String::new(),
        };
        mailin_embedded::response::OK
    }

    fn data(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.current.data.push_str(&String::from_utf8_lossy(buf));
        Ok(())
    }

    fn data_end(&mut self) -> mailin_embedded::Response {
        self.mail
            .lock()
            .unwrap()
            .push(std::mem::take(&mut self.current));
        mailin_embedded::response::OK
    }
}

impl SmtpServer {
    pub fn start() -> SmtpServer {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mail = Arc::new(Mutex::new(Vec::new()));
        let mut server = mailin_embedded::Server::new(MailHandler {
            mail: mail.clone(),
            current: Mail::default(),
        });
        server.with_name("smtp.test").with_tcp_listener(listener);
        std::thread::spawn(move || {
            let _ = server.serve();
        });
        SmtpServer { addr, mail }
    }

    pub async fn wait_for(&self, n: usize, within: Duration) -> Vec<Mail> {
        let deadline = Instant::now() + within;
        loop {
            let got = self.mail.lock().unwrap().clone();
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {n} mails within {within:?}",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Sends every request at once, each from a task of its own; the answers
/// as `(status, JSON body)`, in the order of `requests`.
pub async fn send_all(requests: Vec<reqwest::RequestBuilder>) -> Vec<(u16, serde_json::Value)> {
    let tasks: Vec<_> = requests
        .into_iter()
        .map(|r| {
            tokio::spawn(async move {
                let r = r.send().await.unwrap();
                (r.status().as_u16(), r.json().await.unwrap())
            })
        })
        .collect();
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.unwrap());
    }
    answers
}

/// Answers to copies of one deduplicated delivery, as `(status, body)`:
/// the event ids of the `202`s (stored) and of the `200 {"duplicate":true}`s.
/// Any other answer fails the test.
pub fn split_dedup_answers(answers: Vec<(u16, serde_json::Value)>) -> (Vec<String>, Vec<String>) {
    let mut stored = Vec::new();
    let mut duplicates = Vec::new();
    for (status, body) in answers {
        let id = body["event_id"].as_str().map(str::to_owned);
        match (status, id) {
            (202, Some(id)) => stored.push(id),
            (200, Some(id)) => {
                assert_eq!(body["duplicate"], serde_json::json!(true), "{body}");
                duplicates.push(id);
            }
            (other, _) => panic!("unexpected status {other}: {body}"),
        }
    }
    (stored, duplicates)
}
