#!/usr/bin/env bash
# Interleaved A/B of two keepwire proxy binaries, same origin, same pinning as
# peer-bench section e (proxy CPU0; nginx origin + wrk CPU1). Reports proxy
# CPU µs/request (utime+stime of the proxy process / requests) per run.
# Usage: ROUNDS=5 DUR=10 bash scripts/bench-proxy-ab.sh OLD_BINARY NEW_BINARY
# Run scripts/bench-proxy.sh once first: this reuses the nginx origin
# config the harness writes under /tmp/anchors-bench.
set -u
[ $# -eq 2 ] || { echo "usage: $0 OLD_BINARY NEW_BINARY" >&2; exit 2; }
conf=/tmp/anchors-bench/run/nginx-origin-e
[ -f $conf/nginx.conf ] || { echo "$0: $conf/nginx.conf missing: run scripts/bench-proxy.sh first" >&2; exit 2; }
A=$1; B=$2; ROUNDS=${ROUNDS:-3}; DUR=${DUR:-10}
CLK=$(getconf CLK_TCK)
setsid taskset -c 1 nginx -c /tmp/anchors-bench/run/nginx-origin-e/nginx.conf -p /tmp/anchors-bench/run/nginx-origin-e/ -e /tmp/anchors-bench/run/nginx-origin-e/logs/error.log > /dev/null 2>&1 &
NG=$!
sleep 1
ticks() { awk '{print $14+$15}' /proc/$1/stat; }
one() { # label bin
  setsid taskset -c 0 $2 proxy --listen 127.0.0.1:18192 --upstream http://127.0.0.1:18083 --threads 1 --pool-size 64 > /dev/null 2>&1 &
  local px=$!; sleep 0.7
  taskset -c 1 wrk -t1 -c50 -d2s http://127.0.0.1:18192/ > /dev/null 2>&1
  local c0; c0=$(ticks $px)
  local out; out=$(taskset -c 1 wrk -t1 -c50 -d${DUR}s --latency http://127.0.0.1:18192/ 2>&1)
  local c1; c1=$(ticks $px)
  local reqs; reqs=$(awk '/ requests in /{print $1}' <<<"$out")
  local rps; rps=$(awk '/^Requests\/sec:/{print $2}' <<<"$out")
  local p99; p99=$(awk '/Latency Distribution/{d=1} d && $1=="99%"{print $2; exit}' <<<"$out")
  awk -v l=$1 -v d=$((c1-c0)) -v h=$CLK -v r=$reqs -v rps=$rps -v p=$p99 'BEGIN{printf "%s\tcpu_us_req=%.2f\trps=%s\tp99=%s\n", l, d/h*1e6/r, rps, p}'
  kill -TERM -- -$px 2>/dev/null; sleep 0.5; kill -0 $px 2>/dev/null && kill -KILL -- -$px 2>/dev/null
  wait $px 2>/dev/null
}
for r in $(seq 1 $ROUNDS); do one before $A; one after $B; done
kill -TERM -- -$NG 2>/dev/null; wait $NG 2>/dev/null
