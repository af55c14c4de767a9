#!/bin/sh
# make-bundle.sh — copy a bundle and give it one of the example scheduling
# functions, ready to drop into the server's publish directory.
#
#   examples/app/make-bundle.sh [-v VERSION] [-f FROM] SRC-BUNDLE SF OUT-DIR [NAME=VALUE...]
#
#   SRC-BUNDLE  e.g. examples/app/counter-v2
#   SF          a name from examples/sf/ (rolling, canary, …), a path to an
#               executable, or `none` for a bundle without SF (it goes at once)
#   OUT-DIR     the new bundle; must not exist yet
#   NAME=VALUE  settings baked into the copied SF as its new defaults (the
#               node's environment still overrides them), e.g. CANARY_NODES=n1
#   -v, -f      set version / from-version in the copy's upgrade.toml (the
#               server only takes versions above the latest it published)
#
# Example: the demo publishes version 2 rolling and version 3 behind canaries:
#   examples/app/make-bundle.sh examples/app/counter-v2 rolling /srv/publish/counter-v2
#   examples/app/make-bundle.sh examples/app/counter-v3 canary /srv/publish/counter-v3 CANARY_NODES=n1
set -eu
here=$(cd "$(dirname "$0")" && pwd)
usage() { echo "usage: make-bundle.sh [-v VERSION] [-f FROM] SRC-BUNDLE SF OUT-DIR [NAME=VALUE...]" >&2; exit 2; }
die() { echo "make-bundle.sh: $*" >&2; exit 1; }
version= from=
while getopts v:f: opt; do
    case $opt in
        v) version=$OPTARG ;;
        f) from=$OPTARG ;;
        *) usage ;;
    esac
done
shift $((OPTIND - 1))
[ $# -ge 3 ] || usage
src=$1 sf=$2 out=$3; shift 3

[ -f "$src/upgrade.toml" ] || die "$src is not a bundle (no upgrade.toml)"
[ ! -e "$out" ] || die "$out exists already"
case $sf in
    none) sffile= ;;
    */*) sffile=$sf ;;
    *) sffile=$here/../sf/$sf ;;
esac
if [ -n "$sffile" ] && ! { [ -f "$sffile" ] && [ -x "$sffile" ]; }; then
    die "no scheduling function $sf (the choices: $(ls "$here/../sf" | grep -v '\.md$' | tr '\n' ' '))"
fi
for setting in "$@"; do
    case $setting in
        [A-Z]*=*) case ${setting%%=*} in *[!A-Z0-9_]*) die "bad setting name in '$setting'" ;; esac ;;
        *) die "a setting is NAME=VALUE, not '$setting'" ;;
    esac
done
for n in "$version" "$from"; do
    case $n in *[!0-9]*) die "version numbers are decimal, not '$n'" ;; esac
done

cp -R "$src" "$out"
# where the manifest wants the SF: `sf = "…"`, or the default name sf
sfname=$(sed -n 's/^sf *= *"\(.*\)".*/\1/p' "$out/upgrade.toml")
sfname=${sfname:-sf}
rm -f "$out/$sfname"
if [ -n "$sffile" ]; then
    {
        head -n 1 "$sffile"
        if [ $# -gt 0 ]; then
            echo "# Settings baked in by make-bundle.sh (the environment still overrides them):"
            for setting in "$@"; do
                name=${setting%%=*} value=${setting#*=}
                quoted=$(printf '%s' "$value" | sed "s/'/'\\\\''/g")
                echo "[ -n \"\${$name:-}\" ] || $name='$quoted'"
            done
        fi
        tail -n +2 "$sffile"
    } > "$out/$sfname"
    chmod 755 "$out/$sfname"
fi
[ -z "$version" ] || sed -i "s/^version *=.*/version = $version/" "$out/upgrade.toml"
if [ -n "$from" ]; then
    if grep -q '^from-version' "$out/upgrade.toml"; then
        sed -i "s/^from-version *=.*/from-version = $from/" "$out/upgrade.toml"
    else
        sed -i "/^version *=/a from-version = $from" "$out/upgrade.toml"
    fi
fi
echo "$out: $(grep '^version' "$out/upgrade.toml"), sf: $sf${1:+ with $*}"
