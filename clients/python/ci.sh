#!/usr/bin/env bash
# CI for the Python client and the FastAPI integration: generated code up to date, types, then the
# pytest suite against the real gatehouse binary (SQLite, and PostgreSQL when
# TEST_POSTGRES_URL is set; CI=true makes a missing TEST_POSTGRES_URL a failure).
# Run from anywhere; .ci/run calls it from the repository root.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
venv="$here/.venv"
cd "$repo"

step() { printf '\n--> %s\n' "$*"; }

step "virtualenv ($venv)"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e "$here[fastapi,dev]"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check build twine

step "generated code up to date (stubs from proto/, asyncio clients from the sync ones)"
"$venv/bin/python" "$here/generate.py" --check

step "mypy (strict)"
(cd "$here" && "$venv/bin/python" -m mypy)

step "sdist and wheel (python -m build), twine check, the wheel holds _proto and py.typed"
dist="$(mktemp -d)"
"$venv/bin/python" -m build --outdir "$dist" "$here"
"$venv/bin/python" -m twine check --strict "$dist"/*
listing="$("$venv/bin/python" -m zipfile -l "$dist"/*.whl)"
for member in gatehouse/py.typed gatehouse/_proto/gatehouse/v1/auth_pb2.py \
  gatehouse/_proto/gatehouse/v1/auth_pb2.pyi gatehouse/_proto/gatehouse/v1/factor_pb2.py \
  gatehouse/_proto/gatehouse/v1/factor_pb2_grpc.py gatehouse/testing.py; do
  grep -q "^$member " <<<"$listing" || { echo "wheel lacks $member" >&2; exit 1; }
done
rm -rf "$dist" "$here/build"

step "build gatehouse"
cargo build -j2 --bin gatehouse

step "pytest"
export PATH="$venv/bin:$PATH"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
set +e
(cd "$here" && python -m pytest -q -p no:cacheprovider "$@") 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
summary="$(grep -E '^(=+ )?[0-9]+ (passed|failed|error)|no tests ran' "$log" | tail -n1 || true)"
echo "pytest summary: ${summary:-<none>}"
exit "$status"
