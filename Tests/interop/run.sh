#!/usr/bin/env bash
# python-tuf (tuf==7.0.1, ngclient) as an independent client of `upgradefs serve`.
#
#   UPGRADEFS_BIN=/path/to/upgradefs Tests/interop/run.sh [pytest args...]
#
# Called by `make interop-test`.  Needs python3 with the venv module (the
# Makefile's `deps` installs python3-venv) and PyPI for the first run; the venv
# lives in .build/interop-venv and is reused while it holds the pinned versions.
# Exits with pytest's status (non-zero when a test fails).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
cd "$repo"

TUF_VERSION=7.0.1
venv="$repo/.build/interop-venv"

if [[ -z "${UPGRADEFS_BIN:-}" ]]; then
    UPGRADEFS_BIN="$(swift build --show-bin-path)/upgradefs"
fi
if [[ ! -x "$UPGRADEFS_BIN" ]]; then
    echo "interop: no executable upgradefs at $UPGRADEFS_BIN (build first, or set UPGRADEFS_BIN)" >&2
    exit 2
fi
export UPGRADEFS_BIN

venv_ok() {
    [[ -x "$venv/bin/python" ]] &&
        "$venv/bin/python" - "$TUF_VERSION" <<'EOF' 2>/dev/null
import sys
import pytest  # noqa: F401
import tuf
sys.exit(0 if tuf.__version__ == sys.argv[1] else 1)
EOF
}

if ! venv_ok; then
    echo "interop: creating $venv (tuf==$TUF_VERSION, pytest)"
    rm -rf "$venv"
    mkdir -p "$(dirname "$venv")"
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        "tuf==$TUF_VERSION" pytest
    venv_ok || { echo "interop: venv at $venv is unusable" >&2; exit 2; }
fi

echo "interop: $("$venv/bin/python" -c 'import tuf, pytest; print(f"tuf {tuf.__version__}, pytest {pytest.__version__}")'), upgradefs at $UPGRADEFS_BIN"

# -p no:cacheprovider: leave no .pytest_cache in the source tree.
# -rfE: list failures/errors in the short summary; the final "N passed" line is always printed.
status=0
PYTHONDONTWRITEBYTECODE=1 "$venv/bin/python" -m pytest \
    -p no:cacheprovider -v -rfE --tb=short \
    "$here/test_ngclient.py" "$@" || status=$?
if [[ $status -ne 0 ]]; then
    echo "interop: FAILED (pytest exit $status)" >&2
fi
exit "$status"
