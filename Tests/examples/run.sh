#!/bin/sh
# Tests of the example material: the counter application (examples/app/) and
# the scheduling functions (examples/sf/). Run by `make examples-test` (and
# so by `make test`). Needs only sh, coreutils, grep, sed and awk.
#
# (a) the app: each version's start/stop/status/incr on real state in a
#     temporary node layout (gen/N/{release,state}), the transforms 1->2->3
#     as the manager runs them (staged copy + read-only old state), refusal of
#     state they do not understand, and checks that pass and fail;
# (b) every SF against a temporary directory laid out like the mount's udb/,
#     with the manager's documented environment: the decision (0 = go,
#     75 = not yet, else failure) in the situations each SF cares about;
# (c) with UPGRADEFS_BIN set: the SFs on real mounts (Tests/examples/mount.sh).
# Prints every failed assertion and exits 1 if there was any.
set -u
LC_ALL=C; export LC_ALL
top=$(cd "$(dirname "$0")/../.." && pwd)
app=$top/examples/app
sfdir=$top/examples/sf
work=$(mktemp -d "${TMPDIR:-/tmp}/upgradefs-examples.XXXXXX")
failures=0 passes=0

cleanup() {
    # stop every counter daemon a test started (they run detached)
    for pidfile in "$work"/*/gen/*/run/pid; do
        [ -f "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null
    done
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

pass() { passes=$((passes + 1)); }
fail() { failures=$((failures + 1)); echo "FAIL: $*"; }
# ok DESCRIPTION COMMAND...: the command must succeed
ok() { d=$1; shift; if out=$("$@" 2>&1); then pass; else fail "$d (exit $?): $out"; fi; }
# no DESCRIPTION COMMAND...: the command must fail
no() { d=$1; shift; if out=$("$@" 2>&1); then fail "$d: succeeded but should fail: $out"; else pass; fi; }
# same DESCRIPTION EXPECTED ACTUAL
same() { if [ "$2" = "$3" ]; then pass; else fail "$1: expected '$2', got '$3'"; fi; }
# says DESCRIPTION PATTERN TEXT: TEXT contains PATTERN (grep -E)
says() { if printf "%s" "$3" | tr "\n" " " | grep -Eq -- "$2"; then pass; else fail "$1: no '$2' in: $3"; fi; }
section() { echo "== $*"; }

# ---------------------------------------------------------------- (a) the app
# A node's layout as the manager keeps it: gen/N/release (the payload) and
# gen/N/state; the app's runtime files land in gen/N/run.
node=$work/node
gen() { echo "$node/gen/$1"; }
# The environment the manager builds for what it runs (docs/REFERENCE.md, "The environment of SFs, TFs, checks, start
# and stop"): nothing of the caller's but these, plus the UPGRADEFS_ variables and node.toml's settings.
menv="env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 HOME=${HOME:-/} USER=$(id -un) LOGNAME=$(id -un)"
# appcmd V PROGRAM [ARGS]: run release V's bin/PROGRAM with the manager's env
appcmd() {
    v=$1; shift; p=$1; shift
    $menv UPGRADEFS_NODE=n1 UPGRADEFS_CLASS=counter UPGRADEFS_VERSION="$v" \
        UPGRADEFS_RELEASE="$(gen "$v")/release" UPGRADEFS_STATE="$(gen "$v")/state" \
        COUNTER_TIMEOUT=5 "$(gen "$v")/release/bin/$p" "$@"
}
# bundlecmd V PROGRAM [OLD-VERSION]: run bundle V's tf or check as the manager
# does (cwd = the bundle, staged state and release of V, old state read-only)
bundlecmd() {
    old=${3:-}
    (cd "$app/counter-v$1" && $menv UPGRADEFS_NODE=n1 UPGRADEFS_CLASS=counter \
        UPGRADEFS_FROM="${old:-0}" UPGRADEFS_TO="$1" \
        UPGRADEFS_RELEASE="$(gen "$1")/release" UPGRADEFS_STATE="$(gen "$1")/state" \
        ${old:+UPGRADEFS_OLD_STATE="$(gen "$old")/state"} COUNTER_TIMEOUT=5 "./$2")
}
# stage F N: what the manager does before the TF: copy N's payload and F's state
stage() {
    rm -rf "$(gen "$2")"; mkdir -p "$(gen "$2")"
    cp -R "$app/counter-v$2/payload" "$(gen "$2")/release"
    cp -R "$(gen "$1")/state" "$(gen "$2")/state"
}
# a fingerprint of a state directory: names, sizes, times, contents
fingerprint() { ls -lA --time-style=+%s "$1"; cat "$1"/* 2>/dev/null; }

section "bundles"
for v in 1 2 3; do
    b=$app/counter-v$v
    same "counter-v$v class" 'class = "counter"' "$(grep '^class' "$b/upgrade.toml")"
    same "counter-v$v version" "version = $v" "$(grep '^version' "$b/upgrade.toml")"
    [ -x "$b/check" ] && pass || fail "counter-v$v/check is not executable"
    for p in start stop status counter; do
        [ -x "$b/payload/bin/$p" ] && pass || fail "counter-v$v/payload/bin/$p is not executable"
    done
    # Only the state format changes between versions: bin/ is the same.
    ok "counter-v$v/payload/bin is the same as counter-v1's" diff -r "$app/counter-v1/payload/bin" "$b/payload/bin"
    same "counter-v$v lib/state.sh says its version" "COUNTER_VERSION=$v" \
        "$(grep '^COUNTER_VERSION=' "$b/payload/lib/state.sh")"
done
same "counter-v1 has no from-version" "" "$(grep '^from-version' "$app/counter-v1/upgrade.toml")"
same "counter-v2 from-version" "from-version = 1" "$(grep '^from-version' "$app/counter-v2/upgrade.toml")"
same "counter-v3 from-version" "from-version = 2" "$(grep '^from-version' "$app/counter-v3/upgrade.toml")"
[ -x "$app/counter-v2/tf" ] && [ -x "$app/counter-v3/tf" ] && pass || fail "a tf is not executable"

section "counter 1: start, stop, status, incr, check"
mkdir -p "$(gen 1)/state"; cp -R "$app/counter-v1/payload" "$(gen 1)/release"
out=$(appcmd 1 status); same "status before start exits 3" 3 $?
says "status before start" "not running" "$out"
ok "stop when not running succeeds" appcmd 1 stop
no "incr when not running fails" appcmd 1 counter incr
no "check fails when not running" bundlecmd 1 check
ok "start" appcmd 1 start
pid=$(cat "$(gen 1)/run/pid")
same "the daemon does not keep its start directory busy (cwd /)" / "$(readlink "/proc/$pid/cwd")"
out=$(appcmd 1 start 2>&1); same "second start succeeds" 0 $?
says "second start does nothing" "already running \(pid $pid\)" "$out"
same "status of a fresh install" "version=1 pid=$pid count=0" "$(appcmd 1 status)"
same "a fresh install saves count 0" 0 "$(cat "$(gen 1)/state/count")"
same "incr 1" 1 "$(appcmd 1 counter incr)"
same "incr 2" 2 "$(appcmd 1 counter incr)"
same "incr 3" 3 "$(appcmd 1 counter incr)"
same "state/count after 3 requests" 3 "$(cat "$(gen 1)/state/count")"
same "counter get" 3 "$(appcmd 1 counter get)"
ok "check of version 1 passes" bundlecmd 1 check
echo 9 > "$(gen 1)/state/count"
out=$(bundlecmd 1 check); same "check fails when the daemon and the state disagree" 1 $?
says "check says why" "counts 3 but the state holds 9" "$out"
echo 3 > "$(gen 1)/state/count"
ok "stop" appcmd 1 stop
kill -0 "$pid" 2>/dev/null && [ -n "$(tr -d '\0' < "/proc/$pid/cmdline" 2>/dev/null)" ] &&
    fail "the daemon (pid $pid) still runs after stop" || pass
[ ! -e "$(gen 1)/run/pid" ] && pass || fail "stop left the pid file"
appcmd 1 status > /dev/null; same "status after stop exits 3" 3 $?
ok "start again" appcmd 1 start
same "the count survives a restart" 4 "$(appcmd 1 counter incr)"
ok "stop again" appcmd 1 stop
echo abc > "$(gen 1)/state/count"
out=$(appcmd 1 start 2>&1); same "start on a count it cannot read fails" 1 $?
says "start says why" "does not hold a count: 'abc'" "$out"
[ ! -e "$(gen 1)/run/pid" ] && pass || fail "a refused start left a pid file"
echo 4 > "$(gen 1)/state/count"
touch -d @1700000000 "$(gen 1)/state/count"     # when version 1 last counted

section "transform 1->2, counter 2"
stage 1 2
before=$(fingerprint "$(gen 1)/state")
out=$(appcmd 2 start 2>&1); same "counter 2 refuses version 1's state untransformed" 1 $?
says "and says what it found" "does not read: count" "$out"
ok "tf 1->2" bundlecmd 2 tf 1
same "tf 1->2 leaves the old state alone" "$before" "$(fingerprint "$(gen 1)/state")"
same "tf 1->2 output" "count=4
updated=1700000000" "$(cat "$(gen 2)/state/counter.conf")"
same "tf 1->2 leaves only counter.conf" counter.conf "$(ls -A "$(gen 2)/state")"
out=$(bundlecmd 2 tf 1); same "tf 1->2 on converted state succeeds" 0 $?
says "tf 1->2 on converted state says so" "already" "$out"
ok "start counter 2" appcmd 2 start
says "counter 2 status" "^version=2 pid=[0-9]+ count=4$" "$(appcmd 2 status)"
ok "check of version 2 passes" bundlecmd 2 check 1
same "incr on counter 2" 5 "$(appcmd 2 counter incr)"
says "counter 2 saves the time of the request" "^updated=[0-9]{10}$" "$(grep updated "$(gen 2)/state/counter.conf")"
no "check of version 2 fails against version 1's check (wrong version)" bundlecmd 1 check
echo 99 > "$(gen 1)/state/count"
out=$(bundlecmd 2 check 1); same "check 2 fails when the count went down" 1 $?
says "check 2 says requests were lost" "below version 1's 99" "$out"
echo 4 > "$(gen 1)/state/count"
ok "stop counter 2" appcmd 2 stop

section "transform 2->3, counter 3"
stage 2 3
before=$(fingerprint "$(gen 2)/state")
updated=$(sed -n 's/^updated=//p' "$(gen 2)/state/counter.conf")
ok "tf 2->3" bundlecmd 3 tf 2
same "tf 2->3 leaves the old state alone" "$before" "$(fingerprint "$(gen 2)/state")"
same "tf 2->3 output" "counter-state 3
requests 5
last-request $updated" "$(cat "$(gen 3)/state/counter.state")"
same "tf 2->3 leaves only counter.state" counter.state "$(ls -A "$(gen 3)/state")"
ok "start counter 3" appcmd 3 start
says "counter 3 status" "^version=3 pid=[0-9]+ count=5$" "$(appcmd 3 status)"
ok "check of version 3 passes" bundlecmd 3 check 2
cp "$(gen 2)/state/counter.conf" "$work/good.conf"
printf 'count=99\nupdated=0\n' > "$(gen 2)/state/counter.conf"
out=$(bundlecmd 3 check 2); same "check 3 fails when the count went down" 1 $?
says "check 3 says requests were lost" "below version 2's 99" "$out"
cp "$work/good.conf" "$(gen 2)/state/counter.conf"
same "incr on counter 3" 6 "$(appcmd 3 counter incr)"
ok "stop counter 3" appcmd 3 stop
ok "start counter 3 again" appcmd 3 start
same "the count survives a restart of counter 3" 7 "$(appcmd 3 counter incr)"
ok "stop counter 3 again" appcmd 3 stop
# The manager may name the state through `current`; start and stop must agree.
ln -s gen/3 "$node/current"
ok "start counter 3 through current/" env UPGRADEFS_STATE="$node/current/state" "$node/current/release/bin/start"
same "current/release/bin/counter finds its state without UPGRADEFS_STATE" 8 "$(env -u UPGRADEFS_STATE "$node/current/release/bin/counter" incr)"
ok "stop counter 3 through gen/3" appcmd 3 stop
appcmd 3 status > /dev/null; same "... it is stopped" 3 $?
cp "$(gen 3)/state/counter.state" "$work/good.state"
printf 'counter-state 4\nrequests 7\nlast-request 0\n' > "$(gen 3)/state/counter.state"
out=$(appcmd 3 start 2>&1); same "counter 3 refuses another format's header" 1 $?
says "and says why" "not 'counter-state 3'" "$out"
cp "$work/good.state" "$(gen 3)/state/counter.state"

section "transforms refuse state they do not understand"
# tfcase V FILE-CONTENTS... : stage an old state from NAME=CONTENT pairs, run tf V
tfcase() {
    v=$1; shift
    rm -rf "$(gen $((v - 1)))/state" "$(gen "$v")"
    mkdir -p "$(gen $((v - 1)))/state" "$(gen "$v")"
    for pair in "$@"; do printf '%b' "${pair#*=}" > "$(gen $((v - 1)))/state/${pair%%=*}"; done
    cp -R "$(gen $((v - 1)))/state" "$(gen "$v")/state"
    cp -R "$app/counter-v$v/payload" "$(gen "$v")/release"
    bundlecmd "$v" tf $((v - 1))
}
refused() { # DESCRIPTION PATTERN V PAIRS...: the tf must exit non-zero saying PATTERN
    d=$1 pat=$2; shift 2
    out=$(tfcase "$@" 2>&1); rc=$?
    if [ $rc -ne 0 ]; then says "$d: message" "refusing: .*$pat" "$out"; else fail "$d: tf accepted it: $out"; fi
}
refused "1->2 letters"        "not a decimal count" 2 'count=abc\n'
refused "1->2 empty count"    "not a decimal count" 2 'count='
refused "1->2 leading zero"   "not a decimal count" 2 'count=007\n'
refused "1->2 two lines"      "not a decimal count" 2 'count=1\n2\n'
refused "1->2 negative"       "not a decimal count" 2 'count=-1\n'
refused "1->2 huge"           "too large"           2 'count=1234567890123456789\n'
refused "1->2 unknown file"   "does not write: notes" 2 'count=1\n' 'notes=hi\n'
refused "1->2 both formats"   "both count and counter.conf" 2 'count=1\n' 'counter.conf=count=1\nupdated=0\n'
refused "2->3 unknown key"    "line 3: 'colour=red'" 3 'counter.conf=count=1\nupdated=0\ncolour=red\n'
refused "2->3 no count"       "count is '', not a decimal" 3 'counter.conf=updated=0\n'
refused "2->3 bad count"      "count is 'x', not a decimal" 3 'counter.conf=count=x\nupdated=0\n'
refused "2->3 bad updated"    "updated is '', not a decimal" 3 'counter.conf=count=1\n'
refused "2->3 second count"   "line 2: a second count" 3 'counter.conf=count=1\ncount=2\nupdated=0\n'
refused "2->3 version 1 state" "version 1's state" 3 'count=5\n'
refused "2->3 unknown file"   "does not write: extra" 3 'counter.conf=count=1\nupdated=0\n' 'extra=x'
ok "1->2 on an empty state (version 1 never saved)" tfcase 2
same "... gives count 0" "count=0
updated=0" "$(cat "$(gen 2)/state/counter.conf")"
ok "1->2 drops an interrupted save (.tmp.count)" tfcase 2 'count=8\n' '.tmp.count=9'
same "... and converts the real count" "count=8" "$(grep count "$(gen 2)/state/counter.conf")"
ok "2->3 on an empty state" tfcase 3
same "... gives requests 0" "requests 0" "$(sed -n 2p "$(gen 3)/state/counter.state")"
ok "2->3 without a trailing newline" tfcase 3 'counter.conf=updated=12\ncount=3'
same "... converts" "counter-state 3 requests 3 last-request 12" "$(echo $(cat "$(gen 3)/state/counter.state"))"

section "make-bundle.sh"
mb=$app/make-bundle.sh
ok "make-bundle with canary and a setting" "$mb" "$app/counter-v3" canary "$work/b3" "CANARY_NODES=n1 n2" "X_Q=it's"
ok "... copies the bundle" diff -r "$app/counter-v3/payload" "$work/b3/payload"
ok "... copies the tf" cmp "$app/counter-v3/tf" "$work/b3/tf"
[ -x "$work/b3/sf" ] && pass || fail "make-bundle: sf is not executable"
same "... bakes the setting in" "[ -n \"\${CANARY_NODES:-}\" ] || CANARY_NODES='n1 n2'" "$(sed -n 3p "$work/b3/sf")"
same "... quotes it for sh" "n1 n2|it's" "$(sed -n 1,4p "$work/b3/sf" | sh -c '. /dev/stdin; echo "$CANARY_NODES|$X_Q"')"
same "... and keeps the rest of the SF" "$(tail -n +2 "$sfdir/canary")" "$(tail -n +5 "$work/b3/sf")"
ok "make-bundle -v 12 -f 11" "$mb" -v 12 -f 11 "$app/counter-v1" rolling "$work/b12"
same "... version" "version = 12" "$(grep '^version' "$work/b12/upgrade.toml")"
same "... from-version added" "from-version = 11" "$(grep '^from-version' "$work/b12/upgrade.toml")"
ok "... sf unchanged without settings" cmp "$sfdir/rolling" "$work/b12/sf"
ok "make-bundle none" "$mb" "$work/b3" none "$work/b3none"
[ ! -e "$work/b3none/sf" ] && pass || fail "make-bundle none left an sf"
no "make-bundle refuses an unknown SF" "$mb" "$app/counter-v2" no-such-sf "$work/bx"
[ ! -e "$work/bx" ] && pass || fail "a refused make-bundle left $work/bx"
no "make-bundle refuses an existing OUT-DIR" "$mb" "$app/counter-v2" rolling "$work/b3"
no "make-bundle refuses a non-bundle" "$mb" "$work" rolling "$work/by"
no "make-bundle refuses a bad setting" "$mb" "$app/counter-v2" rolling "$work/bz" lower=1

# ------------------------------------------------------ (b) the scheduling functions
# A plain directory laid out like the mount's udb/: nodes n1..n4 at version 2
# with fresh heartbeats, upgrade 3 (control empty = go), locks/, shared/.
udb=$work/udb
fleet() {
    rm -rf "$udb" "$work/ldb" "$work/retry"
    mkdir -p "$udb/upgrades/3" "$udb/locks" "$udb/shared" "$work/retry"
    : > "$udb/upgrades/3/control"
    for n in "$@"; do
        mkdir -p "$udb/nodes/$n" "$work/ldb/$n"
        echo running > "$udb/nodes/$n/state"
        echo 2 > "$udb/nodes/$n/version"
        date +%s > "$udb/nodes/$n/heartbeat"
    done
}
# runsf SF NODE [NAME=VALUE...]: run an SF as the manager would for NODE, upgrade 2 -> 3
runsf() {
    s=$1 n=$2; shift 2
    (cd "$work" && $menv UPGRADEFS_NODE="$n" UPGRADEFS_CLASS=counter UPGRADEFS_FROM=2 UPGRADEFS_TO=3 \
        UPGRADEFS_MOUNT="$work" UPGRADEFS_UDB="$udb" UPGRADEFS_SELF="$udb/nodes/$n" \
        UPGRADEFS_BUNDLE="$work" UPGRADEFS_LDB="$work/ldb/$n" UPGRADEFS_ATTEMPT=1 \
        UPGRADEFS_CONTROL="$(cat "$udb/upgrades/3/control" 2>/dev/null)" \
        UPGRADEFS_PHASE=before UPGRADEFS_RETRY_FILE="$work/retry/$n" "$@" "$sfdir/$s" 2>&1)
}
# decide DESCRIPTION EXIT SF NODE [NAME=VALUE...]: the SF must exit with EXIT
decide() {
    d=$1 want=$2; shift 2
    out=$(runsf "$@"); rc=$?
    if [ "$rc" = "$want" ]; then pass; else fail "$1 $2: $d: exit $rc, expected $want: $out"; fi
}

section "every SF: refuses to run without the manager's environment"
for s in rolling big-flip canary ramp healthy; do      # (window needs nothing from the manager)
    out=$(env -i PATH="$PATH" "$sfdir/$s" 2>&1); rc=$?
    [ $rc -ne 0 ] && [ $rc -ne 75 ] && pass || fail "$s without environment: exit $rc: $out"
done
fleet n1
for s in fast-reboot rolling big-flip canary ramp window healthy; do
    [ -x "$sfdir/$s" ] && pass || fail "examples/sf/$s is not executable"
    grep -q "^# $s — " "$sfdir/$s" && pass || fail "examples/sf/$s has no '# $s — ' header line"
    grep -q "^- \*\*$s\*\*" "$sfdir/README.md" && pass || fail "examples/sf/README.md does not list $s"
    decide "after phase exits 0" 0 "$s" n1 UPGRADEFS_PHASE=after UPGRADEFS_RESULT=done
done

section "fast-reboot"
fleet n1 n2
decide "goes at once" 0 fast-reboot n1

section "rolling (plain directory: the EEXIST and release paths; EBUSY through a stub mkdir)"
fleet n1 n2
mkdir -p "$udb/locks/counter-rolling"; echo 2 > "$udb/locks/counter-rolling/capacity"
decide "takes a slot" 0 rolling n1
[ -d "$udb/locks/counter-rolling/n1" ] && pass || fail "rolling: no holder directory locks/counter-rolling/n1"
decide "already holding a slot (EEXIST) goes again" 0 rolling n1
says "rolling EEXIST says so" "already holding" "$(runsf rolling n1)"
decide "after phase releases" 0 rolling n1 UPGRADEFS_PHASE=after UPGRADEFS_RESULT=failed
[ ! -e "$udb/locks/counter-rolling/n1" ] && pass || fail "rolling: the after phase left locks/counter-rolling/n1"
decide "after phase when not holding" 0 rolling n1 UPGRADEFS_PHASE=after UPGRADEFS_RESULT=aborted
decide "ROLLING_LOCK and ROLLING_HOLDER" 0 rolling n2 ROLLING_LOCK=counter-rolling ROLLING_HOLDER=h2
[ -d "$udb/locks/counter-rolling/h2" ] && pass || fail "rolling: ROLLING_HOLDER=h2 made no locks/counter-rolling/h2"
decide "a lock that does not exist is an SF failure" 1 rolling n1 ROLLING_LOCK=nope
says "... with a message" "no lock nope" "$(runsf rolling n1 ROLLING_LOCK=nope)"
# A plain directory has no capacity: stand-ins for mkdir/rmdir/sleep print
# what the mount's would (its errnos' strerror texts) to test the decisions.
stub=$work/stub; mkdir -p "$stub"
cat > "$stub/mkdir" <<'STUB'
#!/bin/sh
if [ -n "${STUB_BUSY_TIMES:-}" ]; then      # fail that many times, then succeed
    n=$(cat "$STUB_MKDIR_COUNT" 2>/dev/null || echo 0); echo $((n + 1)) > "$STUB_MKDIR_COUNT"
    [ "$n" -ge "$STUB_BUSY_TIMES" ] && exit 0
fi
echo "mkdir: cannot create directory '$1': $STUB_ERR" >&2; exit 1
STUB
cat > "$stub/rmdir" <<'STUB'
#!/bin/sh
n=$(cat "$STUB_COUNT" 2>/dev/null || echo 0); echo $((n + 1)) > "$STUB_COUNT"
[ "$n" -ge 2 ] && exit 0
echo "rmdir: failed to remove '$1': No route to host" >&2; exit 1
STUB
printf '#!/bin/sh\nexit 0\n' > "$stub/sleep"
chmod +x "$stub/mkdir" "$stub/rmdir" "$stub/sleep"
decide "full (EBUSY) waits" 75 rolling n1 PATH="$stub:$PATH" "STUB_ERR=Device or resource busy" ROLLING_WAIT=1
decide "full with ROLLING_WAIT=0 says not yet at once" 75 rolling n1 PATH="$stub:$PATH" "STUB_ERR=Device or resource busy" ROLLING_WAIT=0
decide "full, then a slot frees while it watches: goes" 0 rolling n1 PATH="$stub:$PATH" "STUB_ERR=Device or resource busy" \
    STUB_BUSY_TIMES=2 STUB_MKDIR_COUNT="$work/mkdir-count"
same "... three mkdir tries" 3 "$(cat "$work/mkdir-count")"
decide "server unreachable (EHOSTUNREACH) waits" 75 rolling n1 PATH="$stub:$PATH" "STUB_ERR=No route to host"
decide "forbidden (EACCES) is an SF failure" 1 rolling n1 PATH="$stub:$PATH" "STUB_ERR=Permission denied"
decide "after phase retries an unreachable server" 0 rolling n1 PATH="$stub:$PATH" STUB_COUNT="$work/rmdir-count" UPGRADEFS_PHASE=after
same "... three rmdir tries" 3 "$(cat "$work/rmdir-count")"

section "big-flip"
fleet n1 n2 n3 n4 operator
decide "first half goes" 0 big-flip n1
decide "first half goes" 0 big-flip n2
decide "second half waits while the first half is at 2" 75 big-flip n3
says "... naming whom it waits for" "waiting for n1 n2 to reach version 3" "$(runsf big-flip n4)"
echo 3 > "$udb/nodes/n1/version"
decide "second half waits for the whole first half" 75 big-flip n4
echo 4 > "$udb/nodes/n2/version"
decide "second half goes once the first half is >= 3" 0 big-flip n4
echo garbage > "$udb/nodes/n2/version"
decide "an unreadable version counts as behind" 75 big-flip n3
decide "BIGFLIP_FIRST names the first half" 0 big-flip n4 BIGFLIP_FIRST=n4
decide "BIGFLIP_FIRST: others wait for it" 75 big-flip n1 BIGFLIP_FIRST=n4
fleet n1 n2 n3 n4 n5
decide "5 nodes: the first half is 3" 0 big-flip n3
decide "5 nodes: n4 waits" 75 big-flip n4
fleet
decide "no fleet to read is an SF failure, not a go" 1 big-flip n1

section "canary"
fleet n1 n2 n3 n4
decide "a canary goes" 0 canary n1 CANARY_NODES=n1,n2
decide "a canary goes (comma list)" 0 canary n2 CANARY_NODES=n1,n2
decide "the rest wait under go" 75 canary n3 CANARY_NODES=n1,n2
says "... telling the operator what to do" "echo approve > udb/upgrades/3/control" "$(runsf canary n3 CANARY_NODES=n1,n2)"
echo approve > "$udb/upgrades/3/control"
decide "the rest go after approve" 0 canary n3 CANARY_NODES=n1,n2
echo retry > "$udb/upgrades/3/control"
decide "a node that saw approve goes on under retry" 0 canary n3 CANARY_NODES=n1,n2
decide "a node that did not waits under retry" 75 canary n4 CANARY_NODES=n1,n2
echo pause > "$udb/upgrades/3/control"
decide "no canaries: everyone waits" 75 canary n1
rm "$udb/upgrades/3/control"
decide "no control file: the manager's word (env) counts" 0 canary n1 UPGRADEFS_CONTROL=approve

section "ramp"
place() { echo $(( $(printf '%s' "$1" | cksum | cut -d' ' -f1) % 100 )); }
# nodes at known places: lo < 10, mid in 10..24, hi >= 50
lo= mid= hi=
i=0
while [ -z "$lo" ] || [ -z "$mid" ] || [ -z "$hi" ]; do
    p=$(place "node$i")
    if [ "$p" -lt 10 ]; then lo=${lo:-node$i}; elif [ "$p" -lt 25 ]; then mid=${mid:-node$i}; elif [ "$p" -ge 50 ]; then hi=${hi:-node$i}; fi
    i=$((i + 1))
done
fleet "$lo" "$mid" "$hi"
decide "first step (10 %): place $(place "$lo") goes" 0 ramp "$lo"
[ -s "$udb/shared/ramp-counter-3.start" ] && pass || fail "ramp: the first node did not record shared/ramp-counter-3.start"
decide "first step (10 %): place $(place "$mid") waits" 75 ramp "$mid"
r=$(cat "$work/retry/$mid"); [ "$r" -ge 590 ] && [ "$r" -le 600 ] && pass || fail "ramp: retry after $r s, expected ~600"
echo $(( $(date +%s) - 700 )) > "$udb/shared/ramp-counter-3.start"
decide "second step (25 %): place $(place "$mid") goes" 0 ramp "$mid"
decide "second step (25 %): place $(place "$hi") waits" 75 ramp "$hi"
r=$(cat "$work/retry/$hi"); [ "$r" -ge 490 ] && [ "$r" -le 500 ] && pass || fail "ramp: retry after $r s, expected ~500"
decide "RAMP_INTERVAL: long past the last step everyone goes" 0 ramp "$hi" RAMP_INTERVAL=60
decide "RAMP_STEPS" 0 ramp "$hi" "RAMP_STEPS=10 80"
p=$(place "$hi")
echo "$p" > "$udb/shared/ramp-counter-3.percent"
decide "pinned at its place ($p %): waits" 75 ramp "$hi" RAMP_INTERVAL=60
echo $((p + 1)) > "$udb/shared/ramp-counter-3.percent"
decide "pinned just above its place: goes" 0 ramp "$hi"
echo 0 > "$udb/shared/ramp-counter-3.percent"
decide "pinned at 0: even place $(place "$lo") waits" 75 ramp "$lo"
echo lots > "$udb/shared/ramp-counter-3.percent"
decide "a pinned percentage that is not one is an SF failure" 1 ramp "$lo"
rm "$udb/shared/ramp-counter-3.percent"
decide "bad RAMP_STEPS" 1 ramp "$lo" "RAMP_STEPS=10 150"
decide "bad RAMP_INTERVAL" 1 ramp "$lo" RAMP_INTERVAL=0

section "window"
fleet n1
decide "inside 02:00-04:00" 0 window n1 "WINDOW_NOW=Tue 02:30"
decide "at the opening minute" 0 window n1 "WINDOW_NOW=Tue 02:00"
decide "before" 75 window n1 "WINDOW_NOW=Tue 01:59"
same "... asks again when it opens" 60 "$(cat "$work/retry/n1")"
decide "at the closing minute (excluded)" 75 window n1 "WINDOW_NOW=Tue 04:00"
same "... asks again in 22 h (the manager caps it)" 79200 "$(cat "$work/retry/n1")"
decide "WINDOW_START/END" 0 window n1 "WINDOW_NOW=Tue 13:10" WINDOW_START=13:00 WINDOW_END=14:00
decide "wrapping 22:00-02:00, evening" 0 window n1 "WINDOW_NOW=Tue 23:00" WINDOW_START=22:00 WINDOW_END=02:00
decide "wrapping 22:00-02:00, after midnight" 0 window n1 "WINDOW_NOW=Wed 01:00" WINDOW_START=22:00 WINDOW_END=02:00
decide "wrapping 22:00-02:00, morning" 75 window n1 "WINDOW_NOW=Wed 03:00" WINDOW_START=22:00 WINDOW_END=02:00
decide "WINDOW_DAYS: on the day" 0 window n1 "WINDOW_NOW=Sat 02:30" "WINDOW_DAYS=Sat Sun"
decide "WINDOW_DAYS: another day" 75 window n1 "WINDOW_NOW=Fri 02:30" "WINDOW_DAYS=Sat Sun"
decide "WINDOW_DAYS, wrapping: Saturday night's window on Sunday 01:00" 0 window n1 "WINDOW_NOW=Sun 01:00" WINDOW_DAYS=Sat WINDOW_START=22:00 WINDOW_END=02:00
decide "WINDOW_DAYS, wrapping: Saturday 01:00 is Friday night's" 75 window n1 "WINDOW_NOW=Sat 01:00" WINDOW_DAYS=Sat WINDOW_START=22:00 WINDOW_END=02:00
decide "the real clock, a window of the whole day" 0 window n1 WINDOW_START=00:00 WINDOW_END=24:00
now=$(date +%s)    # a window of now +- 1 h in UTC+12 (a POSIX TZ string: no tzdata needed)
ws=$(TZ=XYZ-12 date -d "@$((now - 3600))" +%H:%M) we=$(TZ=XYZ-12 date -d "@$((now + 3600))" +%H:%M)
decide "WINDOW_TZ: $ws-$we in UTC+12 is open now" 0 window n1 WINDOW_TZ=XYZ-12 WINDOW_START=$ws WINDOW_END=$we
decide "... the same times in UTC are not" 75 window n1 WINDOW_START=$ws WINDOW_END=$we
decide "a bad time is an SF failure" 1 window n1 WINDOW_START=25:00
decide "a bad day is an SF failure" 1 window n1 "WINDOW_NOW=Xyz 02:30"

section "healthy"
fleet n1 n2 n3 n4 operator
rm -f "$udb/nodes/operator/heartbeat"
decide "all fresh, none failed" 0 healthy n1
echo $(( $(date +%s) - 100 )) > "$udb/nodes/n3/heartbeat"
decide "a stale heartbeat waits" 75 healthy n1
says "... naming it" "older than 30s from n3" "$(runsf healthy n1)"
decide "HEALTHY_MAX_STALE=1 tolerates it" 0 healthy n1 HEALTHY_MAX_STALE=1
decide "HEALTHY_MAX_AGE=200 finds it fresh" 0 healthy n1 HEALTHY_MAX_AGE=200
decide "the node's own heartbeat does not count" 0 healthy n3
date +%s > "$udb/nodes/n3/heartbeat"
echo failed > "$udb/nodes/n2/state"
decide "HEALTHY_BUDGET=1 tolerates one failed node" 0 healthy n1 HEALTHY_BUDGET=1
[ ! -e "$udb/shared/healthy-counter-3.stopped" ] && pass || fail "healthy: stopped within the budget"
echo failed > "$udb/nodes/n4/state"
decide "two failed nodes exceed HEALTHY_BUDGET=1" 75 healthy n1 HEALTHY_BUDGET=1
says "... and the stop is recorded" "2 nodes failed \( n2 n4 \), budget 1" "$(cat "$udb/shared/healthy-counter-3.stopped" 2>&1)"
echo running > "$udb/nodes/n2/state"; echo running > "$udb/nodes/n4/state"
decide "stopped stays stopped when the nodes recover" 75 healthy n3 HEALTHY_BUDGET=1
says "... telling how to resume" "remove .*healthy-counter-3.stopped to resume" "$(runsf healthy n3)"
rm "$udb/shared/healthy-counter-3.stopped"
decide "the operator removed the stop: goes" 0 healthy n3
echo failed > "$udb/nodes/n4/state"
decide "one failed node exceeds the default budget 0" 75 healthy n3
decide "bad HEALTHY_BUDGET" 1 healthy n1 HEALTHY_BUDGET=x
rm -rf "$udb/nodes" "$udb/shared/healthy-counter-3.stopped"
decide "no fleet to read is an SF failure" 1 healthy n1

# ------------------------------------------------------ (c) on real mounts
# When UPGRADEFS_BIN names the upgradefs program (make examples-test passes it
# once built) and FUSE works: Tests/examples/mount.sh, the semaphore's real
# capacity and errnos and the SFs across nodes.
if [ -z "${UPGRADEFS_BIN:-}" ]; then
    if [ "${CI:-}" = true ]; then fail "real mounts: UPGRADEFS_BIN names no built upgradefs (CI=true requires the mount part)"
    else echo "== real mounts: skipped (UPGRADEFS_BIN does not name a built upgradefs)"; fi
elif ! "$UPGRADEFS_BIN" mount --help 2>&1 | grep -q -- --node-key; then
    echo "== real mounts: skipped (this upgradefs has no mount --node-key, no whiteboard)"
elif [ ! -c /dev/fuse ] || ! command -v fusermount3 > /dev/null; then
    if [ "${CI:-}" = true ]; then fail "real mounts: no /dev/fuse or fusermount3 (CI=true requires them)"
    else echo "== real mounts: skipped (no /dev/fuse or fusermount3)"; fi
else
    sh "$top/Tests/examples/mount.sh" || fail "real mounts: see the FAIL lines above"
fi

echo
echo "examples tests: $passes passed, $failures failed"
[ "$failures" -eq 0 ]
