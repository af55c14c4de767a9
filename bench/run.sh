#!/usr/bin/env bash
# upgradefs benchmark: reads and stats through the FUSE mount, side by side with
# the same work done natively and with curl against the server; then the
# whiteboard under load from many simulated nodes (upgradefs-load), side by side
# with the cheapest request of the same server.  Prints tables (nothing is
# written into the repository).
#
#   make bench                        # release build, then this script
#   UPGRADEFS_BIN=/path/upgradefs bench/run.sh
#   BENCH_SECTIONS=load bench/run.sh  # only the whiteboard load (about 2 minutes)
#
# Environment:
#   UPGRADEFS_BIN        binary (default: `swift build -c release --show-bin-path`/upgradefs)
#   UPGRADEFS_LOAD_BIN   the load tool (default: upgradefs-load beside UPGRADEFS_BIN)
#   BENCH_SECTIONS       what runs: "fs" (bundle reads and stats through the mount) and/or
#                        "load" (the whiteboard load test); default "fs load"
#   BENCH_LOAD_NODES     simulated node counts, one round of phases each (default 1,16,64,256)
#   BENCH_LOAD_SECONDS   measured seconds per load phase (default 5; 5 phases per node count)
#   BENCH_FILE_MB        size of the large file, MiB (default 1024)
#   BENCH_NFILES         number of small files for the stat test (default 5000)
#   BENCH_READ_AHEAD_KB  read_ahead_kb set on the mount's bdi for the raised runs
#                        (default 1024; 0 = leave the kernel's value alone)
#   BENCH_DIR            where the temporary directory goes (default /var/tmp; needs
#                        about 3 x BENCH_FILE_MB free, on a real disk, not tmpfs)
#
# Needs root (drop_caches, read_ahead_kb, FUSE), /dev/fuse, fusermount3, curl,
# openssl, python3.  Bounded: every wait, every read and the load run have a timeout;
# all traffic goes to the server this script starts on 127.0.0.1.
set -euo pipefail
shopt -s inherit_errexit

FILE_MB=${BENCH_FILE_MB:-1024}
NFILES=${BENCH_NFILES:-5000}
RA_KB=${BENCH_READ_AHEAD_KB:-1024}
BASE_DIR=${BENCH_DIR:-/var/tmp}
SECTIONS=${BENCH_SECTIONS:-fs load}
LOAD_NODES=${BENCH_LOAD_NODES:-1,16,64,256}
LOAD_SECONDS=${BENCH_LOAD_SECONDS:-5}
READ_TIMEOUT=120     # seconds for one timed read
PUBLISH_TIMEOUT=240  # seconds for the server to publish the bench bundle

die() { echo "bench: $*" >&2; declare -F show_logs >/dev/null && show_logs; exit 1; }
log() { echo "bench: $*" >&2; }

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
if [[ -z "${UPGRADEFS_BIN:-}" ]]; then
    UPGRADEFS_BIN="$(cd "$repo" && swift build -c release --show-bin-path)/upgradefs"
fi
BIN=$UPGRADEFS_BIN
LOAD_BIN=${UPGRADEFS_LOAD_BIN:-$(dirname "$BIN")/upgradefs-load}

# want SECTION: is SECTION in BENCH_SECTIONS?
want() { [[ " $SECTIONS " == *" $1 "* ]]; }
for section in $SECTIONS; do
    [[ "$section" == fs || "$section" == load ]] || die "BENCH_SECTIONS: unknown section '$section' (fs, load)"
done
want fs || want load || die "BENCH_SECTIONS names no section (fs, load)"

[[ -x "$BIN" ]] || die "no executable upgradefs at $BIN"
for tool in curl python3 awk; do
    command -v "$tool" >/dev/null || die "missing tool: $tool"
done
if want fs; then
    [[ $(id -u) -eq 0 ]] || die "needs root (drop_caches, read_ahead_kb, FUSE)"
    [[ -c /dev/fuse ]] || die "no /dev/fuse"
    for tool in fusermount3 mountpoint openssl dd; do
        command -v "$tool" >/dev/null || die "missing tool: $tool"
    done
    [[ "$FILE_MB" =~ ^[0-9]+$ && "$FILE_MB" -gt 0 ]] || die "BENCH_FILE_MB must be a positive integer"
    [[ "$NFILES" =~ ^[0-9]+$ && "$NFILES" -gt 0 ]] || die "BENCH_NFILES must be a positive integer"
    [[ "$RA_KB" =~ ^[0-9]+$ ]] || die "BENCH_READ_AHEAD_KB must be an integer"

    need_kb=$(( FILE_MB * 1024 * 3 + 512 * 1024 ))
    avail_kb=$(df -Pk "$BASE_DIR" | awk 'NR==2 {print $4}')
    (( avail_kb > need_kb )) || die "$BASE_DIR has ${avail_kb} KiB free, needs ${need_kb} KiB"
fi
if want load; then
    [[ -x "$LOAD_BIN" ]] || die "no executable upgradefs-load at $LOAD_BIN (swift build -c release builds it)"
    [[ "$LOAD_NODES" =~ ^[0-9]+(,[0-9]+)*$ ]] || die "BENCH_LOAD_NODES must be numbers separated by commas"
    [[ "$LOAD_SECONDS" =~ ^[0-9]+$ && "$LOAD_SECONDS" -gt 0 ]] || die "BENCH_LOAD_SECONDS must be a positive integer"
fi

# ---------------------------------------------------------------------------
# state and cleanup (runs on normal exit, error, Ctrl-C, SIGTERM)
# ---------------------------------------------------------------------------
work=$(mktemp -d "$BASE_DIR/upgradefs-bench.XXXXXX")
mnt=$work/mnt
cache=$work/cache
state=$work/state
publish=$work/publish
server_pid=""
mount_pid=""

unmount_fs() {
    if mountpoint -q "$mnt" 2>/dev/null; then
        local _
        for _ in $(seq 1 50); do
            fusermount3 -u "$mnt" 2>/dev/null && break
            sleep 0.2
        done
        if mountpoint -q "$mnt" 2>/dev/null; then
            log "mount still busy, lazy unmount"
            fusermount3 -u -z "$mnt" 2>/dev/null || true
        fi
    fi
    if [[ -n "$mount_pid" ]]; then
        local _
        for _ in $(seq 1 50); do
            kill -0 "$mount_pid" 2>/dev/null || break
            sleep 0.2
        done
        if kill -0 "$mount_pid" 2>/dev/null; then
            log "mount process $mount_pid did not exit after unmount; SIGTERM"
            kill -TERM "$mount_pid" 2>/dev/null || true
            sleep 1
            kill -KILL "$mount_pid" 2>/dev/null || true
        fi
        wait "$mount_pid" 2>/dev/null || true
        mount_pid=""
    fi
}

stop_server() {
    if [[ -n "$server_pid" ]]; then
        kill -TERM "$server_pid" 2>/dev/null || true
        local _
        for _ in $(seq 1 50); do
            kill -0 "$server_pid" 2>/dev/null || break
            sleep 0.2
        done
        kill -KILL "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
        server_pid=""
    fi
}

cleanup() {
    local status=$?
    trap - EXIT INT TERM
    unmount_fs
    stop_server
    if mountpoint -q "$mnt" 2>/dev/null; then
        log "$mnt is still mounted; leaving $work in place"
    else
        rm -rf --one-file-system "$work"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

show_logs() {
    local f
    for f in "$work/serve.log" "$work/mount.log"; do
        [[ -s "$f" ]] && { echo "--- tail of $f" >&2; tail -n 20 "$f" >&2; }
    done
    return 0
}
on_err() { log "failed at line $1 (exit $2)"; show_logs; }
trap 'on_err "$LINENO" "$?"' ERR

# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.4f", b - a }'; }
drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches; }

# timed_read FILE -> seconds (dd fails => the script fails)
timed_read() {
    local t0 t1
    t0=$(now)
    timeout -k 5 "$READ_TIMEOUT" dd if="$1" of=/dev/null bs=1M status=none
    t1=$(now)
    elapsed "$t0" "$t1"
}

free_port() { "$repo/examples/free-port"; }

mount_fs() {
    mkdir -p "$mnt" "$cache"
    "$BIN" mount "127.0.0.1:$port,$server_id" "$mnt" --cache "$cache" 2>>"$work/mount.log" &
    mount_pid=$!
    local _
    for _ in $(seq 1 150); do
        mountpoint -q "$mnt" && break
        kill -0 "$mount_pid" 2>/dev/null || die "mount exited before mounting"
        sleep 0.2
    done
    mountpoint -q "$mnt" || die "not mounted after 30 s"
    for _ in $(seq 1 150); do
        [[ "$(cat "$mnt/latest" 2>/dev/null || true)" =~ ^[[:space:]]*1[[:space:]]*$ ]] && return 0
        sleep 0.2
    done
    die "$mnt/latest does not say 1 after 30 s (got: $(cat "$mnt/latest" 2>&1 || true))"
}

# fresh node: unmount, wipe the node cache, mount again
remount_cold() {
    unmount_fs
    rm -rf --one-file-system "$cache"
    mount_fs
}

bdi_ra_file() {
    local dev
    dev=$(mountpoint -d "$mnt")
    echo "/sys/class/bdi/$dev/read_ahead_kb"
}
get_ra() { local f; f=$(bdi_ra_file); if [[ -r "$f" ]]; then cat "$f"; else echo "?"; fi; }
set_ra() {
    local f; f=$(bdi_ra_file)
    if [[ -w "$f" ]]; then echo "$1" > "$f"; else log "cannot write $f"; fi
}

# resident_of FILE -> how much of FILE is in the page cache (fincore), "?" if unknown
resident_of() {
    if [[ -f "$1" ]] && command -v fincore >/dev/null; then
        fincore -n -b -o RES "$1" 2>/dev/null | awk -v t="$file_bytes" '{ printf "%.0f%%", 100 * $1 / t; exit }'
    else
        echo "?"
    fi
}
warm_server_blob() { cat "$blob" > /dev/null; }

# results: label | bytes or ops | seconds | rate | unit | note
rows=()
declare -A rate_of
add_read_row() {  # key label seconds note
    local rate
    rate=$(awk -v b="$file_bytes" -v s="$3" 'BEGIN { printf "%.2f", b / 1073741824 / s }')
    rate_of[$1]=$rate
    rows+=("$2"$'\t'"$FILE_MB MiB"$'\t'"$3"$'\t'"$rate"$'\t'"GiB/s"$'\t'"$4")
    log "$(printf '%-44s %8s s  %7s GiB/s  %s' "$2" "$3" "$rate" "$4")"
}
add_stat_row() {  # key label count seconds note
    local rate
    rate=$(awk -v n="$3" -v s="$4" 'BEGIN { printf "%.0f", n / s }')
    rate_of[$1]=$rate
    rows+=("$2"$'\t'"$3 files"$'\t'"$4"$'\t'"$rate"$'\t'"stat/s"$'\t'"$5")
    log "$(printf '%-44s %8s s  %9s stat/s  %s' "$2" "$4" "$rate" "$5")"
}
ratio() { awk -v a="${rate_of[$1]:-0}" -v b="${rate_of[$2]:-0}" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }

# stat_pass ROOT [rel] -> "count seconds" (os.stat on every listed path, timed inside
# python).  Absolute paths by default (every stat walks from / through the mount's
# root); with "rel" the loop runs with ROOT as its working directory.
stat_pass() {
    timeout -k 5 300 python3 - "$1" "$work/stat-list" "${2:-abs}" <<'EOF'
import os, sys, time
root, listing, mode = sys.argv[1], sys.argv[2], sys.argv[3]
with open(listing) as f:
    names = [line.rstrip("\n") for line in f]
if mode == "rel":
    os.chdir(root)
    paths = names
else:
    paths = [os.path.join(root, n) for n in names]
t = time.perf_counter()
for p in paths:
    os.stat(p)
dt = time.perf_counter() - t
print(len(paths), f"{dt:.4f}")
EOF
}

# ---------------------------------------------------------------------------
# 1. server
# ---------------------------------------------------------------------------
t_start=$(now)
mkdir -p "$state" "$publish" "$work/staging"
log "work dir $work; binary $BIN"
server_id=$("$BIN" keygen --out "$work/server.key")
[[ ${#server_id} -eq 52 ]] || die "keygen printed '$server_id', expected a 52-char id"

port=$(free_port)
"$BIN" serve --key "$work/server.key" --state "$state" --publish "$publish" \
    --listen "127.0.0.1:$port" --settle-ms 200 </dev/null 2>"$work/serve.log" &
server_pid=$!
for _ in $(seq 1 150); do
    [[ "$(curl -s --max-time 2 "http://127.0.0.1:$port/healthz" || true)" == ok* ]] && break
    kill -0 "$server_pid" 2>/dev/null || die "serve exited at start"
    sleep 0.2
done
[[ "$(curl -s --max-time 2 "http://127.0.0.1:$port/healthz" || true)" == ok* ]] || die "serve not healthy after 30 s"

# ---------------------------------------------------------------------------
# 2. whiteboard load: upgradefs-load's simulated nodes against this server
# ---------------------------------------------------------------------------
load_table=""
if want load; then
    max_nodes=$(tr ',' '\n' <<<"$LOAD_NODES" | sort -n | tail -n 1)
    n_counts=$(tr ',' '\n' <<<"$LOAD_NODES" | wc -l)
    keys=$work/load-keys
    log "whiteboard load: writing keys of $max_nodes simulated nodes and the operator"
    "$LOAD_BIN" keygen --nodes "$max_nodes" --out "$keys" > "$work/enroll-lines"
    # each enrolled as an operator does it: `upgradefs enroll` while the server runs
    t0=$(now)
    while read -r name key; do
        "$BIN" enroll --state "$state" "$name" "$key" >/dev/null
    done < "$work/enroll-lines"
    enroll_s=$(elapsed "$t0" "$(now)")
    log "enrolled $(wc -l < "$work/enroll-lines") keys with upgradefs enroll in ${enroll_s} s"
    # 5 phases per node count, each LOAD_SECONDS + 0.5 s warm-up; generous slack for start and checks
    load_timeout=$(( n_counts * 5 * (LOAD_SECONDS + 1) + 120 ))
    # other work on the machine shows in the figures: say how busy it was
    load_avg=$(cut -d' ' -f1-3 /proc/loadavg)
    t0=$(now)
    timeout -k 5 "$load_timeout" "$LOAD_BIN" run --server "http://127.0.0.1:$port" --id "$server_id" \
        --keys "$keys" --nodes "$LOAD_NODES" --seconds "$LOAD_SECONDS" > "$work/load-table" \
        || die "upgradefs-load run failed (exit $?)"
    load_s=$(elapsed "$t0" "$(now)")
    load_table=$(cat "$work/load-table")
fi

print_load_table() {
    [[ -n "$load_table" ]] || return 0
    echo
    echo "whiteboard load — $(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) CPUs ($(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)), kernel $(uname -r)"
    echo "binaries: $BIN, $LOAD_BIN"
    echo "server: upgradefs serve on 127.0.0.1 (state on $(df -P "$state" | awk 'NR==2 {print $1}'), udb.sqlite WAL synchronous=FULL);"
    echo "client: upgradefs-load on the same machine (the two share the CPUs). Each simulated node is one"
    echo "task with its own connection, sending its next request when the answer is in; ${LOAD_SECONDS} s measured per"
    echo "row after 0.5 s warm-up. Writes: signed by the node's Ed25519 key, seq increasing per channel."
    echo "enrolment of $max_nodes nodes + operator with upgradefs enroll: ${enroll_s} s; load run: ${load_s} s"
    echo "load average (1, 5, 15 min) just before the load run: $load_avg"
    echo
    echo "$load_table"
}

if ! want fs; then
    print_load_table
    echo
    echo "total bench time: $(elapsed "$t_start" "$(now)") s"
    exit 0
fi

# ---------------------------------------------------------------------------
# 3. bundle, published
# ---------------------------------------------------------------------------
bundle=$work/staging/bench-v1
mkdir -p "$bundle/payload"
printf 'class = "demo"\nversion = 1\ndescription = "upgradefs benchmark bundle"\n' > "$bundle/upgrade.toml"
log "writing a ${FILE_MB} MiB random file and $NFILES small files"
head -c "$(( FILE_MB * 1048576 ))" /dev/urandom > "$bundle/payload/big.bin"
python3 - "$bundle/payload/many" "$NFILES" "$work/stat-list" <<'EOF'
import os, sys
root, n, listing = sys.argv[1], int(sys.argv[2]), sys.argv[3]
names = []
for i in range(n):
    rel = f"d{i // 100:03d}/f{i:05d}.txt"
    os.makedirs(os.path.join(root, os.path.dirname(rel)), exist_ok=True)
    with open(os.path.join(root, rel), "w") as f:
        f.write(f"small file {i}\n")
    names.append("payload/many/" + rel)
with open(listing, "w") as f:
    f.write("\n".join(names) + "\n")
EOF
file_bytes=$(stat -c %s "$bundle/payload/big.bin")
file_sha=$(openssl dgst -sha256 -r "$bundle/payload/big.bin" | cut -d' ' -f1)
blob=$state/blobs/sha256/${file_sha:0:2}/$file_sha

# a rename into the publish dir (same file system): the bundle appears whole, and
# the 1 GiB is not copied a third time.  The source stays there as the native file.
mv "$bundle" "$publish/bench-v1"
native=$publish/bench-v1/payload/big.bin
native_tree=$publish/bench-v1
t_pub=$(now)
for _ in $(seq 1 $(( PUBLISH_TIMEOUT * 5 ))); do
    [[ -e "$publish/bench-v1.published" ]] && break
    [[ -e "$publish/bench-v1.rejected" ]] && die "bundle rejected: $(cat "$publish/bench-v1.rejected")"
    kill -0 "$server_pid" 2>/dev/null || die "serve exited while publishing"
    sleep 0.2
done
[[ -e "$publish/bench-v1.published" ]] || die "bundle not published after $PUBLISH_TIMEOUT s"
publish_s=$(elapsed "$t_pub" "$(now)")
log "published in ${publish_s} s (settle 200 ms included)"
[[ -f "$blob" ]] || die "blob $blob not in the server's content store"
url="http://127.0.0.1:$port/targets/1/payload/$file_sha.big.bin"

# ---------------------------------------------------------------------------
# 4. native reads, curl
# ---------------------------------------------------------------------------
drop_caches
resident=$(resident_of "$native")
s=$(timed_read "$native"); add_read_row native_cold "native read, after drop_caches (disk)" "$s" "resident before: $resident"
s=$(timed_read "$native"); add_read_row native_warm "native read, warm (page cache)" "$s" "dd bs=1M"

warm_server_blob
t0=$(now); curl -sf --max-time "$READ_TIMEOUT" -o /dev/null "$url"; t1=$(now)
add_read_row curl "curl -o /dev/null (server blob in page cache)" "$(elapsed "$t0" "$t1")" "loopback HTTP"
t0=$(now); got=$(curl -sf --max-time "$READ_TIMEOUT" "$url" | openssl dgst -sha256 -r | cut -d' ' -f1); t1=$(now)
[[ "$got" == "$file_sha" ]] || die "curl | openssl: hash $got, expected $file_sha"
add_read_row curl_sha "curl | openssl dgst -sha256" "$(elapsed "$t0" "$t1")" "fetch + hash, 2 processes"
# What a cold read must also do: land the bytes on the node's disk (page cache
# + writeback), on the same file system as the node cache.
mkdir -p "$cache"
sync
t0=$(now); curl -sf --max-time "$READ_TIMEOUT" -o "$cache/curl-baseline" "$url"; t1=$(now)
add_read_row curl_file "curl -o FILE (on the node cache's disk)" "$(elapsed "$t0" "$t1")" "fetch + write, no hash"
rm -f "$cache/curl-baseline"
sync

# ---------------------------------------------------------------------------
# 5. reads through the mount
# ---------------------------------------------------------------------------
mfile=$mnt/versions/1/payload/big.bin
remount_cold
ra_default=$(get_ra)
log "mount bdi $(mountpoint -d "$mnt"): read_ahead_kb=$ra_default (kernel/daemon default)"
raise=0
if [[ "$RA_KB" -gt 0 && "$ra_default" =~ ^[0-9]+$ && "$ra_default" -lt "$RA_KB" ]]; then
    raise=1
fi

[[ "$(stat -c %s "$mfile")" == "$file_bytes" ]] || die "size through the mount differs"
warm_server_blob
s=$(timed_read "$mfile")
add_read_row cold_default "mount, cold (fetch+verify), read_ahead=$ra_default" "$s" "fresh node cache"

if [[ $raise -eq 1 ]]; then
    remount_cold
    set_ra "$RA_KB"
    warm_server_blob
    s=$(timed_read "$mfile")
    add_read_row cold_raised "mount, cold (fetch+verify), read_ahead=$(get_ra)" "$s" "fresh node cache"
    cold_key=cold_raised
else
    cold_key=cold_default
fi
ra_now=$(get_ra)
s=$(timed_read "$mfile"); add_read_row mount_warm "mount, 2nd read (kernel page cache)" "$s" "read_ahead=$ra_now"
drop_caches
resident=$(resident_of "$cache/blobs/$file_sha")
s=$(timed_read "$mfile"); add_read_row mount_disk "mount, 3rd read after drop_caches" "$s" "node disk cache; resident before: $resident"

got=$(openssl dgst -sha256 -r "$mfile" | cut -d' ' -f1)
[[ "$got" == "$file_sha" ]] || die "content through the mount hashes to $got, expected $file_sha"

# ---------------------------------------------------------------------------
# 6. metadata: os.stat on every small file
# ---------------------------------------------------------------------------
drop_caches
out=$(stat_pass "$native_tree"); read -r n s <<<"$out"
add_stat_row stat_native_cold "native stat, after drop_caches" "$n" "$s" "inodes from disk"
out=$(stat_pass "$native_tree"); read -r n s <<<"$out"
add_stat_row stat_native_warm "native stat, warm" "$n" "$s" "dentry/inode cache"
drop_caches
out=$(stat_pass "$mnt/versions/1"); read -r n s <<<"$out"
add_stat_row stat_mount_cold "mount stat, 1st pass (lookups to the daemon)" "$n" "$s" "after drop_caches"
out=$(stat_pass "$mnt/versions/1"); read -r n s <<<"$out"
add_stat_row stat_mount_warm "mount stat, 2nd pass (kernel-cached)" "$n" "$s" "absolute paths, like pass 1"
out=$(stat_pass "$mnt/versions/1" rel); read -r n s <<<"$out"
add_stat_row stat_mount_rel "mount stat, 3rd pass, cwd=versions/1" "$n" "$s" "relative paths: skips root, versions/"
out=$(stat_pass "$native_tree" rel); read -r n s <<<"$out"
add_stat_row stat_native_rel "native stat, warm, cwd=bundle dir" "$n" "$s" "relative paths"

# ---------------------------------------------------------------------------
# 7. tables
# ---------------------------------------------------------------------------
echo
echo "upgradefs bench — $(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) CPUs ($(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)), kernel $(uname -r), $(fusermount3 -V 2>&1 | head -n1)"
echo "binary: $BIN"
if [[ $raise -eq 1 ]]; then
    echo "read_ahead_kb of the mount's bdi raised from $ra_default to $ra_now for the runs marked so (default shown alongside)"
else
    echo "read_ahead_kb of the mount's bdi left at $ra_default (what the mount set up; requested minimum: $RA_KB, 0 = leave alone)"
fi
echo "publish of the bench bundle ($FILE_MB MiB + $NFILES files): ${publish_s} s"
echo
printf '| %-46s | %-11s | %8s | %9s | %-6s | %-36s |\n' "measurement" "size" "seconds" "rate" "unit" "note"
printf '|%s|%s|%s|%s|%s|%s|\n' "$(printf -- '-%.0s' {1..48})" "$(printf -- '-%.0s' {1..13})" \
    "$(printf -- '-%.0s' {1..10})" "$(printf -- '-%.0s' {1..11})" "$(printf -- '-%.0s' {1..8})" "$(printf -- '-%.0s' {1..38})"
for row in "${rows[@]}"; do
    IFS=$'\t' read -r a b c d e f <<<"$row"
    printf '| %-46s | %-11s | %8s | %9s | %-6s | %-36s |\n' "$a" "$b" "$c" "$d" "$e" "$f"
done
echo
echo "ratios (rate / rate; > 1 means the first is faster):"
printf '  %-66s %s\n' \
    "mount cold / curl -o /dev/null" "$(ratio "$cold_key" curl)" \
    "mount cold / curl | openssl dgst" "$(ratio "$cold_key" curl_sha)" \
    "mount cold / curl -o FILE (same disk)" "$(ratio "$cold_key" curl_file)" \
    "mount 2nd read (page cache) / native warm" "$(ratio mount_warm native_warm)" \
    "mount after drop_caches (node disk cache) / native after drop_caches" "$(ratio mount_disk native_cold)" \
    "mount stat 1st pass / native stat after drop_caches" "$(ratio stat_mount_cold stat_native_cold)" \
    "mount stat 2nd pass / native stat warm" "$(ratio stat_mount_warm stat_native_warm)" \
    "mount stat 3rd pass (relative) / native stat warm (relative)" "$(ratio stat_mount_rel stat_native_rel)"
if [[ $raise -eq 1 ]]; then
    printf '  %-66s %s\n' "mount cold (default read_ahead $ra_default) / curl" "$(ratio cold_default curl)" \
        "mount cold: read_ahead $ra_now / read_ahead $ra_default" "$(ratio cold_raised cold_default)"
fi
print_load_table
echo
echo "total bench time: $(elapsed "$t_start" "$(now)") s"
