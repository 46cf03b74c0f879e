#!/usr/bin/env bash
# keepwire's server on epoll and on io_uring, beside nginx, hyper and the two
# canned floors (epoll: ../shared/tools/canned; io_uring: scripts/canned-uring),
# all in ONE run of the shared peer harness, so that every ratio between them
# is same-run. Results: docs/BENCHMARKS.md, "Issue 16, io_uring transport".
#
#   bash scripts/bench-uring.sh                    # sections a d b f, 3 × 10 s
#   SECTIONS="a" REPS=1 bash scripts/bench-uring.sh
#   CANNED=0 bash scripts/bench-uring.sh           # without the floors
#   PEER_BENCH=/elsewhere/peer-bench.sh bash scripts/bench-uring.sh
#
# The shared harness takes one project server. Rather than keep a copy of it
# here, this script makes a patched copy in $WORK that also starts the servers
# listed in EXTRA_SERVERS ("name|command" lines, $PORT expanded by bash -c) on
# ports 18100+ and measures them like the project server in sections a-d and f.
set -euo pipefail
cd "$(dirname "$0")/.."
harness=${PEER_BENCH:-../shared/tools/peer-bench.sh}
shared_tools=$(cd "$(dirname "$harness")" 2>/dev/null && pwd || true)
[ -f "$harness" ] || { echo "bench-uring: $harness not found (needs shared/ beside the repo)" >&2; exit 2; }
cargo build --release -p keepwire --example hello
hello="$PWD/target/release/examples/hello --listen 127.0.0.1:\$PORT --threads 1"
extra="keepwire-uring|exec $hello --io uring"
if [ "${CANNED:-1}" = 1 ]; then
  CARGO_TARGET_DIR="$PWD/target/canned" cargo build --release --manifest-path "$shared_tools/canned/Cargo.toml"
  CARGO_TARGET_DIR="$PWD/target/canned-uring" cargo build --release --manifest-path scripts/canned-uring/Cargo.toml
  extra+=$'\n'"canned|exec $PWD/target/canned/release/canned \$PORT"
  extra+=$'\n'"canned-uring|CANNED_URING_MODE=defer exec $PWD/target/canned-uring/release/canned-uring \$PORT"
fi
export WORK=${WORK:-/tmp/anchors-bench}
mkdir -p "$WORK"
patched="$WORK/peer-bench-extra.sh"
python3 - "$harness" "$patched" <<'PY'
import sys
src, dst = sys.argv[1], sys.argv[2]
s = open(src).read()
def after(anchor, text):
    global s
    assert s.count(anchor) == 1, f"harness changed: {anchor!r}"
    s = s.replace(anchor, anchor + text)
after("P_IDLE=18095       # fresh server instances for section f\n", r'''
# (bench-uring.sh) extra servers, measured like the project server
declare -a XNAMES XCMDS
while IFS='|' read -r n c; do [[ -n "$n" ]] && XNAMES+=("$n") && XCMDS+=("$c"); done <<< "${EXTRA_SERVERS:-}"
start_extra_server() { # index port cpu
  local PROJECT_NAME=${XNAMES[$1]} PROJECT_SERVER_CMD=${XCMDS[$1]}
  start_project_server "$2" "$3"
}
''')
after('TARGETS=(nginx hyper); [[ -n "$PROJECT_SERVER_CMD" ]] && TARGETS+=("$PROJECT_NAME")\n', r'''if want a || want b || want c || want d; then
  for i in "${!XNAMES[@]}"; do
    start_extra_server "$i" $((18100 + i)) "$SERVER_CPU"
    SPID[${XNAMES[$i]}]=$LAST_PID; SPORT[${XNAMES[$i]}]=$((18100 + i)); TARGETS+=("${XNAMES[$i]}")
  done
fi
''')
after('      project) start_project_server "$P_IDLE" "$SERVER_CPU" ;;\n',
      '      extra) start_extra_server "$XI" "$P_IDLE" "$SERVER_CPU" ;;\n')
after('  [[ -n "$PROJECT_SERVER_CMD" ]] && idle_series "$PROJECT_NAME" project\n',
      '  for XI in "${!XNAMES[@]}"; do [[ ${XNAMES[$XI]} == canned* ]] || idle_series "${XNAMES[$XI]}" extra; done\n')
open(dst, "w").write(s)
PY
export PROJECT_NAME=keepwire-epoll
export PROJECT_SERVER_CMD="exec $hello --io epoll"
export EXTRA_SERVERS="$extra"
export SECTIONS=${SECTIONS:-"a d b f"}
export HYPER_PF=${HYPER_PF:-1}
exec bash "$patched"
