//! A 2xx means the event is on disk (SPEC §1 promise 1, §7).

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{Daemon, client, fixture};

const RULES: &str = "sources:\n  github: {}\nrules:\n  - name: all\n    source: github\n    actions:\n      - command: { argv: [/bin/true] }\n";

/// What this proves: every acknowledged event, with its delivery, is in the
/// database as the next process sees it, although the daemon was killed with
/// no chance to flush, and the daemon starts again on that file. It shows that
/// nothing acknowledged lives only in the process's memory or in a buffer a
/// clean exit would have written.
///
/// What it does not prove: that the event reached the disk. SIGKILL keeps the
/// kernel's page cache, so this passes with `synchronous=OFF`, and the kill
/// comes after every answer was sent. That the acknowledgement waits for the
/// fsync is `every_acknowledgement_follows_the_fsync_of_the_wal_that_holds_its_event`.
#[tokio::test]
async fn acknowledged_events_survive_sigkill() {
    let mut d = Daemon::start(&[("rules.yaml", RULES)]);
    let body = fixture("examples/payloads/push-branch.json");
    let acked = send_concurrently(&d, &body, 8, 25).await;
    d.kill();
    assert_eq!(acked.len(), 200);
    // The daemon starts again on the same database, and has every one.
    d.restart();
    for id in &acked {
        let e = d.event(id).await;
        let e = e.unwrap_or_else(|| panic!("acknowledged event {id} lost"));
        assert_eq!(
            e["deliveries"].as_array().unwrap().len(),
            1,
            "delivery of {id} lost"
        );
    }

    let r = client()
        .post(d.url("/hooks/github"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
}

/// Posts `body` from `clients` concurrent senders, `each` times per sender,
/// so commits are shared; returns every acknowledged event id.
async fn send_concurrently(d: &Daemon, body: &[u8], clients: usize, each: usize) -> Vec<String> {
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (url, body) = (d.url("/hooks/github"), body.to_vec());
        tasks.push(tokio::spawn(async move {
            let c = client();
            let mut ids = Vec::new();
            for _ in 0..each {
                let r = c
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 202);
                ids.push(
                    r.json::<Value>().await.unwrap()["event_id"]
                        .as_str()
                        .unwrap()
                        .to_owned(),
                );
            }
            ids
        }));
    }
    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(t.await.unwrap());
    }
    acked
}

#[tokio::test]
async fn store_failure_answers_503_with_retry_after_and_recovers() {
    let d = Daemon::start(&[("rules.yaml", RULES)]);
    // Another process holds the write lock longer than the store waits for
    // it (a fault injected into SQLite itself: the one place these tests
    // touch the file).
    let conn = rusqlite::Connection::open(d.db_path()).unwrap();
    conn.execute_batch("BEGIN EXCLUSIVE; INSERT INTO dedup (source, key, event_id, created_at_ms) VALUES ('x', 'y', 'z', 0);").unwrap();
    let r = client()
        .post(d.url("/hooks/github"))
        .header("content-type", "application/json")
        .body("{}")
        .timeout(std::time::Duration::from_secs(60))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    assert!(r.headers().contains_key("x-request-id"));
    conn.execute_batch("ROLLBACK;").unwrap();
    let r = client()
        .post(d.url("/hooks/github"))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "the daemon recovers once the store does");
}

/// The system calls the trace keeps: writes to files and sockets, and syncs.
const TRACED: &str = "trace=write,writev,pwrite64,pwritev,pwritev2,sendto,sendmsg,fsync,fdatasync";

/// A 202 leaves only after its event's transaction is on the disk. The daemon
/// runs under strace; for every acknowledged event the trace must show, in
/// this order: a write to the WAL holding the event's row, the WAL's commit
/// frame, an fsync of the WAL that returned, and only then the first byte of
/// the `202` on the sender's socket. strace logs a call when the thread
/// stops at it, so the file's line order is the order the kernel saw.
/// With `synchronous=OFF` (never synced) or `NORMAL` (the WAL synced only at
/// checkpoints) this fails and names the events acknowledged too early.
#[tokio::test]
async fn every_acknowledgement_follows_the_fsync_of_the_wal_that_holds_its_event() {
    let strace = find_program("strace").unwrap_or_else(|| {
        panic!(
            "strace is not installed: this test traces the daemon's system calls \
             to prove that a 202 follows the fsync of its event (.ci/run installs it)"
        )
    });
    let trace_dir = tempfile::tempdir().unwrap();
    let trace_file = trace_dir.path().join("trace");
    let d = Daemon::start_wrapped(
        &[("rules.yaml", RULES)],
        &[],
        &[],
        &[
            strace.to_str().unwrap(),
            // Every thread (the store's writer, the HTTP workers), stopping
            // only at the traced calls; strings whole and in hex (`\xHH`),
            // file descriptors with their paths.
            "-f",
            "--seccomp-bpf",
            "-qq",
            "-xx",
            "-y",
            "-s",
            "65536",
            "-e",
            TRACED,
            "-o",
            trace_file.to_str().unwrap(),
        ],
    );
    // strace does not pass signals on, so the test ends the daemon itself
    // (and kills it if the test fails first: dropped before `d`).
    let daemon = KillOnDrop {
        pid: only_child(d.pid()),
        parent: d.pid(),
    };
    let wal = format!(
        "{}-wal",
        std::fs::canonicalize(d.db_path()).unwrap().display()
    );

    let body = fixture("examples/payloads/push-branch.json");
    let acked = send_concurrently(&d, &body, 8, 25).await;
    assert_eq!(acked.len(), 200);

    // The whole trace is in the file once strace has exited.
    daemon.kill();
    wait_exited(d.pid(), Duration::from_secs(30)).await;
    let text = std::fs::read_to_string(&trace_file).unwrap();
    let (acks, early) = check_trace(&text, &wal);
    let missing: Vec<&String> = acked.iter().filter(|id| !acks.contains_key(*id)).collect();
    let extra: Vec<&String> = acks.keys().filter(|id| !acked.contains(id)).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "the trace shows other 202s than the senders got: missing {missing:?}, extra {extra:?}"
    );
    assert!(
        early.is_empty(),
        "{} of {} acknowledgements were sent before their event reached the disk:\n{}",
        early.len(),
        acked.len(),
        early[..early.len().min(10)].join("\n")
    );
}

/// The checker itself, on traces written by hand: it must see a 202 that
/// another thread sends while the fsync is still under way.
#[test]
fn the_trace_check_catches_an_answer_sent_while_the_fsync_runs() {
    let wal = "/db/hookwire.db-wal";
    let id = "evt_01m8ts7ddcwc5yr6bbwp1ssgbr";
    let line = |pid: u32, call: &str, fd: &str, strings: &[&[u8]], end: &str| {
        let strings: Vec<String> = strings.iter().map(|s| format!("\"{}\"", hex(s))).collect();
        let mut args = vec![format!("{}<{}>", 5, hex(fd.as_bytes()))];
        args.extend(strings);
        // Padded as strace pads pids narrower than the widest.
        format!("{pid:<5} {call}({}{end}\n", args.join(", "))
    };
    let mut page = vec![0u8; 4096];
    page[100..100 + id.len()].copy_from_slice(id.as_bytes());
    let commit_header: &[u8] = &[
        0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    let body = format!("{{\"event_id\":\"{id}\",\"matched\":[]}}");
    let http = format!(
        "HTTP/1.1 202 Accepted\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let frame = format!(
        "{}{}",
        line(1, "pwrite64", wal, &[commit_header], ", 24, 32) = 24"),
        line(1, "pwrite64", wal, &[&page], ", 4096, 56) = 4096")
    );
    let ack = line(
        2,
        "writev",
        "socket:[7]",
        &[http.as_bytes()],
        &format!(") = {}", http.len()),
    );
    let synced = format!("{}1     fsync(5<{}>) = 0\n", frame, hex(wal.as_bytes()));

    // Synced, then answered: the id's page is the commit frame's own page.
    let (acks, early) = check_trace(&format!("{synced}{ack}"), wal);
    assert_eq!(acks.len(), 1);
    assert!(early.is_empty(), "{early:?}");

    // Answered by another thread while the fsync had not returned.
    let racing = format!(
        "{frame}1     fsync(5<{}> <unfinished ...>\n{ack}1     <... fsync resumed>) = 0\n",
        hex(wal.as_bytes())
    );
    let (_, early) = check_trace(&racing, wal);
    assert!(
        early[0].contains("before the WAL holding it was synced"),
        "{early:?}"
    );

    // The kill cut off the thread sending the answer: it was sent all the same.
    let cut_off = ack.replace(&format!(") = {}", http.len()), " <unfinished ...>");
    let (acks, _) = check_trace(
        &format!("{synced}{cut_off}2     <... writev resumed>) = ?\n"),
        wal,
    );
    assert_eq!(acks.len(), 1);

    // Answered, never synced; answered, never written.
    let (_, early) = check_trace(&format!("{frame}{ack}"), wal);
    assert!(early[0].contains("never synced"), "{early:?}");
    let (_, early) = check_trace(&ack, wal);
    assert!(early[0].contains("never written to the WAL"), "{early:?}");
}

/// `\xHH` for each byte, as `strace -xx` prints strings.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("\\x{b:02x}")).collect()
}

/// Reads a trace: every acknowledged event with the line of its `202`, and
/// one message per acknowledgement that is not preceded, in order, by a WAL
/// write holding its event, that write's commit frame, and an fsync of the
/// WAL that returned.
fn check_trace(text: &str, wal: &str) -> (HashMap<String, usize>, Vec<String>) {
    let calls = parse_trace(text, |fd| fd == wal || fd.starts_with("socket:"));
    let acks = acknowledgements(&calls);
    let wal_calls: Vec<&Call> = calls.iter().filter(|c| c.fd == wal).collect();
    // The first WAL write that holds each event id (its row, its index entry, its delivery).
    let mut first_write: HashMap<String, usize> = HashMap::new();
    for (i, c) in wal_calls.iter().enumerate() {
        if c.is_write() && c.ret > 0 {
            for id in event_ids(&c.data) {
                first_write.entry(id).or_insert(i);
            }
        }
    }
    let mut early = Vec::new();
    let mut by_line: Vec<(&String, &usize)> = acks.iter().collect();
    by_line.sort_by_key(|(_, line)| **line);
    for (id, &ack) in by_line {
        let line = |i: usize| wal_calls[i].start + 1;
        let Some(&w) = first_write.get(id) else {
            early.push(format!(
                "{id}: acknowledged (trace line {}) but never written to the WAL",
                ack + 1
            ));
            continue;
        };
        // A frame is a 24-byte header, then its page. A commit frame's header
        // has the database size after the commit in bytes 4..8; other frames
        // have zero there. The id's page may be the commit frame's own, so the
        // search starts at the header of the id's frame.
        let Some(commit) =
            (w.saturating_sub(1)..wal_calls.len()).find(|&i| wal_calls[i].is_commit_header())
        else {
            early.push(format!(
                "{id}: acknowledged (trace line {}); WAL write at line {} but no commit frame after it",
                ack + 1,
                line(w)
            ));
            continue;
        };
        let committed = wal_calls.get(commit + 1).map_or(usize::MAX, |c| c.end);
        let sync = wal_calls[commit..]
            .iter()
            .find(|c| c.is_sync() && c.start > committed);
        match sync {
            Some(s) if s.end < ack => {}
            Some(s) => early.push(format!(
                "{id}: acknowledged at trace line {}, before the WAL holding it was synced \
                 (written at line {}, commit frame at line {}, fsync returned at line {})",
                ack + 1,
                line(w),
                line(commit),
                s.end + 1
            )),
            None => early.push(format!(
                "{id}: acknowledged at trace line {}, and the WAL holding it was never synced \
                 (written at line {}, commit frame at line {})",
                ack + 1,
                line(w),
                line(commit)
            )),
        }
    }
    (acks, early)
}

/// One system call as strace logged it.
struct Call {
    /// Lines of the trace (0-based) where the call began and where it returned.
    start: usize,
    end: usize,
    name: String,
    /// What `-y` prints for the first argument: a path or `socket:[inode]`.
    fd: String,
    /// The bytes of every string argument, in order.
    data: Vec<u8>,
    /// The return value; -1 for an error or a call that never returned.
    ret: i64,
}

impl Call {
    fn is_write(&self) -> bool {
        matches!(
            self.name.as_str(),
            "write" | "writev" | "pwrite64" | "pwritev" | "pwritev2" | "sendto" | "sendmsg"
        )
    }

    fn is_sync(&self) -> bool {
        matches!(self.name.as_str(), "fsync" | "fdatasync") && self.ret == 0
    }

    fn is_commit_header(&self) -> bool {
        self.is_write() && self.ret == 24 && self.data.len() == 24 && self.data[4..8] != [0; 4]
    }
}

/// The calls on file descriptors `keep` accepts, in the order they began.
/// Threads interleave: a call another thread's line interrupts is printed as
/// `NAME(ARGS <unfinished ...>` and ends on a later `<... NAME resumed>) = RET`.
fn parse_trace(text: &str, keep: impl Fn(&str) -> bool) -> Vec<Call> {
    let mut pending: HashMap<&str, Call> = HashMap::new();
    let mut calls = Vec::new();
    for (n, line) in text.lines().enumerate() {
        // strace pads the pid to the width of the widest one seen: `1595  write(`.
        let Some((pid, rest)) = line.split_once(' ') else {
            continue;
        };
        let rest = rest.trim_start();
        if rest.starts_with("<... ") {
            if let Some(mut c) = pending.remove(pid) {
                c.end = n;
                c.ret = return_value(rest, &c);
                calls.push(c);
            }
            continue;
        }
        let Some((name, args)) = rest.split_once('(') else {
            continue;
        };
        if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            continue; // signals, exits
        }
        let fd = fd_path(args);
        if !keep(&fd) {
            continue;
        }
        let (args, unfinished) = match args.strip_suffix(" <unfinished ...>") {
            Some(a) => (a, true),
            None => (args, false),
        };
        let mut call = Call {
            start: n,
            end: n,
            name: name.to_owned(),
            fd,
            // With -xx a quote inside a string is `\x22`: every other piece is a string.
            data: args.split('"').skip(1).step_by(2).flat_map(unhex).collect(),
            ret: -1,
        };
        if unfinished {
            pending.insert(pid, call);
        } else {
            call.ret = return_value(args, &call);
            calls.push(call);
        }
    }
    calls.sort_by_key(|c| c.start);
    calls
}

/// `… = 4096` → 4096; `… = -1 EAGAIN (…)` → -1. A call the kill cut off
/// (`= ?`) returned nothing strace saw: a write counts as whole (its peer may
/// well have received it), a sync as not done.
fn return_value(s: &str, call: &Call) -> i64 {
    match s
        .rsplit_once("= ")
        .and_then(|(_, r)| r.split_whitespace().next())
    {
        Some("?") if call.is_write() => i64::try_from(call.data.len()).unwrap(),
        Some(r) => r.parse().unwrap_or(-1),
        None => -1,
    }
}

/// `12<\x2f\x74…>, …` → the path `-y` printed for fd 12 (in hex with -xx).
fn fd_path(args: &str) -> String {
    let Some((fd, rest)) = args.split_once('<') else {
        return String::new();
    };
    if fd.is_empty() || !fd.bytes().all(|b| b.is_ascii_digit()) {
        return String::new();
    }
    let end = rest.find(['<', '>']).unwrap_or(rest.len());
    String::from_utf8_lossy(&unhex(&rest[..end])).into_owned()
}

/// strace's `\xHH` escapes to bytes; anything else is taken as it is.
fn unhex(s: &str) -> Vec<u8> {
    fn nibble(c: u8) -> Option<u8> {
        (c as char).to_digit(16).map(|d| d as u8)
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len() / 4);
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && b.get(i + 1) == Some(&b'x')
            && i + 3 < b.len()
            && let (Some(h), Some(l)) = (nibble(b[i + 2]), nibble(b[i + 3]))
        {
            out.push(h << 4 | l);
            i += 4;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// Every `evt_` id in these bytes.
fn event_ids(data: &[u8]) -> Vec<String> {
    const LEN: usize = "evt_".len() + 26;
    let mut ids = Vec::new();
    let mut i = 0;
    while i + LEN <= data.len() {
        if data[i..].starts_with(b"evt_")
            && data[i + 4..i + LEN].iter().all(u8::is_ascii_alphanumeric)
        {
            ids.push(String::from_utf8_lossy(&data[i..i + LEN]).into_owned());
            i += LEN;
        } else {
            i += 1;
        }
    }
    ids
}

/// A connection's bytes as the daemon sent them, and for each write where it
/// began in them and on which trace line.
type Stream = (Vec<u8>, Vec<(usize, usize)>);

/// Each acknowledged event id and the trace line of the write that sent the
/// first byte of its `202`, from the bytes the daemon sent on each connection.
fn acknowledgements(calls: &[Call]) -> HashMap<String, usize> {
    let mut streams: HashMap<&str, Stream> = HashMap::new();
    for c in calls
        .iter()
        .filter(|c| c.fd.starts_with("socket:") && c.is_write() && c.ret > 0)
    {
        let (bytes, writes) = streams.entry(&c.fd).or_default();
        writes.push((bytes.len(), c.start));
        let sent = usize::try_from(c.ret).unwrap().min(c.data.len());
        bytes.extend_from_slice(&c.data[..sent]);
    }
    let mut acks = HashMap::new();
    for (bytes, writes) in streams.values() {
        let mut pos = 0;
        // Only connections whose bytes are HTTP/1.1 answers; others (the
        // runtime's wakers, outgoing requests) begin otherwise.
        while bytes[pos..].starts_with(b"HTTP/1.1 ") {
            let Some(head_len) = bytes[pos..].windows(4).position(|w| w == b"\r\n\r\n") else {
                break;
            };
            let head = String::from_utf8_lossy(&bytes[pos..pos + head_len]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse().unwrap());
            let body_start = pos + head_len + 4;
            let body = &bytes[body_start..(body_start + len).min(bytes.len())];
            if head.starts_with("http/1.1 202") {
                let v: Value = serde_json::from_slice(body).unwrap();
                let id = v["event_id"].as_str().unwrap().to_owned();
                let line = writes
                    .iter()
                    .rev()
                    .find(|(offset, _)| *offset <= pos)
                    .map(|(_, line)| *line)
                    .unwrap();
                acks.insert(id, line);
            }
            pos = body_start + len;
        }
    }
    acks
}

/// A program on `PATH`.
fn find_program(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// The one child of `pid`: the daemon strace started.
fn only_child(pid: u32) -> u32 {
    let path = format!("/proc/{pid}/task/{pid}/children");
    let children = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    match children.split_whitespace().collect::<Vec<_>>()[..] {
        [one] => one.parse().unwrap(),
        ref other => panic!("strace (pid {pid}) has children {other:?}, expected the daemon alone"),
    }
}

/// Waits until `pid` (a child of this process) has exited.
async fn wait_exited(pid: u32, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        // The field after the command name: R, S, D … or Z once it has exited.
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| s.rsplit_once(") ")?.1.chars().next());
        if matches!(state, None | Some('Z' | 'X')) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "pid {pid} still running after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// SIGKILL for the daemon strace started, at the latest when dropped; only
/// while it is still strace's child, so that a pid the system has given to
/// another process since (a daemon of a test running alongside) is left alone.
struct KillOnDrop {
    pid: u32,
    parent: u32,
}

impl KillOnDrop {
    fn kill(&self) {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).unwrap_or_default();
        // `pid (comm) state ppid …`
        let ppid = stat
            .rsplit_once(") ")
            .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok());
        if ppid == Some(self.parent) {
            let pid = nix::unistd::Pid::from_raw(i32::try_from(self.pid).unwrap());
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        }
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        self.kill();
    }
}

/// SPEC §7: one SQLite file belongs to one process. A second `serve` on the
/// file of a running daemon stops at once with a message naming the file
/// and PostgreSQL; the first keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_on_one_sqlite_file_is_refused() {
    let d = Daemon::start_with(&[("app.yaml", "sources:\n  app: {}\n")], &[], &[]);
    let db = d.db_path();
    let url = format!("sqlite://{}", db.display());
    let rules = d.rules_dir();
    let (code, _, stderr) = crate::support::run_cli(
        d.dir.path(),
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--database",
            &url,
            "--rules",
            rules.to_str().unwrap(),
        ],
        &[],
    );
    assert_ne!(code, 0, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{} is in use by another hookwire process",
            db.display()
        )),
        "{stderr}"
    );
    assert!(stderr.contains("postgres://"), "{stderr}");
    let r = client()
        .post(d.url("/hooks/app"))
        .body("{}")
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
}
