#!/usr/bin/env bash
# upgradefs whiteboard benchmark: latencies through two real node mounts against one server on loopback, each
# beside a baseline measured in the same run (bench/whiteboard_latency.py). Bounded: every wait has a timeout.
#
#   make bench                      # runs this after bench/run.sh
#   UPGRADEFS_BIN=/path/upgradefs bench/whiteboard.sh
# Environment: UPGRADEFS_BIN, BENCH_DIR (default /var/tmp), BENCH_WB_ROUNDS (default 300).
set -euo pipefail

die() { echo "bench: $*" >&2; exit 1; }
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
BIN=${UPGRADEFS_BIN:-$(cd "$repo" && swift build -c release --show-bin-path)/upgradefs}
ROUNDS=${BENCH_WB_ROUNDS:-300}
[[ $(id -u) -eq 0 ]] || die "needs root (FUSE)"
[[ -x "$BIN" ]] || die "no executable upgradefs at $BIN"
[[ "$ROUNDS" =~ ^[0-9]+$ && "$ROUNDS" -gt 0 ]] || die "BENCH_WB_ROUNDS must be a positive integer"

work=$(mktemp -d "${BENCH_DIR:-/var/tmp}/upgradefs-wb-bench.XXXXXX")
pids=()
cleanup() {
    for m in "$work"/mnt-*; do
        [[ -d $m ]] && mountpoint -q "$m" && { fusermount3 -u "$m" 2>/dev/null || fusermount3 -uz "$m" 2>/dev/null || true; }
    done
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port=$("$repo/examples/free-port")
id=$("$BIN" keygen --out "$work/server.key")
mkdir -p "$work/publish" "$work/local"
"$BIN" serve --key "$work/server.key" --state "$work/state" --publish "$work/publish" \
    --listen "127.0.0.1:$port" >"$work/serve.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
curl -fs "http://127.0.0.1:$port/healthz" >/dev/null || die "server did not start: $(tail -5 "$work/serve.log")"

for node in a b; do
    read -r name key < <("$BIN" keygen --node "$node" --out "$work/$node.key")
    "$BIN" enroll --state "$work/state" "$name" "$key" >/dev/null
    mkdir -p "$work/mnt-$node"
    "$BIN" mount "127.0.0.1:$port,$id" "$work/mnt-$node" --cache "$work/cache-$node" --node-key "$work/$node.key" \
        >"$work/mount-$node.log" 2>&1 &
    pids+=($!)
done
for node in a b; do
    for _ in $(seq 100); do mountpoint -q "$work/mnt-$node" && break; sleep 0.1; done
    mountpoint -q "$work/mnt-$node" || die "mount $node did not come up: $(tail -5 "$work/mount-$node.log")"
done

timeout 600 python3 "$here/whiteboard_latency.py" "$work/mnt-a" "$work/mnt-b" "$work/local" "http://127.0.0.1:$port" "$ROUNDS"
