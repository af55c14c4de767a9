#!/usr/bin/env bash
# make publish-demo: a server and one node on this machine, end to end.
#   keygen → serve → mount (checked against the server id) → publish bundles →
#   read them through the mount → a bad bundle is rejected → tampered content
#   is refused → the server goes away and the node keeps serving its cache.
# Everything runs on 127.0.0.1 in a temporary directory and is cleaned up on
# exit, also on Ctrl-C.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin=${UPGRADEFS_BIN:?set UPGRADEFS_BIN to the upgradefs program (make demo does)}
work=$(mktemp -d /tmp/upgradefs-demo.XXXXXX)
port=${DEMO_PORT:-$("$here/free-port")}  # DEMO_PORT: the operator's choice, else a free one
server_pid=""
mount_pid=""
mnt="$work/upgrades"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }
cleanup() {
    set +e
    if mountpoint -q "$mnt" 2>/dev/null; then fusermount3 -u "$mnt" 2>/dev/null || fusermount3 -uz "$mnt"; fi
    [ -n "$mount_pid" ] && kill "$mount_pid" 2>/dev/null && wait "$mount_pid" 2>/dev/null
    [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_for() { # wait_for SECONDS COMMAND...: poll until the command succeeds
    local deadline=$((SECONDS + $1)); shift
    until "$@" 2>/dev/null; do
        [ $SECONDS -lt $deadline ] || { echo "timed out waiting for: $*" >&2; return 1; }
        sleep 0.1
    done
}
start_server() {
    "$bin" serve --key "$work/server.key" --state "$work/state" --publish "$work/publish" \
        --listen "127.0.0.1:$port" 2>>"$work/server.log" &
    server_pid=$!
    wait_for 20 curl -sf "http://127.0.0.1:$port/healthz" >/dev/null
}
publish() { # publish BUNDLE-DIR
    local name; name=$(basename "$1")
    run cp -r "$1" "$work/publish/"
    wait_for 20 test -e "$work/publish/$name.published" -o -e "$work/publish/$name.rejected"
}

mkdir -p "$work/publish" "$mnt"
step "The server's keys; the id names the server, as in SFS"
id=$("$bin" keygen --out "$work/server.key")
echo "server id: $id"

step "Start the server on 127.0.0.1:$port"
start_server
echo "serving (log: $work/server.log)"

step "Mount it on a node: HOST:PORT,ID is all the node needs to trust it"
"$bin" mount "127.0.0.1:$port,$id" "$mnt" --cache "$work/node-cache" 2>>"$work/mount.log" &
mount_pid=$!
wait_for 20 mountpoint -q "$mnt"
run cat "$mnt/server"
run cat "$mnt/latest"

step "Publish hello-v1: drop the bundle into the publish directory"
publish "$here/bundles/hello-v1"
run cat "$work/publish/hello-v1.published"
wait_for 5 grep -qx 1 "$mnt/latest"
run cat "$mnt/latest"
run find "$mnt/versions" -printf '%M %10s %p\n'
run sh "$mnt/versions/1/payload/bin/hello"

step "Publish hello-v2: it appears on the node within about a second"
t0=$(date +%s.%N)
publish "$here/bundles/hello-v2"
wait_for 5 grep -qx 2 "$mnt/latest"
awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "visible on the node %.2f s after the copy started\n", b - a }'
run cat "$mnt/versions/2/upgrade.toml"
run sh "$mnt/versions/2/payload/bin/hello" demo

step "A bad bundle is rejected with its reason, and nothing published changes"
mkdir -p "$work/evil/payload"
printf 'class = "hello"\nversion = 3\n' > "$work/evil/upgrade.toml"
ln -s ../../../../etc/shadow "$work/evil/payload/shadow"
publish "$work/evil"
run cat "$work/publish/evil.rejected"
run cat "$mnt/latest"

step "Tampered content on the server is refused by the node (EIO), never served"
blob=$(grep -rl "must greet" "$work/state/blobs" | head -n1)
sed -i 's/must greet/must GREET/' "$blob"   # same length, different bytes
echo "changed $blob on the server"
if cat "$mnt/versions/2/check"; then echo "UNEXPECTED: tampered bytes were served"; exit 1; fi
run tail -n 1 "$work/mount.log"

step "The server goes away; the node keeps serving what it has verified"
kill "$server_pid"; wait "$server_pid" 2>/dev/null || true; server_pid=""
run sh "$mnt/versions/2/payload/bin/hello" offline

step "Done"
echo "server id $id; the node mounted, verified and served both versions."
