#!/usr/bin/env bash
# Reverse-proxy benchmark: keepwire proxy beside nginx (keepalive 32 and 64)
# and HAProxy in front of the same nginx origin, in one run of the shared
# harness (section e: proxy on CPU 0; origin nginx + wrk -c50 on CPU 1).
# Results: docs/BENCHMARKS.md. Run it on a quiet machine.
set -euo pipefail
cd "$(dirname "$0")/.."
# PEER_BENCH: the harness elsewhere (a git worktree has no ../shared).
harness=${PEER_BENCH:-../shared/tools/peer-bench.sh}
[ -f "$harness" ] || { echo "bench-proxy: $harness not found (needs shared/ beside the repo)" >&2; exit 2; }
cargo build --release -p keepwire-cli
export PROJECT_NAME=keepwire
export PROJECT_PROXY_CMD="exec $PWD/target/release/keepwire proxy --listen 127.0.0.1:\$PORT --upstream http://\$UPSTREAM --threads 1 --pool-size ${POOL_SIZE:-64}"
export SECTIONS=${SECTIONS:-e}
exec bash "$harness"
