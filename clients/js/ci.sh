#!/usr/bin/env bash
# Checks gatehouse-client (clients/js): install from the lock file, typecheck, build, unit
# tests (fetch mock, React in happy-dom), and the end-to-end tests against the real gatehouse
# binary and the example FastAPI app (Node, and headless Chromium).
#
#   GATEHOUSE_BIN     the server binary   (default ../../target/debug/gatehouse)
#   GATEHOUSE_PYTHON  a Python with the gatehouse package, fastapi and uvicorn
#                     (default ../python/.venv/bin/python, made by clients/python/ci.sh)
#   CHROMIUM_PATH     default /usr/bin/chromium (Debian's `chromium`); without it the
#                     Chromium test is skipped, except under CI=true, where it fails.
# Extra arguments go to every vitest run (e.g. -t "sign-up").
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

GATEHOUSE_BIN="$(realpath -m "${GATEHOUSE_BIN:-../../target/debug/gatehouse}")"
GATEHOUSE_PYTHON="$(realpath -m -s "${GATEHOUSE_PYTHON:-../python/.venv/bin/python}")"
export GATEHOUSE_BIN GATEHOUSE_PYTHON

if [[ ! -x "$GATEHOUSE_BIN" ]]; then
  echo "clients/js/ci.sh: no gatehouse binary at $GATEHOUSE_BIN." >&2
  echo "  Build it with 'cargo build' at the repository root, or set GATEHOUSE_BIN." >&2
  exit 1
fi
if [[ ! -x "$GATEHOUSE_PYTHON" ]] || ! "$GATEHOUSE_PYTHON" -c "import gatehouse.fastapi, uvicorn" 2>/dev/null; then
  echo "clients/js/ci.sh: $GATEHOUSE_PYTHON cannot import gatehouse.fastapi and uvicorn." >&2
  echo "  Run clients/python/ci.sh (it makes the venv), or set GATEHOUSE_PYTHON." >&2
  exit 1
fi
if [[ "${CI:-}" == "true" && ! -x "${CHROMIUM_PATH:-/usr/bin/chromium}" ]]; then
  echo "clients/js/ci.sh: CI=true and no Chromium at ${CHROMIUM_PATH:-/usr/bin/chromium}:" >&2
  echo "  apt-get install -y chromium (or set CHROMIUM_PATH)." >&2
  exit 1
fi

reports="$(mktemp -d)"
trap 'rm -rf "$reports"' EXIT

set -x
npm ci --no-audit --no-fund
npx tsc -p tsconfig.json --noEmit
npm run build
npx tsc -p tsconfig.test.json --noEmit
npx vitest run --dir test/unit --reporter=default --reporter=json --outputFile.json="$reports/unit.json" "$@"
npx vitest run --dir test/e2e --reporter=default --reporter=json --outputFile.json="$reports/e2e.json" "$@"
set +x

node -e '
  let passed = 0, failed = 0, skipped = 0;
  for (const file of process.argv.slice(1)) {
    const r = JSON.parse(require("fs").readFileSync(file, "utf8"));
    passed += r.numPassedTests; failed += r.numFailedTests; skipped += r.numPendingTests + r.numTodoTests;
  }
  console.log(`gatehouse-client: ${passed} passed, ${failed} failed, ${skipped} skipped`);
' "$reports/unit.json" "$reports/e2e.json"
