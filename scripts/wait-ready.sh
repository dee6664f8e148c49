#!/usr/bin/env bash
# Wait until the gateway answers 200 on /health/ready: the step between starting it in the background
# and the first request (the README's "Try it"). A fresh clone's first scripts/run.sh installs for a
# minute or two before it serves, so a bare `scripts/run.sh & curl ...` would hit a closed port.
#   scripts/wait-ready.sh [--pid PID] [URL]
# URL defaults to http://127.0.0.1:${PORT:-4000}. With --pid (e.g. `$!` after `scripts/run.sh &`) it
# gives up as soon as that process has exited instead of waiting out the timeout. WAIT_READY_TIMEOUT
# seconds (default 300). Exit 0 when ready, 1 otherwise, with the reason on stderr.
set -euo pipefail
pid=""
if [ "${1:-}" = "--pid" ]; then pid="$2"; shift 2; fi
url="${1:-http://127.0.0.1:${PORT:-4000}}"
exec python3 - "$url/health/ready" "$pid" "${WAIT_READY_TIMEOUT:-300}" <<'PY'
import os
import sys
import time
import urllib.error
import urllib.request

url, pid, timeout = sys.argv[1], sys.argv[2], float(sys.argv[3])
deadline = time.monotonic() + timeout
while True:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 (a loopback URL we were given)
            if response.status == 200:
                sys.exit(0)
    except (urllib.error.URLError, OSError):
        pass  # not listening yet, or not ready (503)
    if pid:
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            sys.exit(f"wait-ready: process {pid} exited before {url} answered; see its output above")
    if time.monotonic() >= deadline:
        sys.exit(f"wait-ready: {url} did not answer 200 within {timeout:.0f} s")
    time.sleep(0.5)
PY
