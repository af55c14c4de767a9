# examples/fleet.sh — a fleet on one machine, for the demo and the benchmark.
# Source it from bash (examples/demo.sh, bench/fleet.sh):
#
#   . examples/fleet.sh
#   fleet_init "$UPGRADEFS_BIN" "$(mktemp -d)"      # work directory, owned by the fleet
#   trap fleet_cleanup EXIT; trap 'exit 130' INT TERM
#   fleet_server_start                              # keygen + serve on 127.0.0.1 (a free port)
#   fleet_node_add operator                         # the operator: key, enroll, mount (no manager)
#   fleet_node_add n1; fleet_manager_start n1       # a node: key, enroll, mount, node.toml, manager
#   fleet_publish DIR                               # copy a bundle in, wait for the server's verdict
#
# Every node has its own key (keygen --node, enroll), its own FUSE mount with its
# own cache (FLEET_WORK/NODE/mnt, self -> udb/nodes/NODE), its own node.toml and
# root (FLEET_WORK/NODE/root) and its own manager, which starts the node's app.
# fleet_cleanup stops only what the fleet started, by PID: managers (TERM, then
# KILL), the apps they started (the pid files under each root), the mounts
# (fusermount3 -u, retried, then -uz; a hung connection is aborted through
# /sys/fs/fuse/connections), the server; then removes the work directory
# (kept when FLEET_KEEP=1).
#
# Settings (environment): FLEET_PORT (default: a free port from 27420 up),
# FLEET_POLL (manager poll-interval, default 1), FLEET_HEARTBEAT (default 2),
# FLEET_SETTLE_MS (server --settle-ms, default 200), FLEET_VERBOSE=1 (say each step).

fleet_init() { # BIN WORKDIR
    FLEET_BIN=${1:?fleet_init BIN WORKDIR}
    FLEET_WORK=${2:?fleet_init BIN WORKDIR}
    [ -x "$FLEET_BIN" ] || { echo "fleet: $FLEET_BIN is not an executable upgradefs" >&2; return 1; }
    FLEET_SERVER_PID=""
    FLEET_NODES=""                 # names, in the order they were added (the operator too)
    FLEET_MANAGERS=""              # names whose manager runs
    declare -gA FLEET_MOUNT_PID=() FLEET_MANAGER_PID=()
    mkdir -p "$FLEET_WORK/publish"
    FLEET_SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)   # examples/
}

fleet_say() { [ "${FLEET_VERBOSE:-0}" = 1 ] && echo "fleet: ${EPOCHREALTIME:-} $*" >&2; return 0; }

# fleet_wait SECONDS COMMAND...: poll every 0.1 s until COMMAND succeeds; 1 after SECONDS.
fleet_wait() {
    local deadline=$((SECONDS + $1)); shift
    until "$@" 2>/dev/null; do
        [ $SECONDS -lt $deadline ] || return 1
        sleep 0.1
    done
}

fleet_now() { date +%s.%N; }
fleet_since() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }

fleet_server_start() {
    FLEET_PORT=${FLEET_PORT:-$("$FLEET_SRC/free-port" 27420)}
    FLEET_ID=$("$FLEET_BIN" keygen --out "$FLEET_WORK/server.key") || { echo "fleet: keygen failed" >&2; return 1; }
    "$FLEET_BIN" serve --key "$FLEET_WORK/server.key" --state "$FLEET_WORK/server" --publish "$FLEET_WORK/publish" \
        --listen "127.0.0.1:$FLEET_PORT" --settle-ms "${FLEET_SETTLE_MS:-200}" > "$FLEET_WORK/server.log" 2>&1 &
    FLEET_SERVER_PID=$!
    fleet_wait 30 curl -sf "http://127.0.0.1:$FLEET_PORT/healthz" -o /dev/null &&
        fleet_wait 10 test -e "$FLEET_WORK/server/udb.sqlite" || {
        echo "fleet: the server did not come up on 127.0.0.1:$FLEET_PORT; its log:" >&2
        tail -n 20 "$FLEET_WORK/server.log" >&2; return 1; }
    fleet_say "server $FLEET_ID on 127.0.0.1:$FLEET_PORT (pid $FLEET_SERVER_PID)"
}

fleet_dir() { echo "$FLEET_WORK/$1"; }          # NODE → its directory
fleet_mnt() { echo "$FLEET_WORK/$1/mnt"; }      # NODE → its mount
fleet_root() { echo "$FLEET_WORK/$1/root"; }    # NODE → its manager's root

# fleet_node_add NAME [CLASS]: key, enrollment, mount, node.toml (no manager yet).
fleet_node_add() {
    local name=$1 class=${2:-counter} d; d=$(fleet_dir "$1")
    mkdir -p "$d/mnt" "$d/root"
    local key; key=$("$FLEET_BIN" keygen --node "$name" --out "$d/node.key") || { echo "fleet: keygen --node $name failed" >&2; return 1; }
    set -- $key
    "$FLEET_BIN" enroll --state "$FLEET_WORK/server" "$1" "$2" > /dev/null || { echo "fleet: enroll $name failed" >&2; return 1; }
    "$FLEET_BIN" mount "127.0.0.1:$FLEET_PORT,$FLEET_ID" "$d/mnt" --cache "$d/cache" --node-key "$d/node.key" \
        > "$d/mount.log" 2>&1 &
    FLEET_MOUNT_PID[$name]=$!
    FLEET_NODES="$FLEET_NODES $name"
    cat > "$d/node.toml" <<EOF
node = "$name"
class = "$class"
root = "$d/root"
heartbeat-interval = ${FLEET_HEARTBEAT:-2}
poll-interval = ${FLEET_POLL:-1}
EOF
    fleet_say "node $name: mount pid ${FLEET_MOUNT_PID[$name]}"
}

# fleet_mounts_ready SECONDS: every mount shows its self/ directory.
fleet_mounts_ready() {
    local n
    for n in $FLEET_NODES; do
        fleet_wait "$1" test -d "$(fleet_mnt "$n")/self/" || {
            echo "fleet: the mount of $n did not come up; its log:" >&2
            tail -n 20 "$(fleet_dir "$n")/mount.log" >&2; return 1; }
    done
}

fleet_manager_start() { # NAME
    local d; d=$(fleet_dir "$1")
    "$FLEET_BIN" manager --mount "$d/mnt" --config "$d/node.toml" > "$d/manager.log" 2>&1 &
    FLEET_MANAGER_PID[$1]=$!
    FLEET_MANAGERS="$FLEET_MANAGERS $1"
    fleet_say "node $1: manager pid $!"
}

# fleet_publish DIR: copy the bundle in (atomically, under a dot name) and wait for the verdict.
fleet_publish() {
    local name; name=$(basename "$1")
    cp -R "$1" "$FLEET_WORK/publish/.$name.tmp" && mv "$FLEET_WORK/publish/.$name.tmp" "$FLEET_WORK/publish/$name" || return 1
    fleet_wait 60 test -e "$FLEET_WORK/publish/$name.published" -o -e "$FLEET_WORK/publish/$name.rejected" ||
        { echo "fleet: no verdict on $name within 60 s" >&2; return 1; }
    [ -e "$FLEET_WORK/publish/$name.published" ] ||
        { echo "fleet: $name was rejected: $(cat "$FLEET_WORK/publish/$name.rejected")" >&2; return 1; }
}

# What a node says about itself, read through its own mount (its own writes show at once).
fleet_state() { local s; s=$(cat "$(fleet_mnt "$1")/self/state" 2>/dev/null) && echo "${s:--}" || echo "-"; }
fleet_version() { local v; v=$(cat "$(fleet_mnt "$1")/self/version" 2>/dev/null) && echo "${v:--}" || echo "-"; }
# The app, through the node's current release (counter: COUNTER_RUN and the state follow `current`).
fleet_app() { local r; r=$(fleet_root "$1"); shift; "$r/current/release/bin/counter" "$@"; }
fleet_count() { fleet_app "$1" get 2>/dev/null || echo "-"; }

# fleet_at NAME VERSION: the node runs VERSION and nothing is pending.
fleet_at() { [ "$(fleet_version "$1")" = "$2" ] && [ "$(fleet_state "$1")" = running ]; }

# --- cleanup ---------------------------------------------------------------------------------------------

# fleet_alive PID: the process exists and is not a zombie (a daemon whose parent is gone may stay
# a zombie for a while where nothing reaps orphans, e.g. in a container).
fleet_alive() {
    local stat
    kill -0 "$1" 2>/dev/null || return 1
    { read -r stat < "/proc/$1/stat"; } 2>/dev/null || return 1
    stat=${stat##*) }
    [ "${stat%% *}" != Z ]
}

fleet_kill() { # PID SECONDS: TERM, wait up to SECONDS, then KILL
    local pid=$1 t=$(($2 * 10))
    fleet_alive "$pid" || return 0
    kill -TERM "$pid" 2>/dev/null
    while fleet_alive "$pid" && [ $t -gt 0 ]; do sleep 0.1; t=$((t - 1)); done
    fleet_alive "$pid" && { kill -KILL "$pid" 2>/dev/null; fleet_say "killed $pid"; }
    wait "$pid" 2>/dev/null
    return 0
}

fleet_unmount() { # DIR: fusermount3 -u, retried; a hung connection aborted; -uz last
    local m=$1 i
    mountpoint -q "$m" 2>/dev/null || return 0
    for i in 1 2 3 4 5; do
        timeout 5 fusermount3 -u "$m" 2>/dev/null && return 0
        mountpoint -q "$m" 2>/dev/null || return 0
        sleep 0.3
    done
    local dev conn; dev=$(mountpoint -d "$m" 2>/dev/null); conn=${dev#*:}
    if [ -n "$conn" ]; then
        mountpoint -q /sys/fs/fuse/connections || mount -t fusectl none /sys/fs/fuse/connections 2>/dev/null
        [ -w "/sys/fs/fuse/connections/$conn/abort" ] && echo 1 > "/sys/fs/fuse/connections/$conn/abort"
    fi
    timeout 5 fusermount3 -u "$m" 2>/dev/null || timeout 5 fusermount3 -uz "$m" 2>/dev/null
}

# Stops everything the fleet started, by PID; safe to call twice, and from a trap.
fleet_cleanup() {
    set +e
    [ -n "${FLEET_WORK:-}" ] || return 0
    local n pid pidfile
    for n in $FLEET_MANAGERS; do                       # managers first: no upgrade starts any more
        pid=${FLEET_MANAGER_PID[$n]:-}; [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null
    done
    for n in $FLEET_MANAGERS; do
        pid=${FLEET_MANAGER_PID[$n]:-}; [ -n "$pid" ] && fleet_kill "$pid" 15
    done
    FLEET_MANAGERS=""
    fleet_say "managers stopped"
    for n in $FLEET_NODES; do                          # the apps the managers started
        for pidfile in "$(fleet_root "$n")"/gen/*/run/pid; do
            [ -f "$pidfile" ] || continue
            pid=$(cat "$pidfile" 2>/dev/null)
            case $pid in ''|*[!0-9]*) continue ;; esac
            # only the counter daemon this pid file names (not a reused pid)
            tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -q 'counter serve' && fleet_kill "$pid" 5
        done
    done
    fleet_say "apps stopped"
    for n in $FLEET_NODES; do fleet_unmount "$(fleet_mnt "$n")"; done
    fleet_say "unmounted"
    for n in $FLEET_NODES; do
        pid=${FLEET_MOUNT_PID[$n]:-}; [ -n "$pid" ] && fleet_kill "$pid" 5
    done
    for n in $FLEET_NODES; do fleet_unmount "$(fleet_mnt "$n")"; done   # a mount that came up late
    FLEET_NODES=""
    fleet_say "mount processes ended"
    [ -n "$FLEET_SERVER_PID" ] && fleet_kill "$FLEET_SERVER_PID" 10
    FLEET_SERVER_PID=""
    fleet_say "server stopped"
    if [ "${FLEET_KEEP:-0}" = 1 ]; then
        echo "fleet: kept $FLEET_WORK" >&2
    elif grep -q " $FLEET_WORK/" /proc/mounts; then     # never rm -rf into a mount
        echo "fleet: a mount under $FLEET_WORK is still there; left it in place" >&2
    else
        rm -rf --one-file-system "$FLEET_WORK"
    fi
    FLEET_WORK=""
}
