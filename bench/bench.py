#!/usr/bin/env python3
"""hookwire's benchmark: hookwire, the ceiling and adnanh/webhook, side by side.

Run through `bench/run`, which installs wrk and webhook and builds the release
binaries first. Every scenario runs for --duration seconds under wrk (2 threads,
64 connections, the ~8 KB GitHub push payload), --rounds times, interleaved
(A B C ..., A B C ...). Medians decide the goals; every round is printed.

What is measured, per scenario and round:
  req/s, p50, p99      wrk's own figures (requests answered in the window)
  cpu/req              the server process's utime+stime from /proc over the wrk
                       window, divided by the requests answered
  peak RSS             VmHWM from /proc at the end of the scenario
  executed / acked     commands counted by a byte each appends to a file, and
                       deliveries counted by the receiver, versus the requests
                       answered 2xx; waited for until they stop arriving
  done/s               executed (or delivered) / seconds from the start of the
                       load to the last one

Only the standard library is used, so a fresh machine needs nothing from PyPI.
"""

import argparse
import glob
import hashlib
import hmac
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAYLOAD = os.path.join(ROOT, "examples", "payloads", "push-branch.json")
SECRET = "bench-secret"
MATCH_REF = "refs/heads/master"
NEVER_REF = "refs/heads/never"
REPO = "Codertocat/Hello-World"
TICK = os.sysconf("SC_CLK_TCK")


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- processes


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid):
    """utime + stime of the process itself (not of its children)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def status_kb(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


class Server:
    """A server process whose listening address is read from its stdout."""

    def __init__(self, argv, workdir, env=None, banner=None, port=None):
        self.log_path = os.path.join(workdir, os.path.basename(argv[0]) + ".log")
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            argv,
            cwd=workdir,
            env={**os.environ, **(env or {})},
            stdout=subprocess.PIPE,
            stderr=self.log,
            start_new_session=True,
        )
        if banner:
            line = self.proc.stdout.readline().decode()
            m = re.search(banner + r" on http://(\S+)", line)
            if not m:
                self.stop()
                raise RuntimeError(f"{argv[0]} did not start: {line!r}; see {self.log_path}")
            self.addr = m.group(1)
        else:
            self.addr = f"127.0.0.1:{port}"
            wait_port(port, self)
        # Anything else the server prints goes to its log.
        self.pump = subprocess.Popen(["cat"], stdin=self.proc.stdout, stdout=self.log)

    @property
    def pid(self):
        return self.proc.pid

    def stop(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()


def wait_port(port, server):
    deadline = time.time() + 20
    while time.time() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"server exited with {server.proc.returncode}; see {server.log_path}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port}")


def http_get(url):
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.read().decode()


# ---------------------------------------------------------------- load


def lua_string(data):
    out = []
    for b in data:
        c = chr(b)
        if c == "\\" or c == '"':
            out.append("\\" + c)
        elif 32 <= b < 127:
            out.append(c)
        else:
            out.append("\\%d" % b)
    return '"' + "".join(out) + '"'


WRK_DONE = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "RESULT {\"requests\":%d,\"duration_us\":%d,\"p50_us\":%d,\"p99_us\":%d,\"max_us\":%d," ..
    "\"connect\":%d,\"read\":%d,\"write\":%d,\"status\":%d,\"timeout\":%d}\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), latency.max,
    e.connect, e.read, e.write, e.status, e.timeout))
end
"""


def write_wrk_script(workdir, body):
    sig = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    path = os.path.join(workdir, "post.lua")
    with open(path, "w") as f:
        f.write('wrk.method = "POST"\n')
        f.write("wrk.body = " + lua_string(body) + "\n")
        f.write('wrk.headers["Content-Type"] = "application/json"\n')
        f.write('wrk.headers["X-GitHub-Event"] = "push"\n')
        f.write(f'wrk.headers["X-Hub-Signature-256"] = "{sig}"\n')
        f.write(WRK_DONE)
    return path


def run_wrk(url, script, duration, threads, connections):
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--timeout", "10s", "-s", script, url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    m = re.search(r"^RESULT (\{.*\})$", out, re.M)
    if not m:
        raise RuntimeError("wrk printed no result:\n" + out)
    r = json.loads(m.group(1))
    r["rps"] = r["requests"] / (r["duration_us"] / 1e6)
    # Answers that were not 2xx/3xx are not acknowledgements.
    r["acked"] = r["requests"] - r["status"]
    return r


def wait_for(count_fn, target, started, settle=8.0, limit=300.0):
    """Polls count_fn until it reaches target or stops growing for `settle` s.
    Returns (count, seconds from `started` to the last increase)."""
    last, last_at = count_fn(), time.time()
    deadline = time.time() + limit
    while time.time() < deadline:
        if last >= target:
            break
        time.sleep(0.1)
        now = count_fn()
        if now != last:
            last, last_at = now, time.time()
        elif time.time() - last_at > settle:
            break
    return last, last_at - started


# ---------------------------------------------------------------- rule files


def hookwire_rules(n_rules, matching_action, count_file, receiver):
    """A YAML rule file: `n_rules` rules on one source, the last one matching
    when matching_action is set (otherwise none match)."""
    lines = [
        "sources:",
        "  github:",
        "    verify:",
        f'      github: {{ secret: "{SECRET}" }}',
        "rules:",
    ]
    for i in range(n_rules):
        last = i == n_rules - 1
        ref = MATCH_REF if (last and matching_action) else (NEVER_REF if n_rules == 1 else f"{NEVER_REF}-{i}")
        lines += [
            f"  - name: rule-{i}",
            "    source: github",
            "    when:",
            "      - header: X-GitHub-Event",
            "        equals: push",
            "      - path: $.ref",
            f'        equals: "{ref}"',
            "      - path: $.repository.full_name",
            f'        equals: "{REPO}"',
            "    actions:",
        ]
        if matching_action == "http":
            lines += [
                "      - name: deliver",
                "        http:",
                f'          url: "http://{receiver}/delivered"',
                "          body:",
                '            text: "{{payload.pusher.name}} pushed to {{payload.ref}}"',
            ]
        else:
            lines += [
                "      - name: run",
                "        command:",
                f'          argv: ["/bin/sh", "-c", "printf . >> {count_file}"]',
            ]
    return "\n".join(lines) + "\n"


def peer_hooks(matching, count_file):
    return [
        {
            "id": "github",
            "execute-command": "/bin/sh",
            "pass-arguments-to-command": [
                {"source": "string", "name": "-c"},
                {"source": "string", "name": f"printf . >> {count_file}"},
            ],
            "trigger-rule": {
                "and": [
                    {
                        "match": {
                            "type": "payload-hmac-sha256",
                            "secret": SECRET,
                            "parameter": {"source": "header", "name": "X-Hub-Signature-256"},
                        }
                    },
                    {"match": {"type": "value", "value": "push", "parameter": {"source": "header", "name": "X-GitHub-Event"}}},
                    {
                        "match": {
                            "type": "value",
                            "value": MATCH_REF if matching else NEVER_REF,
                            "parameter": {"source": "payload", "name": "ref"},
                        }
                    },
                    {
                        "match": {
                            "type": "value",
                            "value": REPO,
                            "parameter": {"source": "payload", "name": "repository.full_name"},
                        }
                    },
                ]
            },
        }
    ]


def file_size(path):
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


# ---------------------------------------------------------------- PostgreSQL


class Postgres:
    """Debian's PostgreSQL in `work`, durable as shipped (fsync and
    synchronous_commit on), on an ephemeral port; trust auth on 127.0.0.1.
    As root, initdb and the server run as the `postgres` user."""

    def __init__(self, work):
        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
        if not bins:
            raise RuntimeError("PostgreSQL is not installed (apt-get install postgresql)")
        self.bin = bins[-1]
        # A directory of its own: the server's user cannot enter `work` (0700, root's).
        self.dir = tempfile.mkdtemp(prefix="hookwire-bench-pg-")
        self.as_root = os.geteuid() == 0
        if self.as_root:
            shutil.chown(self.dir, "postgres", "postgres")
        self.data = os.path.join(self.dir, "data")
        self.port = free_port()
        self.run("initdb", "-D", self.data, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C")
        self.run("pg_ctl", "-D", self.data, "-w", "-l", os.path.join(self.dir, "log"), "-o",
                 f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c max_connections=200", "start")
        self.url = f"postgres://postgres@127.0.0.1:{self.port}/postgres?sslmode=disable"

    def run(self, program, *args):
        argv = [os.path.join(self.bin, program), *args]
        if self.as_root:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        done = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if done.returncode:
            raise RuntimeError(f"{program} failed: {done.stderr.decode(errors='replace')}")

    def stop(self):
        self.run("pg_ctl", "-D", self.data, "-m", "fast", "-w", "stop")
        shutil.rmtree(self.dir, ignore_errors=True)


# ---------------------------------------------------------------- scenarios


class Bench:
    def __init__(self, args, bindir):
        self.args = args
        bindir = os.path.abspath(bindir)
        self.hookwire = os.path.join(bindir, "hookwire")
        self.ceiling = os.path.join(bindir, "hookwire-ceiling")
        self.peer = shutil.which("webhook")
        with open(PAYLOAD, "rb") as f:
            self.body = f.read()

    def load(self, url, work):
        script = write_wrk_script(work, self.body)
        a = self.args
        return run_wrk(url, script, a.duration, a.threads, a.connections)

    def measure(self, server, url, work):
        cpu0 = cpu_seconds(server.pid)
        t0 = time.time()
        r = self.load(url, work)
        r["cpu_us"] = (cpu_seconds(server.pid) - cpu0) / max(r["requests"], 1) * 1e6
        r["started"] = t0
        return r

    def start_hookwire(self, work, rules_text, extra=(), database=None):
        rules = os.path.join(work, "rules")
        os.makedirs(rules, exist_ok=True)
        with open(os.path.join(rules, "bench.yaml"), "w") as f:
            f.write(rules_text)
        argv = [
            self.hookwire,
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--rules",
            rules,
            "--database",
            database or "sqlite://" + os.path.join(work, "hookwire.db"),
            "--log-format",
            "json",
            *extra,
        ]
        return Server(argv, work, env={"RUST_LOG": "info"}, banner="hookwire listening")

    # Each scenario returns a dict of figures.

    def ceiling_scenario(self, work):
        srv = Server([self.ceiling, "127.0.0.1:0"], work, banner="ceiling listening")
        try:
            r = self.measure(srv, f"http://{srv.addr}/hooks/github", work)
            r["rss_kb"] = status_kb(srv.pid, "VmHWM")
            return r
        finally:
            srv.stop()

    def peer_scenario(self, work, matching):
        count_file = os.path.join(work, "executed")
        hooks = os.path.join(work, "hooks.json")
        with open(hooks, "w") as f:
            json.dump(peer_hooks(matching, count_file), f)
        port = free_port()
        srv = Server([self.peer, "-hooks", hooks, "-ip", "127.0.0.1", "-port", str(port)], work, port=port)
        try:
            r = self.measure(srv, f"http://127.0.0.1:{port}/hooks/github", work)
            if matching:
                r["done"], r["done_s"] = wait_for(lambda: file_size(count_file), r["acked"], r["started"])
            r["rss_kb"] = status_kb(srv.pid, "VmHWM")
            return r
        finally:
            srv.stop()

    def hookwire_scenario(self, work, action, n_rules=1, postgres=False):
        count_file = os.path.join(work, "executed")
        receiver = None
        if action == "http":
            receiver = Server([self.ceiling, "127.0.0.1:0"], work, banner="ceiling listening")
        rules = hookwire_rules(n_rules, action, count_file, receiver.addr if receiver else None)
        pg = Postgres(work) if postgres else None
        srv = self.start_hookwire(work, rules, database=pg.url if pg else None)
        try:
            r = self.measure(srv, f"http://{srv.addr}/hooks/github", work)
            if action == "command":
                r["done"], r["done_s"] = wait_for(lambda: file_size(count_file), r["acked"], r["started"])
            elif action == "http":

                def delivered():
                    return int(http_get(f"http://{receiver.addr}/count").split()[0])

                r["done"], r["done_s"] = wait_for(delivered, r["acked"], r["started"])
            r["rss_kb"] = status_kb(srv.pid, "VmHWM")
            r["stored"] = stored_events(srv.addr)
            return r
        finally:
            srv.stop()
            if receiver:
                receiver.stop()
            if pg:
                pg.stop()

    def retention(self, work, old_events):
        """Requests while the first retention pass prunes `old_events` finished
        events (each with a delivery and an attempt) written by an earlier run:
        wrk's latency figures over a window that the prune runs inside, and
        the pass as the daemon logs it."""
        rules = hookwire_rules(1, None, "/dev/null", None)
        srv = self.start_hookwire(work, rules)
        srv.stop()  # the schema is made; now an earlier run's events
        insert_old_events(os.path.join(work, "hookwire.db"), old_events, age_s=2 * 3600)
        srv = self.start_hookwire(work, rules, extra=("--retention", "1h"))
        try:
            r = self.measure(srv, f"http://{srv.addr}/hooks/github", work)
            r["rss_kb"] = status_kb(srv.pid, "VmHWM")
            r["prune"] = prune_pass(srv.log_path)
            return r
        finally:
            srv.stop()

    def idle_rss(self, work):
        """RSS of hookwire serving the shipped rules/, idle after start."""
        srv = Server(
            [
                self.hookwire,
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--rules",
                os.path.join(ROOT, "rules"),
                "--database",
                "sqlite://" + os.path.join(work, "idle.db"),
            ],
            work,
            banner="hookwire listening",
        )
        try:
            http_get(f"http://{srv.addr}/readyz")
            time.sleep(2)
            return status_kb(srv.pid, "VmRSS")
        finally:
            srv.stop()

    def outage(self, work, seconds=20):
        """A receiver down while events arrive, then back: failed attempts per
        second during the outage (the breaker holds the rest), and how long
        the backlog takes to drain once the receiver is back."""
        port = free_port()
        receiver = f"127.0.0.1:{port}"
        srv = self.start_hookwire(work, hookwire_rules(1, "http", "/dev/null", receiver))
        try:
            base = f"http://{srv.addr}"

            def failed():
                text = http_get(f"{base}/metrics")
                return sum(
                    float(line.rsplit(" ", 1)[1])
                    for line in text.splitlines()
                    if line.startswith("hookwire_deliveries_total") and 'outcome="retryable"' in line
                )

            script = write_wrk_script(work, self.body)
            f0 = failed()
            r = run_wrk(f"{base}/hooks/github", script, seconds, 1, 4)
            f1 = failed()
            acked = r["requests"] - r["status"]
            back = time.time()
            rx = Server([self.ceiling, receiver], work, banner="ceiling listening")
            try:

                def delivered():
                    return int(http_get(f"http://{receiver}/count").split()[0])

                done, drain_s = wait_for(delivered, acked, back)
                return {
                    "acked": acked,
                    "rps": r["rps"],
                    "failed_per_s": (f1 - f0) / seconds,
                    "delivered": done,
                    "drain_s": drain_s,
                }
            finally:
                rx.stop()
        finally:
            srv.stop()

    def reload(self, work, n_rules=1000, times=5):
        """Median time to load, compile and swap a set of `n_rules` rules, as
        the daemon logs it after each rewrite of the file."""
        srv = self.start_hookwire(work, hookwire_rules(n_rules, "http", "/dev/null", "127.0.0.1:9"))
        path = os.path.join(work, "rules", "bench.yaml")
        took = []
        try:
            for i in range(times + 1):
                if i:
                    with open(path, "a") as f:
                        f.write(f"# rewrite {i}\n")
                took = reload_times(srv.log_path)
                deadline = time.time() + 20
                while len(took) < i + 1 and time.time() < deadline:
                    time.sleep(0.05)
                    took = reload_times(srv.log_path)
            return took
        finally:
            srv.stop()


def insert_old_events(db, n, age_s):
    """`n` finished events received `age_s` ago, as hookwire stores them:
    ids are `evt_` + a lowercase ULID of the receive time."""
    import random
    import sqlite3

    alphabet = "0123456789abcdefghjkmnpqrstvwxyz"

    def ulid(ms):
        v = (ms << 80) | random.getrandbits(80)
        return "".join(alphabet[(v >> (5 * i)) & 31] for i in reversed(range(26)))

    conn = sqlite3.connect(db)
    start = int((time.time() - age_s) * 1000)
    body = b'{"ref": "refs/heads/old"}'
    rows = []
    for i in range(n):
        at = start + i * 60_000 // n
        e, d = "evt_" + ulid(at), "dlv_" + ulid(at)
        rows.append((e, at, body, d, "att_" + ulid(at)))
    conn.executemany(
        "INSERT INTO events (id, source, received_at_ms, method, path, query, headers, body, payload, facts, trace, matched, matched_any) "
        "VALUES (?, 'github', ?, 'POST', '/hooks/github', '', '[]', ?, '', '[]', '[]', '[\"r\"]', 1)",
        [(e, at, b) for e, at, b, _, _ in rows],
    )
    conn.executemany(
        "INSERT INTO deliveries (id, event_id, rule, action, action_type, status, attempts, attempts_total, next_attempt_at_ms, created_at_ms, updated_at_ms) "
        "VALUES (?, ?, 'r', 'http-0', 'http', 'succeeded', 1, 1, ?, ?, ?)",
        [(d, e, at, at, at) for e, at, _, d, _ in rows],
    )
    conn.executemany(
        "INSERT INTO attempts (id, delivery_id, number, budget_number, started_at_ms, duration_ms, outcome, status_code) "
        "VALUES (?, ?, 1, 1, ?, 3, 'succeeded', 200)",
        [(a, d, at) for _, at, _, d, a in rows],
    )
    conn.commit()
    conn.close()


def prune_pass(log_path):
    """The first prune pass the daemon logged: events, took_ms, longest_batch_ms."""
    with open(log_path, errors="replace") as f:
        for line in f:
            if "pruned finished events" in line:
                fields = json.loads(line).get("fields", {})
                return {k: fields.get(k) for k in ("events", "batches", "took_ms", "longest_batch_ms")}
    return None


def reload_times(log_path):
    out = []
    with open(log_path, errors="replace") as f:
        for line in f:
            if "rule set loaded" in line:
                m = re.search(r'"took_ms":(\d+)', line)
                if m:
                    out.append(int(m.group(1)))
    return out


def stored_events(addr):
    """Events hookwire stored, from its own metrics."""
    text = http_get(f"http://{addr}/metrics")
    m = re.search(r"^hookwire_events_stored_total (\d+)", text, re.M)
    return int(m.group(1)) if m else None


# ---------------------------------------------------------------- report

SCENARIOS = [
    ("ceiling", "ceiling (axum + serde_json, 3 comparisons)"),
    ("peer-nomatch", "peer, no match"),
    ("peer-match", "peer, match → /bin/sh (+1 byte)"),
    ("hw-nomatch", "hookwire, no match"),
    ("hw-command", "hookwire, match → command"),
    ("hw-http", "hookwire, match → http (delivered)"),
    ("hw-1000", "hookwire, 1,000 rules (one matches → http)"),
    ("pg-nomatch", "hookwire on PostgreSQL, no match"),
    ("pg-http", "hookwire on PostgreSQL, match → http (delivered)"),
]


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt_ms(us):
    return f"{us / 1000:.1f} ms" if us is not None else "–"


def machine():
    model = "unknown CPU"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = status_meminfo()
    rustc = subprocess.run(["rustc", "--version"], capture_output=True, text=True).stdout.strip()
    wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.splitlines()[:1]
    peer = subprocess.run(["webhook", "-version"], capture_output=True, text=True).stdout.strip()
    return (
        f"{os.cpu_count()} cores ({model}), {mem} GiB RAM, Linux {platform.release()}; "
        f"{rustc}; {wrk[0] if wrk else 'wrk'}; {peer}"
    )


def status_meminfo():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024)
    return "?"


def report(results, reloads, idle, args, retention=()):
    lines = []
    med = {}
    for key, _ in SCENARIOS:
        rs = results.get(key, [])
        if not rs:
            continue
        med[key] = {
            f: median([r.get(f) for r in rs])
            for f in ("rps", "p50_us", "p99_us", "cpu_us", "rss_kb", "acked", "done", "done_s")
        }
        d = [r["done"] / r["done_s"] for r in rs if r.get("done") and r.get("done_s")]
        med[key]["done_rate"] = median(d)
    lines.append(
        f"wrk: {args.threads} threads, {args.connections} connections, {args.duration} s per round, "
        f"{args.rounds} rounds interleaved; payload examples/payloads/push-branch.json ({os.path.getsize(PAYLOAD)} bytes)"
    )
    lines.append("")
    lines.append("| scenario | req/s | p50 | p99 | CPU/req | peak RSS | executed / acked | done/s | every round (req/s) |")
    lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for key, title in SCENARIOS:
        if key not in med:
            continue
        m = med[key]
        rounds = ", ".join(f"{r['rps']:.0f}" for r in results[key])
        done = "–"
        rate = "–"
        if m["done"] is not None:
            done = f"{m['done']:.0f} / {m['acked']:.0f} ({100 * m['done'] / max(m['acked'], 1):.1f} %)"
            rate = f"{m['done_rate']:.0f}" if m["done_rate"] else "–"
        lines.append(
            f"| {title} | {m['rps']:.0f} | {fmt_ms(m['p50_us'])} | {fmt_ms(m['p99_us'])} | "
            f"{m['cpu_us']:.0f} µs | {m['rss_kb'] / 1024:.1f} MB | {done} | {rate} | {rounds} |"
        )
    lines.append("")
    if reloads:
        lines.append(
            f"Reload of 1,000 rules (load + compile + swap, as logged): median {median(reloads):.0f} ms; every reload: "
            + ", ".join(f"{t} ms" for t in reloads)
        )
    if idle:
        lines.append(f"Idle RSS (shipped rules/, 2 s after start): median {median(idle) / 1024:.1f} MB; every round: "
                     + ", ".join(f"{x / 1024:.1f} MB" for x in idle))
    for r in retention:
        p = r.get("prune") or {}
        lines.append(
            f"Retention under load (hookwire, no match, under wrk as above while the first pass prunes "
            f"{args.prune_events:,} old events with their deliveries and attempts): "
            f"pass {p.get('events', '?')} events in {p.get('took_ms', '?')} ms, {p.get('batches', '?')} writes, "
            f"longest {p.get('longest_batch_ms', '?')} ms; requests {r['rps']:.0f}/s, p50 {fmt_ms(r['p50_us'])}, "
            f"p99 {fmt_ms(r['p99_us'])}, max {fmt_ms(r['max_us'])}, non-2xx {r['status']}, peak RSS {r['rss_kb'] / 1024:.1f} MB"
        )
    lines.append("")

    def ratio(a, b):
        return a / b if a is not None and b else None

    goals = []

    def goal(name, value, op, target, fmt="{:.2f}×"):
        ok = value is not None and (value >= target if op == ">=" else value <= target if op == "<=" else value < target)
        shown = fmt.format(value) if value is not None else "not measured"
        goals.append((name, shown, f"{op} {fmt.format(target)}", "holds" if ok else "DOES NOT HOLD"))

    g = lambda k, f: med.get(k, {}).get(f)  # noqa: E731
    goal("1a. no-match req/s, hookwire / peer", ratio(g("hw-nomatch", "rps"), g("peer-nomatch", "rps")), ">=", 2.0)
    goal("1b. no-match req/s, hookwire / ceiling", ratio(g("hw-nomatch", "rps"), g("ceiling", "rps")), ">=", 0.5)
    goal("2a. p99, hookwire / peer (no match)", ratio(g("hw-nomatch", "p99_us"), g("peer-nomatch", "p99_us")), "<=", 0.25)
    goal("2b. p99, hookwire / peer (match → command)", ratio(g("hw-command", "p99_us"), g("peer-match", "p99_us")), "<=", 0.25)
    hw_cmd = med.get("hw-command", {})
    goal(
        "3a. commands run per acknowledged event (hookwire)",
        ratio(hw_cmd.get("done"), hw_cmd.get("acked")) and 100 * ratio(hw_cmd.get("done"), hw_cmd.get("acked")),
        ">=",
        100.0,
        "{:.1f} %",
    )
    goal("3b. commands run per second, hookwire / peer", ratio(g("hw-command", "done_rate"), g("peer-match", "done_rate")), ">=", 3.0)
    goal("3c. peak RSS, hookwire match → command", g("hw-command", "rss_kb") and g("hw-command", "rss_kb") / 1024, "<=", 100.0, "{:.1f} MB")
    goal("4a. delivered/s / hookwire no-match req/s", ratio(g("hw-http", "done_rate"), g("hw-nomatch", "rps")), ">=", 0.5)
    hw_http = med.get("hw-http", {})
    lost = None
    if hw_http.get("done") is not None:
        lost = max(0.0, hw_http["acked"] - hw_http["done"])
    goal("4b. acknowledged but not delivered", lost, "<=", 0.0, "{:.0f}")
    goal("5a. cost of 1,000 rules (1-rule req/s / 1,000-rule req/s)", ratio(g("hw-http", "rps"), g("hw-1000", "rps")), "<=", 2.0)
    goal("5b. reload of 1,000 rules", median(reloads), "<", 100.0, "{:.0f} ms")
    goal("6. idle RSS", median(idle) and median(idle) / 1024, "<", 30.0, "{:.1f} MB")
    goal("7a. no-match req/s, PostgreSQL / SQLite", ratio(g("pg-nomatch", "rps"), g("hw-nomatch", "rps")), ">=", 0.6)
    goal("7b. PostgreSQL delivered/s / its own no-match req/s", ratio(g("pg-http", "done_rate"), g("pg-nomatch", "rps")), ">=", 0.5)
    pg_http = med.get("pg-http", {})
    pg_lost = None
    if pg_http.get("done") is not None:
        pg_lost = max(0.0, pg_http["acked"] - pg_http["done"])
    goal("7c. PostgreSQL: acknowledged but not delivered", pg_lost, "<=", 0.0, "{:.0f}")

    lines.append("| goal | measured | target | |")
    lines.append("|---|---:|---:|---|")
    for name, shown, target, verdict in goals:
        lines.append(f"| {name} | {shown} | {target} | {verdict} |")
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", required=True, help="directory with the release hookwire and hookwire-ceiling")
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--only", help="comma-separated scenario keys: " + ",".join(k for k, _ in SCENARIOS)
                    + ",reload,idle,retention")
    ap.add_argument("--results", help="markdown file whose generated section is replaced with this run")
    ap.add_argument("--prune-events", type=int, default=300_000,
                    help="old events the retention scenario prunes while under load")
    args = ap.parse_args()

    bench = Bench(args, args.bin)
    only = set(args.only.split(",")) if args.only else None
    results = {k: [] for k, _ in SCENARIOS}
    reloads, idle, outages, retention = [], [], [], []
    runs = {
        "ceiling": lambda w: bench.ceiling_scenario(w),
        "peer-nomatch": lambda w: bench.peer_scenario(w, matching=False),
        "peer-match": lambda w: bench.peer_scenario(w, matching=True),
        "hw-nomatch": lambda w: bench.hookwire_scenario(w, None),
        "hw-command": lambda w: bench.hookwire_scenario(w, "command"),
        "hw-http": lambda w: bench.hookwire_scenario(w, "http"),
        "hw-1000": lambda w: bench.hookwire_scenario(w, "http", n_rules=1000),
        "pg-nomatch": lambda w: bench.hookwire_scenario(w, None, postgres=True),
        "pg-http": lambda w: bench.hookwire_scenario(w, "http", postgres=True),
    }
    started = time.time()
    for rnd in range(1, args.rounds + 1):
        for key, title in SCENARIOS:
            if only and key not in only:
                continue
            with tempfile.TemporaryDirectory(prefix=f"hookwire-bench-{key}-") as work:
                r = runs[key](work)
            results[key].append(r)
            extra = ""
            if r.get("done") is not None:
                extra = f", done {r['done']}/{r['acked']} in {r['done_s']:.1f} s"
            log(
                f"round {rnd} {key:13} {r['rps']:8.0f} req/s  p50 {fmt_ms(r['p50_us']):>9}  p99 {fmt_ms(r['p99_us']):>9}  "
                f"cpu {r['cpu_us']:5.0f} µs/req  rss {r['rss_kb'] / 1024:5.1f} MB  errors c{r['connect']} r{r['read']} "
                f"w{r['write']} s{r['status']} t{r['timeout']}{extra}"
            )
        if not only or "reload" in only:
            with tempfile.TemporaryDirectory(prefix="hookwire-bench-reload-") as work:
                took = bench.reload(work)
            reloads += took[1:]
            log(f"round {rnd} reload        start {took[0] if took else '?'} ms, reloads {took[1:]} ms")
        if not only or "outage" in only:
            with tempfile.TemporaryDirectory(prefix="hookwire-bench-outage-") as work:
                o = bench.outage(work)
            outages.append(o)
            log(
                f"round {rnd} outage        {o['acked']} acknowledged at {o['rps']:.0f} req/s with the receiver down, "
                f"{o['failed_per_s']:.1f} failed attempts/s; {o['delivered']} delivered "
                f"{o['drain_s']:.1f} s after it came back"
            )
        if not only or "idle" in only:
            with tempfile.TemporaryDirectory(prefix="hookwire-bench-idle-") as work:
                idle.append(bench.idle_rss(work))
            log(f"round {rnd} idle RSS      {idle[-1] / 1024:.1f} MB")
        if not only or "retention" in only:
            with tempfile.TemporaryDirectory(prefix="hookwire-bench-retention-") as work:
                r = bench.retention(work, args.prune_events)
            retention.append(r)
            log(
                f"round {rnd} retention     {r['rps']:8.0f} req/s  p99 {fmt_ms(r['p99_us']):>9}  max {fmt_ms(r['max_us']):>9}  "
                f"non-2xx {r['status']}  prune {r['prune']}"
            )

    text = f"Machine: {machine()}\n\nRun: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(started))}, " \
           f"{(time.time() - started) / 60:.1f} min\n\n" + report(results, reloads, idle, args, retention)
    if outages:
        text += "\n\n### Receiver outage\n\n" + "\n".join(
            f"- {o['acked']:,} events acknowledged in 20 s with the receiver down: "
            f"{o['failed_per_s']:.1f} failed attempts/s (the breaker holds the rest, attempts unspent); "
            f"{o['delivered']:,} delivered {o['drain_s']:.1f} s after it came back"
            for o in outages
        ) + "\n"
    print(text)
    if args.results:
        write_results(args.results, text)
        log(f"wrote {args.results}")


BEGIN = "<!-- bench/run writes from here -->"
END = "<!-- to here -->"


def write_results(path, text):
    try:
        with open(path) as f:
            old = f.read()
    except FileNotFoundError:
        old = f"# Benchmark results\n\n{BEGIN}\n{END}\n"
    if BEGIN not in old or END not in old:
        old += f"\n{BEGIN}\n{END}\n"
    head, rest = old.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    with open(path, "w") as f:
        f.write(f"{head}{BEGIN}\n{text}{END}{tail}")


if __name__ == "__main__":
    main()
