#!/usr/bin/env bash
# Recompile the dependency locks from the direct dependencies in requirements/*.in:
#   scripts/lock.sh                  keep every locked version that still satisfies the .in files
#   scripts/lock.sh --upgrade        move every package to its newest allowed release
#   scripts/lock.sh --upgrade-package NAME[==VERSION]   (repeatable) move just those
# base.txt (runtime, what the image and scripts/run.sh install) is the complete closure of base.in;
# dev.txt is the complete closure of base.in + dev.in, constrained by base.txt so both agree.
# Both carry the sha256 of every file the registry serves for each pinned version: installs run
# with --require-hashes. The compiler is uv, itself pinned in dev.in; it ignores pip's config files,
# so a machine's extra local indexes can never leak other files' hashes into the lock.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${GATEWAY_VENV:-.venv}"
UV_VERSION="$(sed -n 's/^uv==\([^ ]*\).*/\1/p' requirements/dev.in)"
if [ "$("$VENV/bin/uv" --version 2>/dev/null | cut -d' ' -f2)" != "$UV_VERSION" ]; then
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check "uv==$UV_VERSION"
fi
# Resolved for what the image runs (CPython 3.11 on Linux), whichever machine runs this script.
compile() {
  "$VENV/bin/uv" pip compile --quiet --no-config --python-version 3.11 --python-platform linux --generate-hashes \
    --custom-compile-command scripts/lock.sh "$@"
}
compile "$@" requirements/base.in -o requirements/base.txt
compile "$@" requirements/dev.in -o requirements/dev.txt
echo "requirements/base.txt and requirements/dev.txt recompiled; run scripts/test.sh before committing them"
