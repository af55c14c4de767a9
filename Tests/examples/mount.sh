#!/bin/sh
# The scheduling functions on real mounts: one `upgradefs serve`, nodes n1,
# n2, n3 and the operator each with their own FUSE mount and key, on
# 127.0.0.1. What a plain directory cannot show: a full semaphore's EBUSY,
# EEXIST from the server's holder table, the default capacity 1, an
# unreachable server's EHOSTUNREACH, and one node's writes deciding another
# node's SF. Also: the counter bundles (2 and 3 made with make-bundle.sh)
# are accepted by the real server, and version 1 -> 2 -> 3 runs from the
# mount's versions/N as the manager will run it (TF, stop, start, check).
# Run by Tests/examples/run.sh when UPGRADEFS_BIN names the upgradefs
# program and FUSE is usable; prints FAIL lines, exits 1 on any.
set -u
LC_ALL=C; export LC_ALL
bin=${UPGRADEFS_BIN:?set UPGRADEFS_BIN to the upgradefs program}
sfdir=$(cd "$(dirname "$0")/../../examples/sf" && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/upgradefs-examples-mount.XXXXXX")
port=${EXAMPLES_PORT:-$("$(dirname "$0")/../../examples/free-port")}
nodes="n1 n2 n3 operator"
failures=0 passes=0 pids=

cleanup() {
    for n in $nodes; do
        mountpoint -q "$work/m-$n" 2>/dev/null && { fusermount3 -u "$work/m-$n" 2>/dev/null || fusermount3 -uz "$work/m-$n"; }
    done
    for pidfile in "$work"/node/gen/*/run/pid; do        # counter daemons
        [ -f "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null
    done
    for pid in $pids; do kill "$pid" 2>/dev/null; done
    sleep 0.5
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

pass() { passes=$((passes + 1)); }
fail() { failures=$((failures + 1)); echo "FAIL: $*"; }
says() { if printf '%s' "$3" | grep -Eq -- "$2"; then pass; else fail "$1: no '$2' in: $3"; fi; }
wait_for() { # SECONDS COMMAND...: until it succeeds
    t=$(($1 * 10)); shift
    until "$@" 2>/dev/null; do
        t=$((t - 1)); [ $t -gt 0 ] || return 1; sleep 0.1
    done
}
# runsf NODE SF [NAME=VALUE...]: the SF on NODE's mount, upgrade 1 -> 2
runsf() {
    n=$1 s=$2; shift 2
    mkdir -p "$work/ldb-$n"
    env UPGRADEFS_NODE="$n" UPGRADEFS_CLASS=counter UPGRADEFS_FROM=1 UPGRADEFS_TO=2 \
        UPGRADEFS_MOUNT="$work/m-$n" UPGRADEFS_UDB="$work/m-$n/udb" UPGRADEFS_SELF="$work/m-$n/udb/nodes/$n" \
        UPGRADEFS_BUNDLE="$work" UPGRADEFS_LDB="$work/ldb-$n" UPGRADEFS_ATTEMPT=1 UPGRADEFS_PHASE=before \
        UPGRADEFS_RETRY_FILE="$work/retry-$n" "$@" "$sfdir/$s" 2>&1
}
decide() { # DESCRIPTION EXIT NODE SF [NAME=VALUE...]
    d=$1 want=$2; shift 2
    out=$(runsf "$@"); rc=$?
    if [ "$rc" = "$want" ]; then pass; else fail "$2 on $1: $d: exit $rc, expected $want: $out"; fi
}
udb() { echo "$work/m-$1/udb"; }

echo "== real mounts (server on 127.0.0.1:$port)"
mkdir -p "$work/publish"
"$bin" keygen --out "$work/server.key" > "$work/id" || { echo "FAIL: keygen"; exit 1; }
"$bin" serve --key "$work/server.key" --state "$work/state" --publish "$work/publish" \
    --listen "127.0.0.1:$port" > "$work/server.log" 2>&1 &
server=$!; pids="$pids $server"
wait_for 30 test -e "$work/state/udb.sqlite" || { echo "FAIL: the server did not start:"; cat "$work/server.log"; exit 1; }
for n in $nodes; do
    set -- $("$bin" keygen --node "$n" --out "$work/$n.key")
    "$bin" enroll --state "$work/state" "$1" "$2" > /dev/null || { echo "FAIL: enroll $n"; exit 1; }
    mkdir -p "$work/m-$n"
    "$bin" mount "127.0.0.1:$port,$(cat "$work/id")" "$work/m-$n" --cache "$work/cache-$n" \
        --node-key "$work/$n.key" > "$work/mount-$n.log" 2>&1 &
    pids="$pids $!"
done
for n in $nodes; do
    wait_for 30 test -d "$(udb "$n")/locks" || { echo "FAIL: no udb/ on $n's mount:"; cat "$work/mount-$n.log"; exit 1; }
done
for n in n1 n2 n3; do
    date +%s > "$(udb "$n")/nodes/$n/heartbeat"; echo running > "$(udb "$n")/nodes/$n/state"
    echo 1 > "$(udb "$n")/nodes/$n/version"
done
for n in n1 n2 n3; do wait_for 20 test -e "$(udb n1)/nodes/$n/version" || fail "n1 does not see $n's files"; done

# rolling: capacity 2, set by the operator
echo 2 > "$(udb operator)/locks/counter-rolling/capacity" || fail "the operator cannot set a capacity"
wait_for 20 grep -qx 2 "$(udb n3)/locks/counter-rolling/capacity" || fail "n3 does not see the capacity"
decide "takes slot 1 of 2" 0 n1 rolling
decide "takes slot 2 of 2" 0 n2 rolling
decide "the semaphore is full (EBUSY)" 75 n3 rolling ROLLING_WAIT=0
says "rolling on n3: full" "counter-rolling is full" "$(runsf n3 rolling ROLLING_WAIT=0)"
decide "holding already (EEXIST)" 0 n1 rolling
says "rolling on n1: held" "already holding" "$(runsf n1 rolling)"
# n3 watches the full lock; n1's release (through another mount and the server) hands it the slot
runsf n3 rolling ROLLING_WAIT=15 > "$work/n3-waits.out" & waiter=$!
sleep 1
decide "after phase releases" 0 n1 rolling UPGRADEFS_PHASE=after UPGRADEFS_RESULT=done
wait "$waiter"; rc=$?
if [ "$rc" = 0 ]; then pass; else fail "n3 waiting in rolling did not get the freed slot: exit $rc: $(cat "$work/n3-waits.out")"; fi
says "rolling on n3: took it after waiting" "after waiting" "$(cat "$work/n3-waits.out")"
decide "after phase releases n3's slot" 0 n3 rolling UPGRADEFS_PHASE=after UPGRADEFS_RESULT=done
decide "a released slot is free" 0 n3 rolling
decide "after phase when not holding" 0 n1 rolling UPGRADEFS_PHASE=after UPGRADEFS_RESULT=done
decide "a lock without capacity holds 1" 0 n1 rolling ROLLING_LOCK=counter-one
decide "... and is full with 1" 75 n2 rolling ROLLING_LOCK=counter-one ROLLING_WAIT=0

# a node's writes decide another node's SF
decide "big-flip: second half waits for the first" 75 n3 big-flip "BIGFLIP_FIRST=n1 n2"
echo 2 > "$(udb n1)/nodes/n1/version"; echo 2 > "$(udb n2)/nodes/n2/version"
wait_for 20 grep -qx 2 "$(udb n3)/nodes/n2/version" || fail "n3 does not see n2 at version 2"
decide "big-flip: second half goes" 0 n3 big-flip "BIGFLIP_FIRST=n1 n2"
decide "canary: waits for approve" 75 n2 canary CANARY_NODES=n1
echo approve > "$(udb operator)/upgrades/2/control" || fail "the operator cannot write upgrades/2/control"
wait_for 20 grep -qx approve "$(udb n2)/upgrades/2/control" || fail "n2 does not see approve"
decide "canary: goes after approve" 0 n2 canary CANARY_NODES=n1
for n in n1 n2 n3; do date +%s > "$(udb "$n")/nodes/$n/heartbeat"; done
echo failed > "$(udb n2)/nodes/n2/state"
wait_for 20 grep -qx failed "$(udb n1)/nodes/n2/state" || fail "n1 does not see n2 failed"
decide "healthy: one failure over budget 0 stops" 75 n1 healthy
wait_for 20 test -e "$(udb n3)/shared/healthy-counter-2.stopped" || fail "n3 does not see the stop"
echo running > "$(udb n2)/nodes/n2/state"
decide "healthy: the stop holds on another node" 75 n3 healthy
rm "$(udb operator)/shared/healthy-counter-2.stopped" || fail "the operator cannot remove the stop"
wait_for 20 test ! -e "$(udb n3)/shared/healthy-counter-2.stopped" || fail "n3 still sees the stop"
wait_for 20 grep -qx running "$(udb n3)/nodes/n2/state" || fail "n3 does not see n2 running"
decide "healthy: resumed" 0 n3 healthy

# the counter bundles, published by the real server and run from the mount as
# the manager will: install 1, then 2 and 3 with their TFs and checks
app=$(cd "$sfdir/../app" && pwd)
publish() { # BUNDLE-DIR: wait for the server's verdict
    wait_for 30 test -e "$work/publish/$(basename "$1").published" -o -e "$work/publish/$(basename "$1").rejected"
    [ -e "$work/publish/$(basename "$1").published" ] && pass ||
        fail "$(basename "$1") was not published: $(cat "$work/publish/$(basename "$1").rejected" 2>/dev/null)"
}
cp -R "$app/counter-v1" "$work/publish/" && publish "$work/publish/counter-v1"
sh "$app/make-bundle.sh" "$app/counter-v2" rolling "$work/publish/counter-v2" > /dev/null && publish "$work/publish/counter-v2"
sh "$app/make-bundle.sh" "$app/counter-v3" canary "$work/publish/counter-v3" CANARY_NODES=n1 > /dev/null &&
    publish "$work/publish/counter-v3"
v=$work/m-n1/versions
wait_for 20 grep -qx 3 "$work/m-n1/latest" || fail "n1's mount does not show latest 3"
cmp -s "$v/3/sf" "$work/publish/counter-v3/sf" && pass || fail "versions/3/sf is not the canary SF make-bundle.sh wrote"
node=$work/node
app_env() { # V COMMAND...: the manager's env for generation V
    gv=$1; shift
    env UPGRADEFS_NODE=n1 UPGRADEFS_CLASS=counter UPGRADEFS_VERSION="$gv" UPGRADEFS_TO="$gv" \
        UPGRADEFS_RELEASE="$node/gen/$gv/release" UPGRADEFS_STATE="$node/gen/$gv/state" \
        UPGRADEFS_OLD_STATE="$node/gen/$((gv - 1))/state" "$@"
}
step() { # DESCRIPTION COMMAND...
    d=$1; shift
    out=$("$@" 2>&1) && pass || fail "counter through the mount: $d: $out"
}
mkdir -p "$node/gen/0/state" "$node/gen/1/state"
cp -R "$v/1/payload" "$node/gen/1/release"
step "start 1" app_env 1 "$node/gen/1/release/bin/start"
step "incr" app_env 1 "$node/gen/1/release/bin/counter" incr
step "incr" app_env 1 "$node/gen/1/release/bin/counter" incr
step "check 1" app_env 1 sh -c "cd '$v/1' && exec ./check"
for gv in 2 3; do
    mkdir -p "$node/gen/$gv"
    cp -R "$v/$gv/payload" "$node/gen/$gv/release"
    cp -R "$node/gen/$((gv - 1))/state" "$node/gen/$gv/state"
    step "tf $gv" app_env "$gv" sh -c "cd '$v/$gv' && exec ./tf"
    step "stop $((gv - 1))" app_env $((gv - 1)) "$node/gen/$((gv - 1))/release/bin/stop"
    step "start $gv" app_env "$gv" "$node/gen/$gv/release/bin/start"
    step "check $gv" app_env "$gv" sh -c "cd '$v/$gv' && exec ./check"
done
out=$(app_env 3 "$node/gen/3/release/bin/counter" incr 2>&1)
[ "$out" = 3 ] && pass || fail "counter through the mount: the count did not survive 1->2->3: incr answered $out"
step "stop 3" app_env 3 "$node/gen/3/release/bin/stop"

# the server goes away: lock operations fail fast with EHOSTUNREACH
kill "$server"
wait "$server" 2>/dev/null
decide "server unreachable (EHOSTUNREACH) waits" 75 n2 rolling ROLLING_LOCK=counter-other
says "rolling on n2: unreachable" "server unreachable" "$(runsf n2 rolling ROLLING_LOCK=counter-other)"

echo "examples mount tests: $passes passed, $failures failed"
[ "$failures" -eq 0 ]
