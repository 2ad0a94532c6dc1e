#!/usr/bin/env bash
# Starts a built `gatehouse` on a fresh SQLite file, waits until `gatehouse health` (the
# container's HEALTHCHECK) says SERVING, then sends SIGTERM and expects a clean exit. The
# Dockerfile runs it on the binary it ships; .ci/run runs it too.
# Usage: scripts/smoke-release.sh [BINARY]   (default: dist/gatehouse)
set -euo pipefail
bin="$(realpath "${1:-dist/gatehouse}")"
work="$(mktemp -d)"
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT
port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
grpc="$(port)"
http="$(port)"
GATEHOUSE_LISTEN="127.0.0.1:$grpc" GATEHOUSE_HTTP_LISTEN="127.0.0.1:$http" \
  GATEHOUSE_DATA_DIR="$work" DATABASE_URL="sqlite://$work/gatehouse.db?mode=rwc" RUST_LOG=warn \
  "$bin" > "$work/log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do
  if "$bin" health --addr "http://127.0.0.1:$grpc" --timeout 1s 2>/dev/null; then
    echo "smoke: $bin is SERVING on 127.0.0.1:$grpc"
    kill -TERM "$pid"
    if wait "$pid"; then
      echo "smoke: stopped cleanly on SIGTERM"
      exit 0
    fi
    echo "smoke: exited with an error after SIGTERM" >&2
    cat "$work/log" >&2
    exit 1
  fi
  if ! kill -0 "$pid" 2>/dev/null; then break; fi
  sleep 0.2
done
echo "smoke: $bin never became SERVING" >&2
cat "$work/log" >&2
exit 1
