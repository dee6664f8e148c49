#!/usr/bin/env bash
# Known vulnerabilities in the runtime lock (requirements/base.txt), from the package registry's
# advisory data, with pip-audit (pinned in requirements/dev.in). It reports and never fails a build:
# findings print as a report, an advisory source that is unreachable, slow or has no data for the
# locked versions prints one "skipped" line, and the exit status is 0 either way. The hashed, fully
# pinned lock is audited as written (no resolver, no temporary venv), so a run takes seconds.
#   scripts/audit.sh   (AUDIT_TIMEOUT seconds in all, default 120)
set -uo pipefail
cd "$(dirname "$0")/.."
VENV="${GATEWAY_VENV:-.venv}"
if [ ! -x "$VENV/bin/pip-audit" ]; then
  echo "dependency audit: skipped (pip-audit is not installed in $VENV; scripts/test.sh installs it)"
  exit 0
fi
report="$(mktemp)"
trap 'rm -f "$report"' EXIT
# Exit status 1 means "vulnerabilities found" as well as "could not audit": the JSON report tells which.
timeout "${AUDIT_TIMEOUT:-120}" "$VENV/bin/pip-audit" --progress-spinner off --timeout 20 \
  --disable-pip --require-hashes -r requirements/base.txt -f json -o "$report" >"$report.log" 2>&1
status=$?
if [ $status -eq 124 ]; then
  echo "dependency audit: skipped (no answer from the advisory source within ${AUDIT_TIMEOUT:-120} s)"
elif [ ! -s "$report" ]; then
  echo "dependency audit: skipped (advisory source unavailable: $(tail -n 1 "$report.log"))"
else
  "$VENV/bin/python" - "$report" <<'PY'
import json
import sys

deps = json.load(open(sys.argv[1]))["dependencies"]
audited = [d for d in deps if "skip_reason" not in d]
if not audited:
    print(f"dependency audit: skipped (the advisory source has no data for any of the {len(deps)} locked packages)")
    sys.exit(0)
found = [(d, v) for d in audited for v in d.get("vulns", [])]
unaudited = len(deps) - len(audited)
tail = f"; {unaudited} not audited (no advisory data)" if unaudited else ""
print(f"dependency audit: {len(audited)} locked packages audited, {len(found)} known vulnerabilities{tail}")
for dep, vuln in found:
    fixes = ", ".join(vuln.get("fix_versions") or []) or "none yet"
    print(f"  {dep['name']}=={dep['version']}: {vuln['id']} (fixed in: {fixes})")
if found:
    print("  upgrade with: scripts/lock.sh --upgrade-package NAME, then scripts/test.sh")
PY
fi
rm -f "$report.log"
exit 0
