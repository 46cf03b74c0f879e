#!/usr/bin/env bash
# Server benchmark: keepwire's hello example beside nginx and hyper, in one
# run of the shared peer harness (../shared/tools/peer-bench.sh), same
# pinning (server CPU 0, load CPU 1). Results: docs/BENCHMARKS.md.
#
#   bash scripts/bench-server.sh            # sections a b c d f, 3 × 10 s
#   SECTIONS="a d" REPS=1 bash scripts/bench-server.sh
#
# Run it on a quiet machine: anything else on the two cores skews CPU µs/req.
set -euo pipefail
cd "$(dirname "$0")/.."
harness=../shared/tools/peer-bench.sh
[ -f "$harness" ] || { echo "bench-server: $harness not found (needs shared/ beside the repo)" >&2; exit 2; }
cargo build --release -p keepwire --example hello
export PROJECT_NAME=keepwire
export PROJECT_SERVER_CMD="exec $PWD/target/release/examples/hello --listen 127.0.0.1:\$PORT --threads 1"
export SECTIONS=${SECTIONS:-"a b c d f"}
export HYPER_PF=${HYPER_PF:-1}
exec bash "$harness"
