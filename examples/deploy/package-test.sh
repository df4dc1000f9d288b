#!/usr/bin/env bash
# Builds hookwire's Debian package, installs it on this machine, checks it,
# and removes it again:
#
#   sudo examples/deploy/package-test.sh
#
# 1. `cargo deb` (installed with `cargo install cargo-deb` if missing) packs
#    the release binary, the man pages and completions it generates, the
#    shipped rules as /etc/hookwire/rules, /etc/hookwire/hookwire.env (0640)
#    and examples/deploy/hookwire.service;
# 2. `dpkg -i` installs it, and the installed files are checked;
# 3. `systemd-analyze verify` checks the installed unit;
# 4. the installed binary runs the way the unit runs it — the unit's
#    environment and paths, as a user without an account (`setpriv` to
#    nobody, no new privileges), its state in a directory only that user
#    owns — a signed GitHub push is sent, and its delivery must reach a local
#    receiver (the chat webhook of the shipped rules);
# 5. the package is purged, whatever happened.
#
# It takes a few minutes (a release build), so CI does not run it.
set -euo pipefail
cd "$(dirname "$0")/../.."
[ "$(id -u)" -eq 0 ] || { echo "package-test: run as root (dpkg -i)" >&2; exit 2; }
export CARGO_TARGET_DIR="$PWD/target"

step() { printf '\n== %s\n' "$*"; }

command -v cargo-deb >/dev/null || cargo install cargo-deb --locked
step "build"
cargo build --release --locked
assets=target/deb-assets
rm -rf "$assets" && mkdir -p "$assets/man"
target/release/hookwire man "$assets/man" >/dev/null
target/release/hookwire completions bash >"$assets/hookwire.bash"
target/release/hookwire completions zsh >"$assets/_hookwire"
target/release/hookwire completions fish >"$assets/hookwire.fish"
target/release/hookwire schema >"$assets/rule-file.schema.json"
deb=$(cargo deb --no-build --locked | tail -n 1)
echo "$deb ($(du -h "$deb" | cut -f1))"

work=$(mktemp -d)
daemon=""
cleanup() {
    [ -n "$daemon" ] && kill "$daemon" 2>/dev/null || true
    [ -n "${receiver:-}" ] && kill "$receiver" 2>/dev/null || true
    dpkg --purge hookwire >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

step "install"
dpkg -i "$deb"
for f in /usr/bin/hookwire /usr/share/man/man1/hookwire-serve.1.gz \
    /usr/share/bash-completion/completions/hookwire /etc/hookwire/rules/github.yaml \
    /usr/share/hookwire/rule-file.schema.json /lib/systemd/system/hookwire.service; do
    [ -e "$f" ] || { echo "missing: $f" >&2; exit 1; }
done
mode=$(stat -c %a /etc/hookwire/hookwire.env)
[ "$mode" = 640 ] || { echo "/etc/hookwire/hookwire.env has mode $mode, not 640" >&2; exit 1; }
hookwire --version
hookwire check /etc/hookwire/rules

step "systemd-analyze verify"
systemd-analyze verify /lib/systemd/system/hookwire.service

step "run as the unit does"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
rport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
# The receiver: appends each body it is sent to a file.
python3 - "$rport" "$work/received" <<'PY' &
import http.server, sys
port, out = int(sys.argv[1]), sys.argv[2]
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        with open(out, "ab") as f:
            f.write(body + b"\n")
        self.send_response(200); self.end_headers()
    def log_message(self, *a): pass
http.server.HTTPServer(("127.0.0.1", port), H).serve_forever()
PY
receiver=$!
# DynamicUser and UMask=0077: an unprivileged user that owns only the state directory
# (mktemp's directory is root's alone: the user may pass through it).
chmod 711 "$work"
mkdir -p "$work/state" && chown nobody "$work/state" && chmod 700 "$work/state"
(cd "$work/state" && umask 077 && exec setpriv --reuid=nobody --regid=nogroup --clear-groups --no-new-privs \
    env -i PATH=/usr/bin:/bin \
    HOOKWIRE_RULES=/etc/hookwire/rules \
    HOOKWIRE_DATABASE="sqlite://$work/state/hookwire.db" \
    HOOKWIRE_LISTEN="127.0.0.1:$port" \
    CHAT_WEBHOOK_URL="http://127.0.0.1:$rport/chat" \
    /usr/bin/hookwire serve >"$work/log" 2>&1) &
daemon=$!
for _ in $(seq 100); do
    curl -fs "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
    kill -0 "$daemon" 2>/dev/null || { echo "the daemon exited:" >&2; cat "$work/log" >&2; exit 1; }
    sleep 0.1
done
hookwire send "http://127.0.0.1:$port/hooks/github" --payload examples/payloads/push-branch.json \
    --sign github --secret change-me --event push
for _ in $(seq 100); do
    [ -s "$work/received" ] && break
    sleep 0.1
done
if [ ! -s "$work/received" ]; then
    echo "no delivery reached the receiver; the daemon's log:" >&2
    cat "$work/log" >&2
    exit 1
fi
echo "delivered: $(head -c 200 "$work/received")"
echo "the database is the unprivileged user's: $(stat -c '%U %a' "$work/state/hookwire.db")"

step "remove"
kill "$daemon" && wait "$daemon" 2>/dev/null || true
daemon=""
dpkg --purge hookwire
[ ! -e /usr/bin/hookwire ] || { echo "/usr/bin/hookwire is still there" >&2; exit 1; }
echo "package-test: ok"
