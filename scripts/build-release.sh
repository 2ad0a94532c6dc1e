#!/usr/bin/env bash
# The release build of the `gatehouse` binary, exactly as the container image makes it
# (Dockerfile) and CI proves it (.ci/run): one script for both, so neither can drift.
# Usage: scripts/build-release.sh [OUT_DIR]   (default: dist)
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-dist}"
# --locked: the image and CI build exactly Cargo.lock; no system protoc is needed (protox).
cargo build --release --locked -j "${CARGO_BUILD_JOBS:-2}" --bin gatehouse
install -D -m 0755 target/release/gatehouse "$out/gatehouse"
echo "built $out/gatehouse"
