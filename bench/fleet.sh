#!/usr/bin/env bash
# bench/fleet.sh — how long a fleet takes to go through a rolling upgrade, K nodes at a time,
# against the ideal: waves × per-node upgrade time, waves = ceil(nodes / K).
#
# One server, BENCH_FLEET_NODES nodes (default 12), each a real node: its own key, FUSE mount,
# node.toml, root, manager and counter app (examples/fleet.sh), plus the operator's mount; all
# on this machine. Version 1 is installed everywhere (fast-reboot). Then, for each K in
# BENCH_FLEET_K (default "1 2 4"), the operator sets the capacity of udb/locks/counter-rolling
# to K and the next version is published with the rolling SF (counter-v2, then counter-v3
# renumbered: its TF leaves state already in its format alone).
#
#   measured   from the moment the server has published the version (NAME.published) until
#              every node reports running at it (self/state, self/version, polled every 0.1 s)
#   per-node   median over the nodes of the time each reported `upgrading` until it reported
#              `running` at the new version, measured in the same round
#   ideal      waves × per-node; ratio = measured / ideal (1.0 = no time lost between waves)
#
# Settings: BENCH_FLEET_NODES, BENCH_FLEET_K (one K or a list), BENCH_FLEET_TIMEOUT (seconds per
# round, default 300), FLEET_POLL (the managers' poll-interval, default 1 s). Needs UPGRADEFS_BIN.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../examples/fleet.sh"
bin=${UPGRADEFS_BIN:?set UPGRADEFS_BIN to the upgradefs program (make bench does)}
N=${BENCH_FLEET_NODES:-12}
Ks=${BENCH_FLEET_K:-1 2 4}
limit=${BENCH_FLEET_TIMEOUT:-300}
app=$(cd "$here/../examples/app" && pwd)
export LC_ALL=C
case $N in ''|*[!0-9]*|0) echo "BENCH_FLEET_NODES must be a number ≥ 1" >&2; exit 2 ;; esac
for k in $Ks; do case $k in ''|*[!0-9]*|0) echo "BENCH_FLEET_K: '$k' is not a number ≥ 1" >&2; exit 2 ;; esac; done
nodes=$(seq -f 'n%g' 1 "$N" | tr '\n' ' ')

fleet_init "$bin" "$(mktemp -d "${TMPDIR:-/tmp}/upgradefs-bench-fleet.XXXXXX")"
trap fleet_cleanup EXIT
trap 'echo "interrupted: cleaning up" >&2; exit 130' INT TERM

echo "== fleet benchmark: $N nodes, rolling upgrades with K in: $Ks (managers poll every ${FLEET_POLL:-1} s)"
t0=$(fleet_now)
fleet_server_start
fleet_node_add operator
for n in $nodes; do fleet_node_add "$n"; done
fleet_mounts_ready 60
for n in $nodes; do fleet_manager_start "$n"; done
echo "   server, $N node mounts + the operator's, $N managers up in $(fleet_since "$t0") s"
op=$(fleet_mnt operator)

# Every node's state and version in one read (one process): "n1 running 2" lines.
snapshot() {
    local n files=()
    for n in $nodes; do files+=("$(fleet_mnt "$n")/self/state" "$(fleet_mnt "$n")/self/version"); done
    grep -H '' "${files[@]}" 2>/dev/null | awk -F: '{
        split($1, p, "/"); node = p[length(p) - 3]; file = p[length(p)]
        v[node, file] = $2; seen[node] = 1 }
        END { for (n in seen) print n, (v[n, "state"] == "" ? "-" : v[n, "state"]), (v[n, "version"] == "" ? "-" : v[n, "version"]) }'
}

# Per-node times of upgrade V, from the node's own files (nanosecond times, no polling):
#   upgrade  the upgrade began — the old version's stop, right after the SF's go (ldb/out/stop-(V-1).out
#            created; gen/V created when there was nothing to stop) → the last run of the check ended
#            (ldb/out/check-V.out); the commit follows at once
#   slot     the upgrade began → the SF's after phase ended (ldb/out/sf-V.out: the rolling slot released)
node_times() { # V → "NODE UPGRADE SLOT BEGAN CHECKED" lines (the last two absolute)
    local n r began
    if [ "$(stat -c %W "$FLEET_WORK")" = 0 ]; then
        echo "bench/fleet.sh: $FLEET_WORK has no birth times; per-node times need them (TMPDIR on ext4, xfs, btrfs)" >&2
        return 0
    fi
    for n in $nodes; do
        r=$(fleet_root "$n")
        began=$r/ldb/out/stop-$(($1 - 1)).out
        [ -e "$began" ] || began=$r/gen/$1
        printf '%s %s %s %s\n' "$n" "$(stat -c %.9W "$began")" "$(stat -c %.9Y "$r/ldb/out/check-$1.out")" \
            "$(stat -c %.9Y "$r/ldb/out/sf-$1.out")"
    done | awk '{ printf "%s %.3f %.3f %s %s\n", $1, $3 - $2, $4 - $2, $2, $3 }'
}
# The most upgrades in flight at one time, from the recorded [began, checked] intervals (exact, unlike
# sampling the nodes' states one after another, which can see a slot's old and new holder in one pass).
max_at_once() { # < times file
    awk '{ print $4, 1; print $5, -1 }' | sort -k1,1n -k2,2n |
        awk '{ c += $2; if (c > m) m = c } END { print m + 0 }'
}
median() { sort -n | awk '{ a[NR] = $1 } END { if (NR == 0) print "nan"; else if (NR % 2) print a[(NR + 1) / 2]; else printf "%.3f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

# round V: wait until every node runs V; prints "measured upgrade-median slot-median max-at-once"
# and keeps the per-node times in $FLEET_WORK/round-V.times
round() {
    local v=$1 deadline=$((SECONDS + limit)) start; start=$(fleet_now)
    local n s ver count
    while :; do
        count=0
        while read -r n s ver; do
            if [ "$s" = running ] && [ "$ver" = "$v" ]; then count=$((count + 1)); fi
        done < <(snapshot)
        [ $count -lt "$N" ] || break
        if [ $SECONDS -ge $deadline ]; then
            echo "FAILED: only $count of $N nodes run version $v after $limit s; states:" >&2
            snapshot | sort >&2
            for n in $nodes; do echo "--- $n"; tail -n 3 "$(fleet_mnt "$n")/self/log" 2>/dev/null || true; done >&2
            exit 1
        fi
        sleep 0.1
    done
    local measured; measured=$(awk -v a="$start" -v b="$(fleet_now)" 'BEGIN { printf "%.2f", b - a }')
    node_times "$v" > "$FLEET_WORK/round-$v.times"
    echo "$measured $(awk '{ print $2 }' "$FLEET_WORK/round-$v.times" | median) $(awk '{ print $3 }' "$FLEET_WORK/round-$v.times" | median) $(max_at_once < "$FLEET_WORK/round-$v.times")"
}

results=()
publish() { # SRC VERSION SF [NAME=VALUE...]: make the bundle (renumbered) and publish it
    local src=$1 v=$2 sf=$3; shift 3
    sh "$app/make-bundle.sh" -v "$v" -f "$((v - 1))" "$src" "$sf" "$FLEET_WORK/bundle-$v" "$@" > /dev/null
    [ "$v" -gt 1 ] || sed -i '/^from-version/d' "$FLEET_WORK/bundle-$v/upgrade.toml"
    fleet_publish "$FLEET_WORK/bundle-$v"
}

publish "$app/counter-v1" 1 fast-reboot
read -r measured median slot maxup < <(round 1)
results+=("$N all(fast-reboot) 1 $measured $median $slot $maxup")
echo "   version 1 (fast-reboot) on all $N nodes: ${measured} s"

v=1
for k in $Ks; do
    v=$((v + 1))
    echo "$k" > "$op/udb/locks/counter-rolling/capacity"
    fleet_wait 20 grep -qx "$k" "$(fleet_mnt n1)/udb/locks/counter-rolling/capacity" ||
        { echo "FAILED: the capacity $k did not reach n1 within 20 s" >&2; exit 1; }
    src=$app/counter-v3; [ $v -eq 2 ] && src=$app/counter-v2
    publish "$src" "$v" rolling
    read -r measured median slot maxup < <(round "$v")
    [ "$maxup" -le "$k" ] || { echo "FAILED: $maxup upgrades were in flight at once with capacity $k" >&2; exit 1; }
    results+=("$N $k $(( (N + k - 1) / k )) $measured $median $slot $maxup")
    echo "   version $v (rolling, K=$k): ${measured} s; per-node upgrade/slot times: $(sort -k2n "$FLEET_WORK/round-$v.times" | awk '{ printf "%s %s/%s  ", $1, $2, $3 }')"
done

echo
echo "measured: published → every node running it; per-node: median upgrade time (old version's stop → check passed);"
echo "ideal = waves × per-node; slot: median time a node held its rolling slot (stop → slot released);"
echo "max at once: most upgrades in flight at one time, from the nodes' recorded times"
printf '%-6s %-16s %-6s %-10s %-9s %-9s %-6s %-9s %s\n' nodes K waves measured per-node ideal ratio slot "max at once"
for r in "${results[@]}"; do
    set -- $r
    awk -v n="$1" -v k="$2" -v w="$3" -v m="$4" -v p="$5" -v sl="$6" -v x="$7" 'BEGIN {
        if (p == "nan") { ideal = "-"; ratio = "-" } else { ideal = sprintf("%.2f s", w * p); ratio = sprintf("%.2f", m / (w * p)) }
        printf "%-6s %-16s %-6s %-10s %-9s %-9s %-6s %-9s %s\n", n, k, w, m " s", p " s", ideal, ratio, sl " s", x }'
done
