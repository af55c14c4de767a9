#!/usr/bin/env bash
# make demo: a fleet upgraded three times without being stopped, on this machine.
#
# A server on 127.0.0.1, DEMO_NODES nodes (default 4: n1 n2 …), each with its
# own key, FUSE mount, node.toml, root, manager and counter app, and the
# operator's mount. The counter app's versions are published one after
# another, each with another scheduling function:
#   1  fast-reboot   every node installs it at once
#   2  rolling       at most 2 nodes at a time (the operator sets the lock's capacity first)
#   3  canary        n1 first; the operator approves once n1 runs 3, then the rest go
# Between upgrades every node's counter gets requests; each TF carries the count
# into the next version's state format, and the demo checks that no request is
# lost. Progress shows as it happens; at the end every node runs version 3.
# Everything is cleaned up on exit, also on Ctrl-C; a step that does not
# converge within DEMO_TIMEOUT seconds (default 120) fails the demo. The server's fleet page
# (its address is printed) follows it live; DEMO_KEEP=1 keeps the fleet up at the end until Ctrl-C.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/fleet.sh"
bin=${UPGRADEFS_BIN:?set UPGRADEFS_BIN to the upgradefs program (make demo does)}
count=${DEMO_NODES:-4}
limit=${DEMO_TIMEOUT:-120}
case $count in ''|*[!0-9]*|0) echo "DEMO_NODES must be a number ≥ 1" >&2; exit 2 ;; esac
nodes=$(seq -f 'n%g' 1 "$count" | tr '\n' ' ')
export LC_ALL=C

fleet_init "$bin" "$(mktemp -d "${TMPDIR:-/tmp}/upgradefs-fleet-demo.XXXXXX")"
req_pids=()        # request senders running in the background
trap 'finish_display; for p in "${req_pids[@]}"; do kill "$p" 2>/dev/null; done; fleet_cleanup' EXIT
trap 'echo; echo "interrupted: cleaning up" >&2; exit 130' INT TERM
demo_start=${EPOCHREALTIME/./}
op=$(fleet_mnt operator)

# --- output ----------------------------------------------------------------------------------------------
tty=0; [ -t 1 ] && tty=1
cols=$( { [ $tty = 1 ] && tput cols 2>/dev/null; } || echo 120)
bold() { if [ $tty = 1 ]; then printf '\033[1m%s\033[0m\n' "$*"; else printf '%s\n' "$*"; fi; }
footer=0           # lines of the live table at the bottom of the terminal (tty only)
last_table=""
step() { finish_display; echo; bold "== $*"; }
say() { finish_display; printf '%s\n' "$*"; }

# The progress loop forks nothing but `sleep` (bash builtins only), so it stays light on a busy
# machine. poll() reads what each node says about itself through its own mount (self/state,
# self/version, self/upgrade) and the count its counter last answered (current/run/status).
declare -A ST=() VER=() UPG=() CNT=() log_lines=() last_event=() t_done=()
now_us() { now=${EPOCHREALTIME/./}; }                         # microseconds, into $now
secs() { printf -v "$1" '%d.%d' $(($2 / 1000000)) $(($2 % 1000000 / 100000)); }   # VAR MICROSECONDS
readword() { # VAR FILE: the file's first line, "-" when missing or empty
    local __line=""
    { IFS= read -r __line < "$2"; } 2>/dev/null || true
    printf -v "$1" '%s' "${__line:--}"
}
poll() {
    local n m st c
    for n in $nodes; do
        m=$FLEET_WORK/$n/mnt/self
        readword st "$m/state"; ST[$n]=$st
        readword st "$m/version"; VER[$n]=$st
        readword st "$m/upgrade"; UPG[$n]=${st#-}
        readword c "$FLEET_WORK/$n/root/current/run/status"          # version=2 pid=123 count=17
        case $c in *count=*) CNT[$n]=${c##*count=} ;; esac           # (kept while the app restarts)
    done
}
at() { [ "${VER[$1]}" = "$2" ] && [ "${ST[$1]}" = running ]; }    # NODE VERSION
all_at() { local n; for n in $nodes; do at "$n" "$1" || return 1; done; }
table() { # into $tbl
    local n line
    printf -v tbl '  %-6s %-10s %-8s %-6s %s' node state version count upgrade
    for n in $nodes; do
        printf -v line '  %-6s %-10s %-8s %-6s %s' "$n" "${ST[$n]}" "${VER[$n]}" "${CNT[$n]:--}" "${UPG[$n]}"
        tbl+=$'\n'$line
    done
}
# New lines of every node's log (self/log on its mount), into $new_events: manager events, SF, TF and
# check output (not the app's start/stop chatter); a line a node repeats shows once.
events() {
    local n i text line el lines=()
    new_events=""
    now_us; secs el $((now - demo_start))
    for n in $nodes; do
        { mapfile -t lines < "$FLEET_WORK/$n/mnt/self/log"; } 2>/dev/null || continue
        i=${log_lines[$n]:-0}
        [ ${#lines[@]} -ge "$i" ] || i=0                       # the server keeps the last 64 KiB
        for ((; i < ${#lines[@]}; i++)); do
            text=${lines[i]#* }                                 # without the timestamp
            case $text in start\ [0-9]*|stop\ [0-9]*) continue ;; esac
            [ "$text" = "${last_event[$n]:-}" ] && continue
            last_event[$n]=$text
            printf -v line '  %6ss %-4s %s' "$el" "$n" "$text"
            new_events+=${line:0:$((cols - 1))}$'\n'
        done
        log_lines[$n]=$i
    done
}
note_times() { # TARGET: when each node first reported running at TARGET
    local n
    for n in $nodes; do
        if [ -z "${t_done[$1.$n]:-}" ] && at "$n" "$1"; then now_us; t_done[$1.$n]=$now; fi
    done
}
# Draw: new events scroll above; the table stays at the bottom (tty) or is printed when it changes.
render() {
    local el
    table                                        # the table first: the events then explain it
    events
    now_us; secs el $((now - demo_start))
    if [ $tty = 1 ]; then
        [ $footer -eq 0 ] || printf '\033[%dA\033[J' "$footer"
        printf '%s' "$new_events"
        printf '  [%ss]\n%s\n' "$el" "$tbl"
        footer=$((count + 2))
    else
        printf '%s' "$new_events"
        [ "$tbl" = "$last_table" ] || printf '  [%ss]\n%s\n' "$el" "$tbl"
    fi
    last_table=$tbl
}
finish_display() { footer=0; }   # leave the table where it is; what follows prints below it
elapsed() { local el; now_us; secs el $((now - demo_start)); echo "$el"; }
span() { local el; secs el $(($2 - $1)); echo "$el"; }    # FROM TO (microseconds) → seconds
since() { local el; now_us; secs el $((now - $1)); echo "$el"; }   # MICROSECONDS → seconds since

fail_logs() { # each node's last self/log lines, or its manager's stderr when there are none
    local n
    for n in $nodes; do
        echo "--- $n"
        tail -n 5 "$(fleet_mnt "$n")/self/log" 2>/dev/null || tail -n 5 "$(fleet_dir "$n")/manager.log" 2>/dev/null || true
    done
}
# watch DESCRIPTION TARGET CONDITION...: show progress until CONDITION holds; fail after $limit s.
watch() {
    local what=$1 target=$2; shift 2
    local deadline=$((SECONDS + limit))
    while :; do
        poll
        note_times "$target"
        render
        "$@" && break
        if [ $SECONDS -ge $deadline ]; then
            finish_display
            echo
            echo "FAILED: $what did not happen within ${limit} s. Last log lines of each node:" >&2
            fail_logs >&2
            echo "(FLEET_KEEP=1 keeps the work directory with every log; DEMO_TIMEOUT sets the limit)" >&2
            exit 1
        fi
        sleep 0.3
    done
    render
    finish_display
}

# --- requests --------------------------------------------------------------------------------------------
declare -A expected=()
# requests ROUND: node i gets i+ROUND requests, all nodes at once; each answer must be the next count.
requests() {
    local n i k answer
    for n in $nodes; do expected[$n]=${expected[$n]:-0}; done
    i=0
    for n in $nodes; do
        i=$((i + 1)); k=$((i + $1))
        (
            for _ in $(seq "$k"); do fleet_app "$n" incr > /dev/null || { echo "request to $n failed" >&2; exit 1; }; done
        ) &
        req_pids+=($!)
        expected[$n]=$((expected[$n] + k))
    done
    for i in "${req_pids[@]}"; do wait "$i" || { echo "FAILED: a request was not answered" >&2; exit 1; }; done
    req_pids=()
    local line="  requests answered; counts now:"
    for n in $nodes; do
        answer=$(fleet_count "$n")
        [ "$answer" = "${expected[$n]}" ] || { echo "FAILED: $n counts $answer, expected ${expected[$n]}" >&2; exit 1; }
        line="$line $n=$answer"
    done
    say "$line"
}

# --- timings ---------------------------------------------------------------------------------------------
declare -A t_publish=() t_converged=()
done_times() { # VERSION: when each node ran it, seconds after publishing
    local n out=""
    for n in $nodes; do
        if [ -n "${t_done[$1.$n]:-}" ]; then out="$out $n $(span "${t_publish[$1]}" "${t_done[$1.$n]}")"; else out="$out $n ?"; fi
    done
    echo "${out# }"
}

# --- the fleet -------------------------------------------------------------------------------------------
step "Start a server on 127.0.0.1 and a fleet of $count nodes (each: key, enrollment, mount, manager, app)"
fleet_server_start
say "server 127.0.0.1:$FLEET_PORT,$FLEET_ID"
say "fleet page: http://127.0.0.1:$FLEET_PORT/ (open it in a browser: it follows the demo live)"
fleet_node_add operator
for n in $nodes; do fleet_node_add "$n"; done
fleet_mounts_ready 30
for n in $nodes; do fleet_manager_start "$n"; done
say "$count nodes enrolled and mounted, their managers running; the operator's mount is $op"
say "work directory: $FLEET_WORK (each node: mnt/, root/, node.toml, manager.log)"
all_reporting() { local n; for n in $nodes; do [ "${ST[$n]}" != - ] || return 1; done; }
watch "every manager reporting on the whiteboard" 0 all_reporting

# upgrade VERSION SF DESCRIPTION [NAME=VALUE…]: make the bundle, publish it, note the time
publish_version() {
    local v=$1 sf=$2; shift 2
    sh "$here/app/make-bundle.sh" "$here/app/counter-v$v" "$sf" "$FLEET_WORK/counter-v$v" "$@" > /dev/null
    local t=${EPOCHREALTIME/./}
    fleet_publish "$FLEET_WORK/counter-v$v"
    t_publish[$v]=${EPOCHREALTIME/./}
    say "published counter-v$v (system version $v, sf: $sf${1:+, $*}): signed and served $(since "$t") s after the copy"
}

step "Version 1, fast-reboot: every node installs it at once"
publish_version 1 fast-reboot
watch "every node running version 1" 1 all_at 1
t_converged[1]=${EPOCHREALTIME/./}
say "every node runs version 1 ($(since "${t_publish[1]}") s after publishing)"
step "Requests to every node's counter"
requests 1

step "Version 2, rolling with capacity 2: at most 2 nodes upgrade at a time"
echo 2 > "$op/udb/locks/counter-rolling/capacity"
say "operator: echo 2 > udb/locks/counter-rolling/capacity"
fleet_wait 20 grep -qx 2 "$(fleet_mnt n1)/udb/locks/counter-rolling/capacity" ||
    { echo "FAILED: the capacity did not reach n1 within 20 s" >&2; exit 1; }
max_up=0
rolling_ok() { # also counts how many nodes upgrade at once
    local n up=0
    for n in $nodes; do [ "${ST[$n]}" != upgrading ] || up=$((up + 1)); done
    [ $up -le $max_up ] || max_up=$up
    all_at 2
}
publish_version 2 rolling
watch "every node running version 2" 2 rolling_ok
t_converged[2]=${EPOCHREALTIME/./}
say "every node runs version 2 ($(since "${t_publish[2]}") s after publishing; at most $max_up seen upgrading at once)"
[ $max_up -le 2 ] || { echo "FAILED: $max_up nodes upgraded at once, capacity is 2" >&2; exit 1; }
step "Requests to every node's counter"
requests 2

step "Version 3, canary: n1 first, the rest once the operator approves"
canary_done() { # n1 runs 3, every other node waits for approval
    local n
    at n1 3 || return 1
    for n in $nodes; do
        [ "$n" = n1 ] && continue
        [ "${ST[$n]}" = waiting ] || return 1
    done
}
publish_version 3 canary CANARY_NODES=n1
watch "n1 running version 3 while the others wait" 3 canary_done
say "the canary n1 runs version 3; the others wait at version 2. The fleet serves both versions:"
requests 3
say "operator: looks at n1 ($(fleet_app n1 status)) and approves: echo approve > udb/upgrades/3/control"
echo approve > "$op/udb/upgrades/3/control"
t_approve=${EPOCHREALTIME/./}
watch "every node running version 3" 3 all_at 3
t_converged[3]=${EPOCHREALTIME/./}
say "every node runs version 3 ($(since "$t_approve") s after the approval)"

step "Every node at version 3 with its state transformed twice (count → counter.conf → counter.state)"
for n in $nodes; do
    c=$(fleet_count "$n")
    [ "$c" = "${expected[$n]}" ] || { echo "FAILED: $n counts $c, expected ${expected[$n]}" >&2; exit 1; }
    [ -f "$(fleet_root "$n")/current/state/counter.state" ] ||
        { echo "FAILED: $n has no counter.state (its state was not transformed)" >&2; exit 1; }
    printf '%s: %s, count %s (expected %s); %s\n' "$n" "$(readlink "$(fleet_root "$n")/current")" "$c" \
        "${expected[$n]}" "$(ls "$(fleet_root "$n")/current/state" | tr '\n' ' ')"
    sed 's/^/    /' "$(fleet_root "$n")/current/state/counter.state"
done

step "upgradefs status --state (on the server)"
"$bin" status --state "$FLEET_WORK/server"

step "Timings (seconds after the server published the version)"
printf '  %-3s %-12s %-9s %s\n' v sf "all at v" "each node at v"
printf '  %-3s %-12s %-9s %s\n' 1 fast-reboot "$(span "${t_publish[1]}" "${t_converged[1]}")" "$(done_times 1)"
printf '  %-3s %-12s %-9s %s\n' 2 "rolling K=2" "$(span "${t_publish[2]}" "${t_converged[2]}")" "$(done_times 2)"
printf '  %-3s %-12s %-9s %s\n' 3 canary "$(span "${t_publish[3]}" "${t_converged[3]}")" "$(done_times 3)"
echo "  (version 3 includes the canary's wait for the operator: requests, then approve $(span "${t_publish[3]}" "$t_approve") s after publishing)"
echo "  demo total: $(elapsed) s"
if [ "${DEMO_KEEP:-0}" = 1 ]; then
    step "DEMO_KEEP=1: the fleet stays up. Fleet page: http://127.0.0.1:$FLEET_PORT/ — Ctrl-C to stop and clean up"
    trap 'echo; exit 0' INT TERM
    while :; do sleep 1; done
fi
step "Done: $count nodes went 1 → 2 → 3 while serving; no request was lost. Cleaning up."
