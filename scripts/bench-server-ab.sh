#!/usr/bin/env bash
# Interleaved A/B of server binaries (the hello example, or a peer), same
# pinning as peer-bench (server CPU0, load CPU1). Reports server CPU
# µs/request (utime+stime of the server process / requests), req/s and
# wrk's p50/p99 per run; on a noisy machine only the ratios of neighbouring
# runs count.
#
#   MODE=ka ROUNDS=3 DUR=5 bash scripts/bench-server-ab.sh A_BINARY B_BINARY [C ...]
#
# MODE: ka (keep-alive 13 B), 1k (keep-alive 1 KiB), pipe (16-deep
# pipelining, the harness's pipeline.lua), close (wrk with
# `Connection: close`), ab (ab -c50 without -k).
# A binary is run as `BIN --listen 127.0.0.1:PORT --threads 1`, unless it
# names hyper-hello (the harness's hyper peer: `BIN PORT`; HYPER_PF=1 in
# its environment for pipeline_flush) or canned (`BIN PORT`).
set -u
[ $# -ge 2 ] || { echo "usage: $0 BINARY BINARY [BINARY...]" >&2; exit 2; }
MODE=${MODE:-ka}; ROUNDS=${ROUNDS:-3}; DUR=${DUR:-5}; PORT=${PORT:-18290}
CLK=$(getconf CLK_TCK)
LUA=${LUA:-/tmp/anchors-bench/run/pipeline.lua}
ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
one() { # bin
  local bin=$1 srv
  case $bin in
    *hyper-hello*) setsid taskset -c 0 env HYPER_PIPELINE_FLUSH="${HYPER_PF:-0}" "$bin" "$PORT" > /dev/null 2>&1 & ;;
    *canned*) setsid taskset -c 0 "$bin" "$PORT" > /dev/null 2>&1 & ;;
    *) setsid taskset -c 0 "$bin" --listen "127.0.0.1:$PORT" --threads 1 > /dev/null 2>&1 & ;;
  esac
  srv=$!
  sleep 0.5
  local url=http://127.0.0.1:$PORT/ args=()
  case $MODE in
    1k) url=${url}1k ;;
    pipe) args=(-s "$LUA") ;;
    close) args=(-H "Connection: close") ;;
  esac
  local c0 c1 out reqs
  if [ "$MODE" = ab ]; then
    taskset -c 1 ab -q -n 2000 -c 50 "$url" > /dev/null 2>&1
    c0=$(ticks $srv)
    out=$(taskset -c 1 ab -q -n "${AB_N:-20000}" -c 50 "$url" 2>&1)
    c1=$(ticks $srv)
    reqs=$(awk '/^Complete requests:/{print $3}' <<<"$out")
    local rps; rps=$(awk '/^Requests per second:/{print $4}' <<<"$out")
    awk -v l="$bin" -v d=$((c1-c0)) -v h="$CLK" -v r="$reqs" -v rps="$rps" \
      'BEGIN{printf "%-40s cpu_us_req=%.2f rps=%s\n", l, d/h*1e6/r, rps}'
  else
    taskset -c 1 wrk -t1 -c50 -d1s "${args[@]}" "$url" > /dev/null 2>&1
    c0=$(ticks $srv)
    out=$(taskset -c 1 wrk -t1 -c50 -d"${DUR}"s --latency "${args[@]}" "$url" 2>&1)
    c1=$(ticks $srv)
    reqs=$(awk '/ requests in /{print $1}' <<<"$out")
    local rps p50 p99
    rps=$(awk '/^Requests\/sec:/{print $2}' <<<"$out")
    p50=$(awk '/Latency Distribution/{d=1} d && $1=="50%"{print $2; exit}' <<<"$out")
    p99=$(awk '/Latency Distribution/{d=1} d && $1=="99%"{print $2; exit}' <<<"$out")
    awk -v l="$bin" -v d=$((c1-c0)) -v h="$CLK" -v r="$reqs" -v rps="$rps" -v p50="$p50" -v p99="$p99" \
      'BEGIN{printf "%-40s cpu_us_req=%.2f rps=%s p50=%s p99=%s\n", l, d/h*1e6/r, rps, p50, p99}'
  fi
  kill -TERM -- -$srv 2>/dev/null; sleep 0.3; kill -0 $srv 2>/dev/null && kill -KILL -- -$srv 2>/dev/null
  wait $srv 2>/dev/null
}
echo "MODE=$MODE DUR=$DUR load: $(cut -d' ' -f1-3 /proc/loadavg)"
for _ in $(seq 1 "$ROUNDS"); do
  for b in "$@"; do one "$b"; done
done
