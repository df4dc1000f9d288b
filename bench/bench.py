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
  executed / acked     each request carries its own X-GitHub-Delivery id;
                       commands append it to a file, deliveries carry it to
                       the receiver (the ceiling binary), which records it:
                       distinct ids executed versus the requests answered
                       2xx, waited for until they stop arriving; lost
                       (acknowledged, never executed) and duplicated are
                       reported apart, so a duplicate never hides a loss
  ratios               goals compare scenarios within each round (hookwire
                       and the peer of the same round), then take the median
  done/s               executed (or delivered) / seconds from the start of the
                       load to the last one

More scenarios:
  ceiling-durable      the ceiling plus a group-committed SQLite insert of the
                       body (WAL, synchronous=FULL) before the 200: the limit
                       of durable ingest on this disk
  latency              match → http under an open-loop load (the ceiling
                       binary's `load`: 1,000 and 3,000 events/s, each request
                       on its own schedule): request sent → delivery at the
                       receiver, p50/p99/max
  backlog              100,000 events (open loop, 4,000/s) with the receiver
                       down, then it comes back: peak RSS, drain rate
  the peer             runs with -verbose; its error lines are counted

Several instances on one PostgreSQL database (each scenario starts its own
server, Debian's package, on an ephemeral port):
  pg-scale             one instance against two, each in a cgroup v1 CPU group
                       of 40 % of a core (root; skipped when the groups cannot
                       be made): no-match req/s, and delivered/s of match → http;
                       two instances get one wrk each with half the connections
  pg-takeover          two instances with --lease 5s and a receiver that answers
                       after 1 s; a burst to A, A SIGKILLed while it holds
                       running deliveries; from B's admin API: when B finished
                       the deliveries A held, and acknowledged events never
                       delivered
  pg-serial            100,000 deliveries (--serial-waiting) waiting on one
                       serialize_by key whose head hangs, ingested through
                       hookwire; then wrk sends other keys for --duration s and
                       the claim p99 is read from the daemon's claim histogram
                       (its change over that window, rounded up to a bucket bound)

Only the standard library is used, so a fresh machine needs nothing from PyPI.
"""

import argparse
import concurrent.futures
import datetime
import glob
import hashlib
import hmac
import http.server
import json
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAYLOAD = os.path.join(ROOT, "examples", "payloads", "push-branch.json")
SECRET = "bench-secret"
MATCH_REF = "refs/heads/master"
NEVER_REF = "refs/heads/never"
REPO = "Codertocat/Hello-World"
TICK = os.sysconf("SC_CLK_TCK")
# The backlog scenario: events sent with the receiver down, and at what rate.
BACKLOG_EVENTS = 100_000
BACKLOG_RATE = 4_000
# The latency scenario's open-loop rates, events/s.
LATENCY_RATES = (1_000, 3_000)


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

    def __init__(self, argv, workdir, env=None, banner=None, port=None, name=None):
        # `name` tells apart the logs of several servers of one program, or of
        # a program started through a wrapper.
        self.log_path = os.path.join(workdir, (name or os.path.basename(argv[0])) + ".log")
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


def github_signature(body):
    return "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()


def write_wrk_script(workdir, body, name="post.lua"):
    """wrk sends `body`, signed, each request with its own `X-GitHub-Delivery`
    (`<thread>-<n>`): what a command or a delivery records, so that the
    bench counts distinct executions, duplicates and losses. The request is
    formatted once; each one only splices its id in."""
    path = os.path.join(workdir, name)
    with open(path, "w") as f:
        f.write("local body = " + lua_string(body) + "\n")
        f.write(f'local signature = "{github_signature(body)}"\n')
        f.write("""
local threads = 0
setup = function(thread)
  thread:set("tid", threads)
  threads = threads + 1
end
local prefix, suffix
local n = 0
init = function(args)
  local req = wrk.format("POST", nil, {
    ["Content-Type"] = "application/json",
    ["X-GitHub-Event"] = "push",
    ["X-Hub-Signature-256"] = signature,
    ["X-GitHub-Delivery"] = "@@ID@@",
  }, body)
  local at = string.find(req, "@@ID@@", 1, true)
  prefix = string.sub(req, 1, at - 1)
  suffix = string.sub(req, at + 6)
end
request = function()
  n = n + 1
  return prefix .. "t" .. tid .. "-" .. n .. suffix
end
""")
        f.write(WRK_DONE)
    return path


def write_wrk_keyed(workdir, body, old, values, name="keyed.lua"):
    """A wrk script that sends `body` with every occurrence of the text `old`
    replaced in turn by each of `values`, each copy signed: the same payload
    for distinct keys. The signatures are computed here (Lua has no HMAC);
    each thread builds its requests once, at start."""
    parts = body.split(old)
    if len(parts) < 2:
        raise RuntimeError(f"{old!r} is not in the payload")
    path = os.path.join(workdir, name)
    with open(path, "w") as f:
        f.write("local parts = {" + ", ".join(lua_string(p) for p in parts) + "}\n")
        f.write("local values = {\n")
        for v in values:
            sig = github_signature(v.join(parts))
            f.write(f"  {{{lua_string(v)}, \"{sig}\"}},\n")
        f.write("}\n")
        f.write("""
local requests = {}
local i = 0
-- Threads start at different keys (math.random would start them all alike).
local threads = 0
setup = function(thread)
  thread:set("first", threads * 97)
  threads = threads + 1
end
init = function(args)
  for k, v in ipairs(values) do
    requests[k] = wrk.format("POST", nil, {
      ["Content-Type"] = "application/json",
      ["X-GitHub-Event"] = "push",
      ["X-Hub-Signature-256"] = v[2],
    }, table.concat(parts, v[1]))
  end
  i = (first or 0) % #requests
end
request = function()
  i = i % #requests + 1
  return requests[i]
end
""")
        f.write(WRK_DONE)
    return path


def start_wrk(url, script, duration, threads, connections):
    return subprocess.Popen(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--timeout", "10s", "-s", script, url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wrk_result(proc):
    out, err = proc.communicate()
    if proc.returncode:
        raise RuntimeError(f"wrk exited with {proc.returncode}: {err}")
    m = re.search(r"^RESULT (\{.*\})$", out, re.M)
    if not m:
        raise RuntimeError("wrk printed no result:\n" + out)
    r = json.loads(m.group(1))
    r["rps"] = r["requests"] / (r["duration_us"] / 1e6)
    # Answers that were not 2xx/3xx are not acknowledgements.
    r["acked"] = r["requests"] - r["status"]
    return r


def run_wrk(url, script, duration, threads, connections):
    return wrk_result(start_wrk(url, script, duration, threads, connections))


def run_wrk_split(urls, script, duration, threads, connections):
    """One wrk per URL at the same time, the threads and connections shared
    out between them; the sums of their counts (req/s included), the worst
    of their latencies."""
    n = len(urls)
    procs = [start_wrk(u, script, duration, max(1, threads // n), max(1, connections // n)) for u in urls]
    rs = [wrk_result(p) for p in procs]
    out = {k: sum(r[k] for r in rs) for k in ("requests", "rps", "acked", "connect", "read", "write", "status", "timeout")}
    for k in ("p50_us", "p99_us", "max_us", "duration_us"):
        out[k] = max(r[k] for r in rs)
    out["each_rps"] = [r["rps"] for r in rs]
    return out


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


# The rule files' source: GitHub's signature checked with the bench's secret.
GITHUB_SOURCE = (
    "sources:",
    "  github:",
    "    verify:",
    f'      github: {{ secret: "{SECRET}" }}',
    "rules:",
)


def hookwire_rules(n_rules, matching_action, count_file, receiver, retry=None):
    """A YAML rule file: `n_rules` rules on one source, the last one matching
    when matching_action is set (otherwise none match); `retry` replaces the
    action's retry policy."""
    lines = list(GITHUB_SOURCE)
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
                '            id: "{{headers.x-github-delivery}}"',
            ]
            if retry:
                lines.append(f"        retry: {retry}")
        else:
            lines += [
                "      - name: run",
                "        command:",
                # The request's delivery id, one line per execution.
                f'          argv: ["/bin/sh", "-c", "printf \'%s\\\\n\' \\"$1\\" >> {count_file}", "sh", "{{{{headers.x-github-delivery}}}}"]',
            ]
    return "\n".join(lines) + "\n"


def serial_rules(stuck_after, hang, fast):
    """pg-serial's rules: the bench's three conditions, and every delivery
    serialized by the payload's `after`. Events whose `after` is
    `stuck_after` go to `hang`, which never answers (the key's head hangs
    for an hour, the rest of the key waits behind it); any other `after` is
    a key of its own, delivered to `fast`."""
    conditions = [
        "      - header: X-GitHub-Event",
        "        equals: push",
        "      - path: $.ref",
        f'        equals: "{MATCH_REF}"',
        "      - path: $.repository.full_name",
        f'        equals: "{REPO}"',
    ]
    lines = [
        *GITHUB_SOURCE,
    ]
    for name, op, receiver, timeout in (("stuck", "equals", hang, "1h"), ("flow", "not_equals", fast, "30s")):
        lines += [
            f"  - name: {name}",
            "    source: github",
            "    when:",
            *conditions,
            "      - path: $.after",
            f'        {op}: "{stuck_after}"',
            "    actions:",
            "      - name: deliver",
            "        http:",
            f'          url: "http://{receiver}/delivered"',
            f"          timeout: {timeout}",
            "          body:",
            '            text: "{{payload.pusher.name}} pushed to {{payload.ref}}"',
            '        serialize_by: "bench-{{payload.after}}"',
        ]
    return "\n".join(lines) + "\n"


def peer_hooks(matching, count_file):
    return [
        {
            "id": "github",
            "execute-command": "/bin/sh",
            "pass-arguments-to-command": [
                {"source": "string", "name": "-c"},
                {"source": "string", "name": f"printf '%s\\n' \"$1\" >> {count_file}"},
                {"source": "string", "name": "sh"},
                {"source": "header", "name": "X-GitHub-Delivery"},
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


def peer_errors(log_path):
    """The peer's own error lines (its verbose log), counted by message with
    ids, numbers and paths taken out: why it loses commands."""
    counts = {}
    try:
        with open(log_path, errors="replace") as f:
            for line in f:
                if "error" not in line.lower():
                    continue
                msg = line.split("] ", 1)[-1].strip()
                msg = re.sub(r"[0-9a-f]{8,}|\d+|/\S+", "…", msg)
                counts[msg] = counts.get(msg, 0) + 1
    except FileNotFoundError:
        pass
    return counts


def executions(path):
    """(distinct ids, duplicate executions) in a file of one id per line, as
    the bench's commands append them."""
    try:
        with open(path, "rb") as f:
            lines = [line for line in f.read().split(b"\n") if line]
    except FileNotFoundError:
        return 0, 0
    distinct = len(set(lines))
    return distinct, len(lines) - distinct


def receiver_counts(addr):
    """(distinct ids, duplicates) the receiver (the ceiling binary) recorded."""
    received, _matched, distinct, dups = http_get(f"http://{addr}/count").split()
    return int(distinct), int(dups)


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

    def sql(self, text, db="postgres"):
        """Runs `text` with psql; its output (unaligned, tuples only)."""
        argv = [os.path.join(self.bin, "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
                "-d", db, "-v", "ON_ERROR_STOP=1", "-At", "-c", text]
        if self.as_root:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        done = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if done.returncode:
            raise RuntimeError(f"psql failed: {done.stderr.decode(errors='replace')}")
        return done.stdout.decode()

    def deliveries_table(self):
        """Live and dead rows of `deliveries`, its autovacuum runs, and the
        size of the claim index of pending rows."""
        row = self.sql(
            "SELECT n_live_tup, n_dead_tup, autovacuum_count, pg_relation_size('deliveries_pending_due') "
            "FROM pg_stat_user_tables WHERE relname = 'deliveries'"
        ).strip().split("|")
        return dict(zip(("live", "dead", "autovacuums", "pending_index_bytes"), map(int, row)))

    def add_history(self, n):
        """`n` finished events, each with a succeeded delivery and its attempt,
        an hour old (inside any retention), written straight into hookwire's
        tables: the history a long-running installation keeps."""
        at = int(time.time() * 1000) - 3_600_000
        ids = "lpad(i::text, 26, '0')"
        self.sql(f"""
            SET synchronous_commit = off;
            INSERT INTO events (id, source, received_at_ms, method, path, query, headers, body, payload,
                                facts, trace, matched, matched_any)
            SELECT 'evt_' || {ids}, 'github', {at}, 'POST', '/hooks/github', '', '[]', ''::bytea, '{{}}',
                   '[]', '[]', '["bench"]', true FROM generate_series(1, {n}) i;
            INSERT INTO deliveries (id, event_id, rule, action, action_type, status, attempts, attempts_total,
                                    next_attempt_at_ms, created_at_ms, updated_at_ms)
            SELECT 'dlv_' || {ids}, 'evt_' || {ids}, 'bench', 'out', 'http', 'succeeded', 1, 1, {at}, {at}, {at}
            FROM generate_series(1, {n}) i;
            INSERT INTO attempts (id, delivery_id, number, budget_number, round, started_at_ms, duration_ms,
                                  outcome, status_code, response)
            SELECT 'att_' || {ids}, 'dlv_' || {ids}, 1, 1, 0, {at}, 5, 'succeeded', 200, ''::bytea
            FROM generate_series(1, {n}) i;
            """)
        self.sql("VACUUM ANALYZE")

    def database(self, name):
        """A new, empty database on this server: its URL."""
        self.run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", name)
        return f"postgres://postgres@127.0.0.1:{self.port}/{name}?sslmode=disable"

    def stop(self):
        self.run("pg_ctl", "-D", self.data, "-m", "fast", "-w", "stop")
        shutil.rmtree(self.dir, ignore_errors=True)


# ---------------------------------------------------------------- CPU quotas

CPU_CGROUP = "/sys/fs/cgroup/cpu"


class CpuGroup:
    """A cgroup v1 CPU group with a CFS quota: what runs in it gets at most
    quota/period of one core. Needs root and the v1 `cpu` controller
    mounted at /sys/fs/cgroup/cpu; the constructor raises OSError when it
    cannot make the group or put a process in it."""

    def __init__(self, name, quota_us, period_us=100_000):
        self.path = os.path.join(CPU_CGROUP, name)
        # A group left by a run that was killed is used again.
        os.makedirs(self.path, exist_ok=True)
        try:
            with open(os.path.join(self.path, "cpu.cfs_period_us"), "w") as f:
                f.write(str(period_us))
            with open(os.path.join(self.path, "cpu.cfs_quota_us"), "w") as f:
                f.write(str(quota_us))
            # Writable files do not prove a process can be moved in.
            done = subprocess.run(self.wrap(["true"]), stderr=subprocess.PIPE)
            if done.returncode:
                raise OSError(f"cannot move a process into {self.path}: {done.stderr.decode(errors='replace').strip()}")
        except OSError:
            self.remove()
            raise

    def wrap(self, argv):
        """argv run inside the group: the shell moves itself in, then execs,
        so the program is throttled from its first instruction."""
        procs = shlex.quote(os.path.join(self.path, "cgroup.procs"))
        return ["/bin/sh", "-c", f'echo $$ > {procs} && exec "$@"', "sh", *argv]

    def remove(self):
        # A process that just exited may still be counted for a moment.
        for _ in range(50):
            try:
                os.rmdir(self.path)
                return
            except FileNotFoundError:
                return
            except OSError:
                time.sleep(0.1)
        log(f"bench: could not remove {self.path}")


def cpu_groups(n, quota_us, period_us=100_000):
    groups = []
    try:
        for i in range(1, n + 1):
            groups.append(CpuGroup(f"hookwire-bench-{i}", quota_us, period_us))
    except OSError:
        for g in groups:
            g.remove()
        raise
    return groups


# ---------------------------------------------------------------- receivers in this process


class SlowReceiver:
    """An HTTP receiver that answers 200 after `delay` seconds and notes, by
    Idempotency-Key (hookwire's delivery id), when each request arrived."""

    def __init__(self, delay):
        received = self.received = {}
        lock = self.lock = threading.Lock()

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                with lock:
                    received.setdefault(self.headers.get("Idempotency-Key"), []).append(time.time())
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                time.sleep(delay)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        class Quiet(http.server.ThreadingHTTPServer):
            # The killed instance's connections break mid-answer: expected here.
            def handle_error(self, request, client_address):
                pass

        self.server = Quiet(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.addr = "%s:%d" % self.server.server_address
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


class HangReceiver:
    """Accepts connections and never answers: an attempt to it runs until
    its timeout."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.addr = "%s:%d" % self.sock.getsockname()
        self.held = []
        self.thread = threading.Thread(target=self.accept, daemon=True)
        self.thread.start()

    def accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)

    def stop(self):
        # shutdown wakes the thread blocked in accept; close alone would not.
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        for c in self.held:
            c.close()


# ---------------------------------------------------------------- scenarios

# pg-scale: each instance's CPU quota per 100 ms period (25 % of a core).
# The goal needs the instances to be the bottleneck, not PostgreSQL or wrk
# on the same two cores: at 40 % two instances with group commit no longer
# used their quotas (0.31 of a core each, 1.65×), at 25 % they do.
SCALE_QUOTA_US = 25_000
# pg-takeover: the burst sent to the instance that is killed, how long the
# receiver takes to answer (so deliveries are in flight when it dies), and
# both instances' --lease.
TAKEOVER_EVENTS = 200
TAKEOVER_DELAY_S = 1.0
TAKEOVER_LEASE_S = 5
# pg-serial: deliveries waiting behind the hung head of one key, the number of
# other keys the measured load cycles through, and the longest the fill may take.
SERIAL_WAITING = 100_000
SERIAL_KEYS = 256
SERIAL_FILL_LIMIT_S = 300


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

    def start_hookwire(self, work, rules_text, extra=(), database=None, wrap=None, name=None):
        rules = os.path.join(work, "rules")
        os.makedirs(rules, exist_ok=True)
        path = os.path.join(rules, "bench.yaml")
        try:
            with open(path) as f:
                same = f.read() == rules_text
        except FileNotFoundError:
            same = False
        # Rewriting the file would make instances already running on it reload.
        if not same:
            with open(path, "w") as f:
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
        if wrap:
            argv = wrap(argv)
        return Server(argv, work, env={"RUST_LOG": "info"}, banner="hookwire listening", name=name)

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
        argv = [self.peer, "-hooks", hooks, "-ip", "127.0.0.1", "-port", str(port), "-verbose"]
        srv = Server(argv, work, port=port)
        try:
            r = self.measure(srv, f"http://127.0.0.1:{port}/hooks/github", work)
            if matching:
                r["done"], r["done_s"] = wait_for(lambda: executions(count_file)[0], r["acked"], r["started"])
                r["dups"] = executions(count_file)[1]
                r["lost"] = max(0, r["acked"] - r["done"])
            r["rss_kb"] = status_kb(srv.pid, "VmHWM")
        finally:
            srv.stop()
        r["errors"] = peer_errors(srv.log_path)
        return r

    def hookwire_scenario(self, work, action, n_rules=1, postgres=False, history=0):
        count_file = os.path.join(work, "executed")
        receiver = None
        if action == "http":
            receiver = Server([self.ceiling, "127.0.0.1:0"], work, banner="ceiling listening")
        rules = hookwire_rules(n_rules, action, count_file, receiver.addr if receiver else None)
        pg = Postgres(work) if postgres else None
        if history:
            # A first start makes the schema; then the history goes in.
            self.start_hookwire(work, rules, database=pg.url).stop()
            t0 = time.time()
            pg.add_history(history)
            log(f"pg-history: {history:,} finished deliveries written in {time.time() - t0:.1f} s")
        srv = self.start_hookwire(work, rules, database=pg.url if pg else None)
        try:
            metrics = f"http://{srv.addr}/metrics"
            claims_before = histogram(http_get(metrics), CLAIM_HISTOGRAM)
            r = self.measure(srv, f"http://{srv.addr}/hooks/github", work)
            if action == "command":
                r["done"], r["done_s"] = wait_for(lambda: executions(count_file)[0], r["acked"], r["started"])
                r["dups"] = executions(count_file)[1]
            elif action == "http":
                r["done"], r["done_s"] = wait_for(
                    lambda: receiver_counts(receiver.addr)[0], r["acked"], r["started"]
                )
                r["dups"] = receiver_counts(receiver.addr)[1]
            if action:
                # Distinct executions only: a duplicate never hides a loss.
                r["lost"] = max(0, r["acked"] - r["done"])
            r["rss_kb"] = status_kb(srv.pid, "VmHWM")
            r["stored"] = stored_events(srv.addr)
            if action:
                claims = histogram(http_get(metrics), CLAIM_HISTOGRAM)
                r["claims"] = histogram_count(claims_before, claims)
                r["claim_p50_ms"] = bound_ms(histogram_bound(claims_before, claims, 0.5))
                r["claim_p99_ms"] = bound_ms(histogram_bound(claims_before, claims, 0.99))
            if pg:
                r["table"] = pg.deliveries_table()
            return r
        finally:
            srv.stop()
            if receiver:
                receiver.stop()
            if pg:
                pg.stop()

    def durable_ceiling_scenario(self, work):
        """The ceiling plus a group-committed, fsynced SQLite insert of the
        body before each 200: the limit of durable ingest on this disk."""
        db = os.path.join(work, "ceiling.db")
        srv = Server([self.ceiling, "durable", db, "127.0.0.1:0"], work, banner="ceiling listening",
                     name="ceiling-durable")
        try:
            r = self.measure(srv, f"http://{srv.addr}/hooks/github", work)
            r["rss_kb"] = status_kb(srv.pid, "VmHWM")
            return r
        finally:
            srv.stop()

    def open_loop(self, url, rate, seconds, work):
        """Sends `rate` events/s for `seconds` on an open loop (the ceiling
        binary's `load`); returns {delivery id: sent µs} of the acknowledged."""
        body = os.path.join(work, "body.json")
        with open(body, "wb") as f:
            f.write(self.body)
        out = os.path.join(work, f"sent-{rate}.txt")
        argv = [self.ceiling, "load", url, str(rate), str(seconds), body, out,
                "Content-Type: application/json", "X-GitHub-Event: push",
                f"X-Hub-Signature-256: {github_signature(self.body)}"]
        subprocess.run(argv, check=True, timeout=seconds + 300, stdout=subprocess.DEVNULL)
        sent = {}
        statuses = {}
        with open(out) as f:
            for line in f:
                id_, at, status = line.split()
                statuses[status] = statuses.get(status, 0) + 1
                if 200 <= int(status) < 300:
                    sent[id_] = int(at)
        refused = {k: v for k, v in statuses.items() if not k.startswith("2")}
        if refused:
            log(f"open loop at {rate}/s: answers other than 2xx (0: none): {refused}")
        return sent

    def latency(self, work, rate, seconds):
        """Match → http under an open-loop `rate`: from each request being
        sent to its delivery arriving at the receiver."""
        receiver = Server([self.ceiling, "127.0.0.1:0"], work, banner="ceiling listening", name="receiver")
        srv = self.start_hookwire(work, hookwire_rules(1, "http", None, receiver.addr))
        try:
            t0 = time.time()
            sent = self.open_loop(f"http://{srv.addr}/hooks/github", rate, seconds, work)
            wait_for(lambda: receiver_counts(receiver.addr)[0], len(sent), t0)
            arrived = dict((line.split()[0], int(line.split()[1]))
                           for line in http_get(f"http://{receiver.addr}/ids").splitlines())
            lat = sorted(arrived[i] - at for i, at in sent.items() if i in arrived)
            return {
                "rate": rate,
                "acked": len(sent),
                "delivered": len(lat),
                "lost": len(sent) - len(lat),
                "dups": receiver_counts(receiver.addr)[1],
                "p50_us": percentile(lat, 50),
                "p99_us": percentile(lat, 99),
                "max_us": lat[-1] if lat else None,
                "rss_kb": status_kb(srv.pid, "VmHWM"),
            }
        finally:
            srv.stop()
            receiver.stop()

    def backlog(self, work, events=BACKLOG_EVENTS, rate=BACKLOG_RATE):
        """The receiver is down while `events` arrive, then comes back: peak
        RSS, and how fast the backlog drains (first to last arrival)."""
        port = free_port()
        receiver = f"127.0.0.1:{port}"
        rules = hookwire_rules(1, "http", None, receiver, retry="{ attempts: 50, initial: 1s, max: 2s }")
        srv = self.start_hookwire(work, rules)
        try:
            sent = self.open_loop(f"http://{srv.addr}/hooks/github", rate, events / rate, work)
            rss_backlog = status_kb(srv.pid, "VmHWM")
            back = time.time()
            rx = Server([self.ceiling, receiver], work, banner="ceiling listening", name="receiver")
            try:
                done, _ = wait_for(lambda: receiver_counts(receiver)[0], len(sent), back, settle=30.0, limit=900.0)
                arrivals = sorted(int(line.split()[1]) for line in http_get(f"http://{receiver}/ids").splitlines())
                span = (arrivals[-1] - arrivals[0]) / 1e6 if len(arrivals) > 1 else None
                return {
                    "acked": len(sent),
                    "delivered": done,
                    "lost": max(0, len(sent) - done),
                    "dups": receiver_counts(receiver)[1],
                    "rss_backlog_kb": rss_backlog,
                    "rss_kb": status_kb(srv.pid, "VmHWM"),
                    "first_s": arrivals[0] / 1e6 - back if arrivals else None,
                    "drain_rate": done / span if span else None,
                }
            finally:
                rx.stop()
        finally:
            srv.stop()

    # ------------------------------------------------ several instances on PostgreSQL

    def pg_scale(self, work):
        """One hookwire instance against two on the same database, each in a
        CPU group of SCALE_QUOTA_US per 100 ms (PostgreSQL, wrk and the
        receiver outside any group): no-match ingest req/s, and delivered/s
        of match → http. None when CPU groups cannot be used."""
        try:
            groups = cpu_groups(2, SCALE_QUOTA_US)
        except OSError as e:
            log(f"pg-scale skipped: cannot use cgroup v1 CPU groups under {CPU_CGROUP} ({e})")
            return None
        pg = None
        try:
            pg = Postgres(work)
            runs = {(action, n): self.scale_run(work, pg, groups[:n], action) for action in (None, "http") for n in (1, 2)}
            one, two = runs[(None, 1)], runs[(None, 2)]
            one_http, two_http = runs[("http", 1)], runs[("http", 2)]
            return {
                "runs": runs,
                "ingest_ratio": two["rps"] / one["rps"] if one["rps"] else None,
                "done_ratio": (
                    two_http["done_rate"] / one_http["done_rate"]
                    if one_http.get("done_rate") and two_http.get("done_rate") is not None
                    else None
                ),
            }
        finally:
            if pg:
                pg.stop()
            for g in groups:
                g.remove()

    def scale_run(self, work, pg, groups, action):
        label = f"{action or 'nomatch'}-{len(groups)}"
        database = pg.database("scale_" + label.replace("-", "_"))
        receiver = None
        if action:
            receiver = Server([self.ceiling, "127.0.0.1:0"], work, banner="ceiling listening", name=f"ceiling-{label}")
        rules = hookwire_rules(1, action, "/dev/null", receiver.addr if receiver else None)
        servers = []
        try:
            for i, g in enumerate(groups, 1):
                servers.append(self.start_hookwire(work, rules, database=database, wrap=g.wrap, name=f"hookwire-{label}-{i}"))
            a = self.args
            script = write_wrk_script(work, self.body)
            cpu0 = [cpu_seconds(s.pid) for s in servers]
            t0 = time.time()
            r = run_wrk_split([f"http://{s.addr}/hooks/github" for s in servers], script, a.duration, a.threads, a.connections)
            wall = time.time() - t0
            # Each instance's share of a core over the load: the quota binds
            # when this is close to SCALE_QUOTA_US / 100 ms.
            r["cpu_share"] = [(cpu_seconds(s.pid) - c) / wall for s, c in zip(servers, cpu0)]
            r["started"] = t0
            if receiver:

                def delivered():
                    return int(http_get(f"http://{receiver.addr}/count").split()[0])

                r["done"], r["done_s"] = wait_for(delivered, r["acked"], t0)
                r["done_rate"] = r["done"] / r["done_s"] if r["done_s"] else None
            return r
        finally:
            for srv in servers:
                srv.stop()
            if receiver:
                receiver.stop()

    def pg_takeover(self, work, events=TAKEOVER_EVENTS, delay=TAKEOVER_DELAY_S, lease_s=TAKEOVER_LEASE_S):
        """Two instances with --lease `lease_s` on one database, deliveries to
        a receiver that answers after `delay` s. A burst of `events` goes to A
        only; once A holds running deliveries it is SIGKILLed. Measured on B's
        admin API: when B finished the deliveries A held (from the kill), when
        every acknowledged event's delivery had succeeded, and how many never
        did."""
        pg = Postgres(work)
        receiver = SlowReceiver(delay)
        rules = hookwire_rules(1, "http", "/dev/null", receiver.addr)
        extra = ("--lease", f"{lease_s}s")
        a = b = None
        try:
            a = self.start_hookwire(work, rules, extra=extra, database=pg.url, name="hookwire-a")
            b = self.start_hookwire(work, rules, extra=extra, database=pg.url, name="hookwire-b")
            t0 = time.time()
            acked = self.burst(f"http://{a.addr}/hooks/github", events)
            burst_s = time.time() - t0
            # A's own gauge: attempts it has in flight (B's are not in it).
            held, deadline = 0.0, time.time() + 10
            while held == 0 and time.time() < deadline:
                held = metric_sum(http_get(f"http://{a.addr}/metrics"), "hookwire_target_in_flight")
                if held == 0:
                    time.sleep(0.01)
            os.killpg(a.pid, signal.SIGKILL)
            killed = time.time()
            a.proc.wait()
            waiting_at_kill = None
            deliveries, succeeded_seen = {}, {}
            deadline = killed + lease_s + 120
            while time.time() < deadline:
                deliveries = {d["id"]: d for d in all_deliveries(b.addr)}
                now = time.time()
                if waiting_at_kill is None:
                    waiting_at_kill = sum(1 for d in deliveries.values() if d["status"] in ("pending", "retrying"))
                for d in deliveries.values():
                    if d["status"] == "succeeded":
                        succeeded_seen.setdefault(d["id"], now)
                done_events = {d["event_id"] for d in deliveries.values() if d["status"] == "succeeded"}
                if acked <= done_events:
                    break
                time.sleep(0.1)
            done_events = {d["event_id"] for d in deliveries.values() if d["status"] == "succeeded"}
            # The receiver always answers 200, so nothing is attempted twice
            # except what was claimed again after A's claim: A's deliveries.
            taken = [d["id"] for d in deliveries.values() if d["attempts"] >= 2]
            finished = [self.finished_at(b.addr, i) or succeeded_seen.get(i) for i in taken]
            takeover_s = None
            if taken and all(finished):
                takeover_s = max(finished) - killed
            all_s = max(succeeded_seen.values()) - killed if succeeded_seen else None
            with receiver.lock:
                twice = sum(1 for ts in receiver.received.values() if len(ts) > 1)
            return {
                "events": events,
                "acked": len(acked),
                "burst_s": burst_s,
                "held": int(held),
                "waiting_at_kill": waiting_at_kill,
                "taken": len(taken),
                "takeover_s": takeover_s,
                "all_s": all_s,
                "lost": len(acked - done_events),
                "received_twice": twice,
                "lease_s": lease_s,
                "delay_s": delay,
            }
        finally:
            for srv in (a, b):
                if srv:
                    srv.stop()
            receiver.stop()
            pg.stop()

    def burst(self, url, n, parallel=16):
        """`n` signed POSTs, `parallel` at a time: the event ids answered 202."""
        headers = {
            "Content-Type": "application/json",
            "X-GitHub-Event": "push",
            "X-Hub-Signature-256": github_signature(self.body),
        }

        def one(_):
            req = urllib.request.Request(url, data=self.body, method="POST", headers=headers)
            try:
                with urllib.request.urlopen(req, timeout=10) as r:
                    if r.status == 202:
                        return json.loads(r.read())["event_id"]
            except OSError:
                pass
            return None

        with concurrent.futures.ThreadPoolExecutor(parallel) as ex:
            return {i for i in ex.map(one, range(n)) if i}

    def finished_at(self, addr, delivery_id):
        """When the delivery's succeeded attempt ended, by its own record."""
        try:
            d = json.loads(http_get(f"http://{addr}/api/deliveries/{delivery_id}"))
        except OSError:
            return None
        ends = [
            rfc3339(at["started_at"]) + at["duration_ms"] / 1000
            for at in d.get("attempt_log", [])
            if at.get("outcome") == "succeeded"
        ]
        return max(ends) if ends else None

    def pg_serial(self, work, waiting, keys=SERIAL_KEYS):
        """Claim latency while `waiting` deliveries wait on one serialize_by
        key whose head hangs: the payload's `after` is the key; its head goes
        to a receiver that never answers. Then wrk sends the same payload for
        `keys` other keys (to the ceiling, which answers at once) for
        --duration s, and the daemon's claim histogram is read before and
        after that window."""
        stuck = json.loads(self.body)["after"]
        pg = Postgres(work)
        hang = HangReceiver()
        fast = srv = None
        try:
            fast = Server([self.ceiling, "127.0.0.1:0"], work, banner="ceiling listening")
            # A short grace: the hung attempt would hold every stop for the default 10 s.
            srv = self.start_hookwire(
                work, serial_rules(stuck, hang.addr, fast.addr), database=pg.url, extra=("--shutdown-grace", "1s")
            )
            a = self.args
            url = f"http://{srv.addr}/hooks/github"

            # The key's head and the deliveries behind it, ingested through
            # hookwire: wrk runs until the daemon has matched enough events,
            # then SIGINT ends it (it still prints its summary). wrk's own
            # stop from Lua would not do: wrk waits out -d all the same.
            def matched_stuck():
                return metric_sum(http_get(f"http://{srv.addr}/metrics"), "hookwire_rules_matched_total", 'rule="stuck"')

            fill = write_wrk_script(work, self.body, "fill.lua")
            t0 = time.time()
            proc = start_wrk(url, fill, SERIAL_FILL_LIMIT_S, a.threads, a.connections)
            progress = t0
            while proc.poll() is None:
                n = matched_stuck()
                if n >= waiting + 1:
                    break
                if time.time() - progress >= 15:
                    progress = time.time()
                    log(f"pg-serial: {n:,.0f} of {waiting + 1:,} events for the blocked key after {progress - t0:.0f} s")
                time.sleep(0.2)
            proc.send_signal(signal.SIGINT)
            f = wrk_result(proc)
            fill_s = time.time() - t0
            # The head is the key's one running delivery, attempted (the hung
            # receiver holds its connection).
            deadline = time.time() + 10
            while time.time() < deadline:
                running = json.loads(http_get(f"http://{srv.addr}/api/deliveries?status=running&limit=500"))
                head = [d for d in running["deliveries"] if d["rule"] == "stuck"]
                if head and hang.held:
                    break
                time.sleep(0.05)
            if not (head and hang.held):
                self.explain_head(srv)
            text = http_get(f"http://{srv.addr}/metrics")
            stuck_matched = int(metric_sum(text, "hookwire_rules_matched_total", 'rule="stuck"'))
            # Waiting = pending or retrying: everything behind the head.
            behind = int(metric_sum(text, "hookwire_queue_depth"))

            # Other keys, measured.
            values = [hashlib.sha1(f"bench-key-{i}".encode()).hexdigest().encode() for i in range(keys)]
            flow = write_wrk_keyed(work, self.body, stuck.encode(), values)

            def delivered():
                return int(http_get(f"http://{fast.addr}/count").split()[0])

            h0, c0, t0 = histogram(text, CLAIM_HISTOGRAM), delivered(), time.time()
            r = run_wrk(url, flow, a.duration, a.threads, a.connections)
            text, c1, t1 = http_get(f"http://{srv.addr}/metrics"), delivered(), time.time()
            h1 = histogram(text, CLAIM_HISTOGRAM)
            r.update(
                fill_events=stuck_matched,
                fill_s=fill_s,
                fill_rps=f["rps"],
                behind=behind,
                head_hung=len(head) == 1 and bool(hang.held),
                # Other keys' deliveries still waiting when the window ended.
                backlog=int(metric_sum(text, "hookwire_queue_depth")) - behind,
                claims=histogram_count(h0, h1),
                claim_p50_s=histogram_bound(h0, h1, 0.50),
                claim_p99_s=histogram_bound(h0, h1, 0.99),
                delivered=c1 - c0,
                delivered_per_s=(c1 - c0) / (t1 - t0),
            )
            # The same flow at a light load (one thread, four connections),
            # so that the claims' own cost shows rather than the two cores
            # that wrk and the ingest saturate above.
            # First the other keys' backlog from above drains.
            deadline = time.time() + 120
            while time.time() < deadline:
                left = int(metric_sum(http_get(f"http://{srv.addr}/metrics"), "hookwire_queue_depth")) - behind
                if left <= 0:
                    break
                time.sleep(0.5)
            h2 = histogram(http_get(f"http://{srv.addr}/metrics"), CLAIM_HISTOGRAM)
            light = run_wrk(url, flow, a.duration, 1, 4)
            h3 = histogram(http_get(f"http://{srv.addr}/metrics"), CLAIM_HISTOGRAM)
            r.update(
                light_rps=light["rps"],
                light_claims=histogram_count(h2, h3),
                light_claim_p50_s=histogram_bound(h2, h3, 0.50),
                light_claim_p99_s=histogram_bound(h2, h3, 0.99),
            )
            return r
        finally:
            if srv:
                srv.stop()
            if fast:
                fast.stop()
            hang.stop()
            pg.stop()

    def explain_head(self, srv):
        """pg-serial's head is not running: what the API and the log say."""
        retrying = json.loads(http_get(f"http://{srv.addr}/api/deliveries?status=retrying&limit=5"))["deliveries"]
        log(f"pg-serial: the blocked key's head is not running; {len(retrying)} retrying")
        for d in retrying[:1]:
            detail = json.loads(http_get(f"http://{srv.addr}/api/deliveries/{d['id']}"))
            for at in detail.get("attempt_log", []):
                log(f"pg-serial:   attempt {at['number']}: {at['outcome']} after {at['duration_ms']} ms: {at.get('error')}")
        with open(srv.log_path, errors="replace") as f:
            noted = [line.strip() for line in f if '"level":"WARN"' in line or '"level":"ERROR"' in line]
        for line in noted[-10:]:
            log(f"pg-serial:   {line}")

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

    def backtest(self, work, n_events=1000, n_rules=100, times=5):
        """`hookwire check --backtest` of a changed copy of `n_rules` rules
        against the live ones over `n_events` stored pushes (each matched by a
        tenth of the rules): the wall time of the whole command (local check,
        the request, the daemon's evaluation and rendering of both sets)."""
        srv = self.start_hookwire(work, backtest_rules(n_rules))
        try:
            with open(PAYLOAD, "rb") as f:
                push = json.load(f)
            for k in range(n_events):
                push["ref"] = f"refs/heads/team-{k % 10}/b{k}"
                req = urllib.request.Request(
                    f"http://{srv.addr}/hooks/github",
                    data=json.dumps(push).encode(),
                    method="POST",
                    headers={"Content-Type": "application/json", "X-GitHub-Event": "push"},
                )
                urllib.request.urlopen(req, timeout=10).read()
            cand = os.path.join(work, "candidate")
            os.makedirs(cand, exist_ok=True)
            with open(os.path.join(cand, "bench.yaml"), "w") as f:
                f.write(backtest_rules(n_rules, changed=True))
            took, report = [], None
            for _ in range(times):
                t0 = time.time()
                out = subprocess.run(
                    [self.hookwire, "check", "--backtest", "--server", f"http://{srv.addr}",
                     "--format", "json", "--last", str(n_events), cand],
                    capture_output=True, text=True, timeout=120,
                )
                took.append(time.time() - t0)
                if out.returncode != 3:
                    raise RuntimeError(f"backtest exited {out.returncode}: {out.stderr}")
                report = json.loads(out.stdout)
            return {
                "events": report["events"],
                "rules": n_rules,
                "changed_events": report["events_changed"],
                "median_s": statistics.median(took),
                "max_s": max(took),
            }
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


def backtest_rules(n_rules, changed=False):
    """`n_rules` rules on an unsigned `github` source, rule i matching pushes
    to `refs/heads/team-{i % 10}/**`; `changed` is a candidate that widens
    rule 0's glob and words the message of every even rule differently."""
    lines = ["sources:", "  github: {}", "rules:"]
    for i in range(n_rules):
        glob_ = "refs/heads/**" if (changed and i == 0) else f"refs/heads/team-{i % 10}/**"
        verb = "sent" if (changed and i % 2 == 0) else "pushed"
        lines += [
            f"  - name: rule-{i}",
            "    source: github",
            "    when:",
            "      - header: X-GitHub-Event",
            "        equals: push",
            "      - path: $.ref",
            f'        glob: "{glob_}"',
            "    actions:",
            "      - name: chat",
            "        retry: { attempts: 1 }",
            "        http:",
            '          url: "http://127.0.0.1:9/chat"',
            "          body:",
            f'            text: "{{{{payload.pusher.name}}}} {verb} {{{{len payload.commits}}}} commits to {{{{payload.ref}}}} (rule {i})"',
            '            repo: "{{payload.repository.full_name}}"',
        ]
    return "\n".join(lines) + "\n"


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


def all_deliveries(addr):
    """Every delivery in the store, through the admin API's pages."""
    out, before = [], None
    while True:
        url = f"http://{addr}/api/deliveries?limit=500" + (f"&before={before}" if before else "")
        page = json.loads(http_get(url))
        out += page["deliveries"]
        if len(page["deliveries"]) < 500 or not page.get("next_before"):
            return out
        before = page["next_before"]


def rfc3339(text):
    """Seconds since the epoch of the API's `2026-01-02T03:04:05.678Z`."""
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def metric_sum(text, name, contains=""):
    """The sum of the samples of metric `name` (every label set, or those
    whose line contains `contains`)."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and line[len(name):len(name) + 1] in (" ", "{") and contains in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


CLAIM_HISTOGRAM = "hookwire_store_claim_duration_seconds"


def histogram(text, name):
    """A histogram's cumulative counts by upper bound (`le`, +Inf included),
    summed over its other labels."""
    out = {}
    for m in re.finditer(r"^" + re.escape(name) + r"_bucket\{([^}]*)\} (\S+)$", text, re.M):
        le = re.search(r'le="([^"]+)"', m.group(1))
        if le:
            bound = float(le.group(1))
            out[bound] = out.get(bound, 0.0) + float(m.group(2))
    return out


def histogram_count(before, after):
    inf = float("inf")
    return int(after.get(inf, 0) - before.get(inf, 0))


def histogram_bound(before, after, q):
    """The upper bound of the bucket in which the cumulative count of the
    samples taken between two scrapes crosses `q` of them (inf when that is
    the last bucket, None without samples): a quantile rounded up to a
    bucket bound."""
    total = histogram_count(before, after)
    if total <= 0:
        return None
    for bound in sorted(after):
        if after[bound] - before.get(bound, 0) >= q * total:
            return bound
    return float("inf")


def bound_ms(bound):
    """A histogram bound in seconds as milliseconds (None stays None)."""
    return None if bound is None else bound * 1000


def stored_events(addr):
    """Events hookwire stored, from its own metrics."""
    text = http_get(f"http://{addr}/metrics")
    m = re.search(r"^hookwire_events_stored_total (\d+)", text, re.M)
    return int(m.group(1)) if m else None


# ---------------------------------------------------------------- report

SCENARIOS = [
    ("ceiling", "ceiling (axum + serde_json, 3 comparisons)"),
    ("ceiling-durable", "durable ceiling (the same + group-committed SQLite insert, WAL, synchronous=FULL)"),
    ("peer-nomatch", "peer, no match"),
    ("peer-match", "peer, match → /bin/sh (+1 byte)"),
    ("hw-nomatch", "hookwire, no match"),
    ("hw-command", "hookwire, match → command"),
    ("hw-http", "hookwire, match → http (delivered)"),
    ("hw-1000", "hookwire, 1,000 rules (one matches → http)"),
    ("pg-nomatch", "hookwire on PostgreSQL, no match"),
    ("pg-http", "hookwire on PostgreSQL, match → http (delivered)"),
    ("pg-history", "hookwire on PostgreSQL with 1,000,000 finished deliveries, match → http"),
]


def percentile(sorted_xs, q):
    """The nearest-rank percentile of an ascending list."""
    if not sorted_xs:
        return None
    k = max(0, min(len(sorted_xs) - 1, int(round(q / 100 * len(sorted_xs) + 0.5)) - 1))
    return sorted_xs[k]


def latency_line(r):
    return (f"{r['rate']:,}/s open loop: {r['acked']:,} acknowledged, {r['delivered']:,} delivered "
            f"({r['lost']} lost, {r['dups']} duplicated); request → receiver p50 {fmt_ms(r['p50_us'])}, "
            f"p99 {fmt_ms(r['p99_us'])}, max {fmt_ms(r['max_us'])}; peak RSS {r['rss_kb'] / 1024:.1f} MB")


def backlog_line(r):
    first = f"{r['first_s']:.1f} s" if r.get("first_s") is not None else "?"
    rate = f"{r['drain_rate']:,.0f}/s" if r.get("drain_rate") else "?"
    return (f"{r['acked']:,} events acknowledged with the receiver down (peak RSS {r['rss_backlog_kb'] / 1024:.1f} MB); "
            f"back: first delivery after {first}, drained at {rate}, {r['delivered']:,} delivered "
            f"({r['lost']} lost, {r['dups']} duplicated), peak RSS over all {r['rss_kb'] / 1024:.1f} MB")


def scenario_dir(prefix):
    """A fresh work directory for one scenario, after `sync`: no scenario
    inherits the dirty pages of the one before (a million PostgreSQL rows
    still being written back slow down every fsync of the next one)."""
    os.sync()
    return tempfile.TemporaryDirectory(prefix=prefix)


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
    rustc = tool_version(["rustc", "--version"])
    wrk = tool_version(["wrk", "-v"])
    # A run of only hookwire's scenarios does not need the peer installed.
    peer = tool_version(["webhook", "-version"])
    return (
        f"{os.cpu_count()} cores ({model}), {mem} GiB RAM, Linux {platform.release()}; "
        f"{rustc}; {wrk}; {peer}; databases and work directories on {filesystem(tempfile.gettempdir())}"
    )


def filesystem(path):
    """The type of the file system holding `path` (`df -T`): a tmpfs would
    make every durable figure meaningless."""
    try:
        out = subprocess.run(["df", "-T", path], capture_output=True, text=True).stdout.splitlines()
        return f"{out[1].split()[1]} ({path})"
    except (FileNotFoundError, IndexError):
        return f"an unknown file system ({path})"


def tool_version(argv):
    """The first line a tool prints about its version, or that it is missing."""
    try:
        out = subprocess.run(argv, capture_output=True, text=True).stdout.splitlines()
    except FileNotFoundError:
        return f"{argv[0]} not installed"
    return out[0].strip() if out else argv[0]


def status_meminfo():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024)
    return "?"


def fmt_s_ms(seconds):
    if seconds is None:
        return "–"
    if seconds == float("inf"):
        # Past the claim histogram's last finite bucket (0.1 ms × 2^14).
        return "> 1.6 s"
    return f"{seconds * 1000:.1f} ms"


def scale_line(sc):
    runs = sc["runs"]

    def cpu(r):
        # Cores used by each instance under the load: the quota binds near 0.4.
        return "CPU " + " + ".join(f"{c:.2f}" for c in r["cpu_share"])

    def ingest(n):
        r = runs[(None, n)]
        return f"{r['rps']:.0f} req/s ({cpu(r)})"

    def delivered(n):
        r = runs[("http", n)]
        rate = f"{r['done_rate']:.0f}/s" if r.get("done_rate") else "–"
        return f"{rate} ({r['done']}/{r['acked']}, {r['rps']:.0f} req/s, {cpu(r)} under the load)"

    ratio = lambda x: f"{x:.2f}×" if x is not None else "–"  # noqa: E731
    return (
        f"no-match ingest one {ingest(1)}, two {ingest(2)}: {ratio(sc['ingest_ratio'])}; "
        f"match → http delivered one {delivered(1)}, two {delivered(2)}: {ratio(sc['done_ratio'])}"
    )


def takeover_line(t):
    f = lambda x: f"{x:.1f} s" if x is not None else "–"  # noqa: E731
    return (
        f"{t['acked']}/{t['events']} events acknowledged by A in {t['burst_s']:.1f} s; A killed holding {t['held']} running "
        f"deliveries, {t['waiting_at_kill']} waiting; B finished the {t['taken']} it took over {f(t['takeover_s'])} after the kill "
        f"(lease {t['lease_s']} s, receiver {t['delay_s']:.1f} s), every delivery {f(t['all_s'])} after it; "
        f"lost {t['lost']}, received twice {t['received_twice']}"
    )


def serial_line(r):
    return (
        f"{r['behind']:,} deliveries waiting on one key (head hung: {'yes' if r['head_hung'] else 'NO'}; "
        f"{r['fill_events']:,} events in {r['fill_s']:.0f} s, {r['fill_rps']:.0f} req/s); other keys {r['rps']:.0f} req/s, "
        f"{r['delivered_per_s']:.0f} delivered/s, {r['backlog']:,} left waiting; claims {r['claims']:,}, "
        f"p50 ≤ {fmt_s_ms(r['claim_p50_s'])}, p99 ≤ {fmt_s_ms(r['claim_p99_s'])}; at a light load "
        f"({r['light_rps']:.0f} req/s) claims {r['light_claims']:,}, p50 ≤ {fmt_s_ms(r['light_claim_p50_s'])}, "
        f"p99 ≤ {fmt_s_ms(r['light_claim_p99_s'])}"
    )


def report(results, reloads, idle, args, retention=(), scale=(), takeovers=(), serials=(),
           latencies=(), backlogs=()):
    lines = []
    med = {}
    for key, _ in SCENARIOS:
        rs = results.get(key, [])
        if not rs:
            continue
        med[key] = {
            f: median([r.get(f) for r in rs])
            for f in ("rps", "p50_us", "p99_us", "cpu_us", "rss_kb", "acked", "done", "done_s", "claim_p99_ms")
        }
        d = [r["done"] / r["done_s"] for r in rs if r.get("done") and r.get("done_s")]
        med[key]["done_rate"] = median(d)
        med[key]["lost_max"] = max((r["lost"] for r in rs if r.get("lost") is not None), default=None)
        med[key]["dups_max"] = max((r["dups"] for r in rs if r.get("dups") is not None), default=None)
    lines.append(
        f"wrk: {args.threads} threads, {args.connections} connections, {args.duration} s per round, "
        f"{args.rounds} rounds interleaved; payload examples/payloads/push-branch.json ({os.path.getsize(PAYLOAD)} bytes)"
    )
    lines.append("")
    lines.append("| scenario | req/s | p50 | p99 | CPU/req | peak RSS | executed / acked | lost, duplicated (worst round) | done/s | every round (req/s) |")
    lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for key, title in SCENARIOS:
        if key not in med:
            continue
        m = med[key]
        rounds = ", ".join(f"{r['rps']:.0f}" for r in results[key])
        done = "–"
        rate = "–"
        honest = "–"
        if m["done"] is not None:
            done = f"{m['done']:.0f} / {m['acked']:.0f} ({100 * m['done'] / max(m['acked'], 1):.1f} %)"
            rate = f"{m['done_rate']:.0f}" if m["done_rate"] else "–"
            honest = f"{m['lost_max'] or 0:.0f}, {m['dups_max'] or 0:.0f}"
        lines.append(
            f"| {title} | {m['rps']:.0f} | {fmt_ms(m['p50_us'])} | {fmt_ms(m['p99_us'])} | "
            f"{m['cpu_us']:.0f} µs | {m['rss_kb'] / 1024:.1f} MB | {done} | {honest} | {rate} | {rounds} |"
        )
    lines.append("")
    lines.append("Executed and delivered count distinct request ids (each request carries its own "
                 "`X-GitHub-Delivery`, which the command or the delivery records): lost = acknowledged "
                 "and never executed, duplicated = executed more than once, both of the worst round.")
    lines.append("")
    errors = {}
    for r in results.get("peer-match", []):
        for msg, n in (r.get("errors") or {}).items():
            errors[msg] = errors.get(msg, 0) + n
    if results.get("peer-match"):
        shown = "; ".join(f"{n:,}× {msg}" for msg, n in sorted(errors.items(), key=lambda x: -x[1])[:4]) or "none"
        lines.append(f"The peer's own error lines (`-verbose`), match → command, all rounds: {shown}")
    for r in latencies:
        lines.append("Request → delivery at the receiver, match → http on SQLite, " + latency_line(r))
    for r in backlogs:
        lines.append("Backlog: " + backlog_line(r))
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
    for key in ("pg-http", "pg-history"):
        for r in results.get(key, []):
            t = r.get("table") or {}
            if t:
                lines.append(
                    f"{key}: {r.get('claims', 0):,} claims, p99 ≤ {r.get('claim_p99_ms') or 0:.1f} ms; after the run "
                    f"`deliveries` held {t['live']:,} live and {t['dead']:,} dead rows ({t['autovacuums']} autovacuums), "
                    f"the claim index of pending rows {t['pending_index_bytes'] / 1024:.0f} KB"
                )
    for sc in scale:
        lines.append(
            f"Scale-out on PostgreSQL (each instance in a CPU group of {SCALE_QUOTA_US / 1000:.0f} ms per 100 ms; "
            f"PostgreSQL, wrk and the receiver outside; two instances: one wrk each, half the connections): " + scale_line(sc)
        )
    for t in takeovers:
        lines.append("Takeover on PostgreSQL (two instances, one killed with SIGKILL): " + takeover_line(t))
    for r in serials:
        lines.append(
            f"Claims on PostgreSQL with one serialize_by key blocked ({SERIAL_KEYS} other keys under wrk, "
            f"claim histogram over the window): " + serial_line(r)
        )
    lines.append("")

    def ratio(a, b):
        return a / b if a is not None and b else None

    goals = []

    def goal(name, value, op, target, fmt="{:.2f}×"):
        ok = value is not None and (value >= target if op == ">=" else value <= target if op == "<=" else value < target)
        show = fmt if callable(fmt) else fmt.format
        shown = show(value) if value is not None else "not measured"
        goals.append((name, shown, f"{op} {show(target)}", "holds" if ok else "DOES NOT HOLD"))

    g = lambda k, f: med.get(k, {}).get(f)  # noqa: E731

    def per_round(ka, fa, kb, fb):
        """The median of the ratios within each round (scenario A of round i
        against scenario B of the same round)."""
        a, b = results.get(ka, []), results.get(kb, [])

        def val(r, f):
            return r["done"] / r["done_s"] if f == "done_rate" and r.get("done") and r.get("done_s") else r.get(f)

        return median([ratio(val(x, fa), val(y, fb)) for x, y in zip(a, b)])

    goal("1a. no-match req/s, hookwire / peer", per_round("hw-nomatch", "rps", "peer-nomatch", "rps"), ">=", 2.5)
    goal("1b. no-match req/s, hookwire / durable ceiling", per_round("hw-nomatch", "rps", "ceiling-durable", "rps"), ">=", 0.8)
    goal("1c. no-match req/s, hookwire / ceiling", per_round("hw-nomatch", "rps", "ceiling", "rps"), ">=", 0.4)
    goal("2a. p99, hookwire / peer (no match)", per_round("hw-nomatch", "p99_us", "peer-nomatch", "p99_us"), "<=", 0.1)
    goal("2b. CPU per no-match request", g("hw-nomatch", "cpu_us"), "<=", 110.0, "{:.0f} µs")
    goal("3a. commands run per second, hookwire / peer", per_round("hw-command", "done_rate", "peer-match", "done_rate"), ">=", 3.0)
    goal("3b. commands acknowledged and never run (worst round)", g("hw-command", "lost_max"), "<=", 0.0, "{:.0f}")
    goal("3c. peak RSS, hookwire match → command", g("hw-command", "rss_kb") and g("hw-command", "rss_kb") / 1024, "<=", 100.0, "{:.1f} MB")
    goal("4a. delivered/s / hookwire no-match req/s", per_round("hw-http", "done_rate", "hw-nomatch", "rps"), ">=", 0.6)
    goal("4b. deliveries acknowledged and never delivered (worst round)", g("hw-http", "lost_max"), "<=", 0.0, "{:.0f}")
    at_1000 = [r for r in latencies if r["rate"] == 1000]
    goal("4c. request → delivery at 1,000 events/s, p50", median([r["p50_us"] for r in at_1000]) and median([r["p50_us"] for r in at_1000]) / 1000, "<=", 5.0, "{:.1f} ms")
    goal("4d. request → delivery at 1,000 events/s, p99", median([r["p99_us"] for r in at_1000]) and median([r["p99_us"] for r in at_1000]) / 1000, "<=", 50.0, "{:.1f} ms")
    goal(f"4e. peak RSS with a {BACKLOG_EVENTS:,}-event backlog", median([r["rss_kb"] for r in backlogs]) and median([r["rss_kb"] for r in backlogs]) / 1024, "<=", 100.0, "{:.1f} MB")
    goal("4f. backlog drain rate / end-to-end delivered rate", ratio(median([r["drain_rate"] for r in backlogs]), g("hw-http", "done_rate")), ">=", 1.0)

    def lost(key):
        """Acknowledged but never delivered, in the worst round of a scenario."""
        return med.get(key, {}).get("lost_max")

    goal("5a. cost of 1,000 rules (1-rule req/s / 1,000-rule req/s)", per_round("hw-http", "rps", "hw-1000", "rps"), "<=", 1.5)
    goal("5b. reload of 1,000 rules", median(reloads), "<", 100.0, "{:.0f} ms")
    goal("6. idle RSS", median(idle) and median(idle) / 1024, "<", 25.0, "{:.1f} MB")
    goal("7a. no-match req/s, PostgreSQL / SQLite", per_round("pg-nomatch", "rps", "hw-nomatch", "rps"), ">=", 0.6)
    goal("7b. PostgreSQL delivered/s / its own no-match req/s", per_round("pg-http", "done_rate", "pg-nomatch", "rps"), ">=", 0.5)
    goal("7c. PostgreSQL: acknowledged but not delivered", lost("pg-http"), "<=", 0.0, "{:.0f}")
    goal(f"7h. PostgreSQL delivered/s with {args.history:,} finished deliveries kept / with none",
         per_round("pg-history", "done_rate", "pg-http", "done_rate"), ">=", 0.9)
    goal("7d. PostgreSQL no-match req/s, two instances / one (equal CPU quotas)",
         median([sc["ingest_ratio"] for sc in scale]), ">=", 1.8)
    goal("7e. PostgreSQL delivered/s, two instances / one (equal CPU quotas)",
         median([sc["done_ratio"] for sc in scale]), ">=", 1.8)
    lease = median([t["lease_s"] for t in takeovers]) or TAKEOVER_LEASE_S
    goal(f"7f. takeover of a killed instance's running deliveries, from the kill (lease {lease:.0f} s)",
         median([t["takeover_s"] for t in takeovers]), "<=", lease + 5.0, "{:.1f} s")
    goal("7f. acknowledged events lost at takeover", sum(t["lost"] for t in takeovers) if takeovers else None, "<=", 0.0, "{:.0f}")
    goal(f"7g. claim p99 (bucket bound, light load) with {median([r['behind'] for r in serials]) or SERIAL_WAITING:,.0f} deliveries waiting on one key",
         median([r["light_claim_p99_s"] for r in serials]), "<=", 0.005, fmt_s_ms)

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
                    + ",latency,backlog,reload,backtest,outage,idle,retention,pg-scale,pg-takeover,pg-serial")
    ap.add_argument("--results", help="markdown file whose generated section is replaced with this run")
    ap.add_argument("--prune-events", type=int, default=300_000,
                    help="old events the retention scenario prunes while under load")
    ap.add_argument("--history", type=int, default=1_000_000,
                    help="finished deliveries pg-history puts in the database before it runs")
    ap.add_argument("--serial-waiting", type=int, default=SERIAL_WAITING,
                    help="deliveries pg-serial puts behind the hung head of one serialize_by key")
    args = ap.parse_args()

    bench = Bench(args, args.bin)
    only = set(args.only.split(",")) if args.only else None
    results = {k: [] for k, _ in SCENARIOS}
    reloads, idle, outages, retention, backtests = [], [], [], [], []
    scale, takeovers, serials = [], [], []
    latencies, backlogs = [], []
    runs = {
        "ceiling": lambda w: bench.ceiling_scenario(w),
        "ceiling-durable": lambda w: bench.durable_ceiling_scenario(w),
        "peer-nomatch": lambda w: bench.peer_scenario(w, matching=False),
        "peer-match": lambda w: bench.peer_scenario(w, matching=True),
        "hw-nomatch": lambda w: bench.hookwire_scenario(w, None),
        "hw-command": lambda w: bench.hookwire_scenario(w, "command"),
        "hw-http": lambda w: bench.hookwire_scenario(w, "http"),
        "hw-1000": lambda w: bench.hookwire_scenario(w, "http", n_rules=1000),
        "pg-nomatch": lambda w: bench.hookwire_scenario(w, None, postgres=True),
        "pg-history": lambda w: bench.hookwire_scenario(w, "http", postgres=True, history=args.history),
        "pg-http": lambda w: bench.hookwire_scenario(w, "http", postgres=True),
    }
    started = time.time()
    for rnd in range(1, args.rounds + 1):
        for key, title in SCENARIOS:
            if only and key not in only:
                continue
            with scenario_dir(f"hookwire-bench-{key}-") as work:
                r = runs[key](work)
            results[key].append(r)
            extra = ""
            if r.get("done") is not None:
                extra = (f", done {r['done']}/{r['acked']} in {r['done_s']:.1f} s"
                         f" ({r.get('lost', 0)} lost, {r.get('dups', 0)} duplicated)")
            if r.get("errors"):
                extra += f", peer errors {sum(r['errors'].values())}"
            if r.get("claims"):
                extra += f", {r['claims']} claims, p50 ≤ {r['claim_p50_ms']:.1f} ms, p99 ≤ {r['claim_p99_ms']:.1f} ms"
            if r.get("table"):
                t = r["table"]
                extra += (f"; deliveries {t['live']:,} live, {t['dead']:,} dead rows, {t['autovacuums']} autovacuums, "
                          f"pending index {t['pending_index_bytes'] / 1024:.0f} KB")
            log(
                f"round {rnd} {key:13} {r['rps']:8.0f} req/s  p50 {fmt_ms(r['p50_us']):>9}  p99 {fmt_ms(r['p99_us']):>9}  "
                f"cpu {r['cpu_us']:5.0f} µs/req  rss {r['rss_kb'] / 1024:5.1f} MB  errors c{r['connect']} r{r['read']} "
                f"w{r['write']} s{r['status']} t{r['timeout']}{extra}"
            )
        if not only or "latency" in only:
            for rate in LATENCY_RATES:
                with scenario_dir("hookwire-bench-latency-") as work:
                    r = bench.latency(work, rate, args.duration)
                latencies.append(r)
                log(f"round {rnd} latency       {latency_line(r)}")
        if not only or "backlog" in only:
            with scenario_dir("hookwire-bench-backlog-") as work:
                r = bench.backlog(work)
            backlogs.append(r)
            log(f"round {rnd} backlog       {backlog_line(r)}")
        if not only or "reload" in only:
            with scenario_dir("hookwire-bench-reload-") as work:
                took = bench.reload(work)
            reloads += took[1:]
            log(f"round {rnd} reload        start {took[0] if took else '?'} ms, reloads {took[1:]} ms")
        if not only or "backtest" in only:
            with scenario_dir("hookwire-bench-backtest-") as work:
                b = bench.backtest(work)
            backtests.append(b)
            log(f"round {rnd} backtest      {backtest_line(b)}")
        if not only or "outage" in only:
            with scenario_dir("hookwire-bench-outage-") as work:
                o = bench.outage(work)
            outages.append(o)
            log(
                f"round {rnd} outage        {o['acked']} acknowledged at {o['rps']:.0f} req/s with the receiver down, "
                f"{o['failed_per_s']:.1f} failed attempts/s; {o['delivered']} delivered "
                f"{o['drain_s']:.1f} s after it came back"
            )
        if not only or "idle" in only:
            with scenario_dir("hookwire-bench-idle-") as work:
                idle.append(bench.idle_rss(work))
            log(f"round {rnd} idle RSS      {idle[-1] / 1024:.1f} MB")
        if not only or "retention" in only:
            with scenario_dir("hookwire-bench-retention-") as work:
                r = bench.retention(work, args.prune_events)
            retention.append(r)
            log(
                f"round {rnd} retention     {r['rps']:8.0f} req/s  p99 {fmt_ms(r['p99_us']):>9}  max {fmt_ms(r['max_us']):>9}  "
                f"non-2xx {r['status']}  prune {r['prune']}"
            )

        if not only or "pg-scale" in only:
            with scenario_dir("hookwire-bench-pg-scale-") as work:
                sc = bench.pg_scale(work)
            if sc:
                scale.append(sc)
                log(f"round {rnd} pg-scale      {scale_line(sc)}")
        if not only or "pg-takeover" in only:
            with scenario_dir("hookwire-bench-pg-takeover-") as work:
                t = bench.pg_takeover(work)
            takeovers.append(t)
            log(f"round {rnd} pg-takeover   {takeover_line(t)}")
        if not only or "pg-serial" in only:
            with scenario_dir("hookwire-bench-pg-serial-") as work:
                r = bench.pg_serial(work, args.serial_waiting)
            serials.append(r)
            log(f"round {rnd} pg-serial     {serial_line(r)}")

    text = f"Machine: {machine()}\n\nRun: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(started))}, " \
           f"{(time.time() - started) / 60:.1f} min\n\n" + report(results, reloads, idle, args, retention, scale, takeovers, serials,
                    latencies, backlogs)
    if backtests:
        worst = max(b["median_s"] for b in backtests)
        text += "\n\n### Backtest\n\n" + "\n".join(f"- {backtest_line(b)}" for b in backtests) + (
            f"\n\nGoal: 1,000 stored events against 100 rules in under a second: "
            f"{'met' if worst < 1.0 else 'missed'} (slowest round's median {worst:.2f} s).\n"
        )
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


def backtest_line(b):
    return (f"{b['events']:,} events × {b['rules']} rules: `hookwire check --backtest` in "
            f"{b['median_s'] * 1000:.0f} ms (median of 5, max {b['max_s'] * 1000:.0f} ms), "
            f"{b['changed_events']:,} events changed")


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
