#!/usr/bin/env bash
# WebSocket and SSE benchmark (docs/BENCHMARKS.md, issue 17): `keepwire
# bench --ws` echo against
#   keepwire-serve  `keepwire serve`'s /ws (no ticker: --events-per-s 0, so
#                   the socket only echoes), one thread
#   keepwire-ws     crates/keepwire/examples/ws_echo.rs (keepwire::ws alone,
#                   no demo site), one thread
#   node-ws         node's `ws` package (scripts/ws-echo.js), single-threaded
# in the same run, servers pinned to CPU 0, the loader to CPU 1 (one
# thread), REPS × DUR per row, targets interleaved; medians of messages/s,
# p50/p99 round trip and server CPU µs per message (user+sys of the server
# process ÷ echoes). Rows: CONNS connections × 1 message in flight each
# (closed loop), and 1 connection × 1 (the bare round trip).
# Then `keepwire bench --sse` against `keepwire serve`'s /events at
# EVENTS_PER_S with SSE_CONNS streams: events/s delivered, event latency
# p50/p99 (from the "t" stamped in each event), bytes per event.
#
#   bash scripts/bench-ws.sh
#   REPS=1 DUR=3 bash scripts/bench-ws.sh
#
# node `ws` is installed under target/node (as scripts/test does) if missing.
# A target whose probe fails (e.g. no /ws on this build) is reported as
# skipped, not fatal.
set -euo pipefail
cd "$(dirname "$0")/.."
REPS=${REPS:-3}
DUR=${DUR:-5}
CONNS=${CONNS:-50}
SSE_CONNS=${SSE_CONNS:-50}
EVENTS_PER_S=${EVENTS_PER_S:-200}
for t in node npm taskset python3; do
  command -v "$t" >/dev/null || { echo "bench-ws: $t missing" >&2; exit 2; }
done
if [ ! -f target/node/node_modules/ws/package.json ]; then
  npm install --prefix target/node --no-audit --no-fund --silent ws@8
fi
cargo build --release -p keepwire-cli --bin keepwire >/dev/null
cargo build --release -p keepwire --example ws_echo >/dev/null
KW=target/release/keepwire
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
TICK=$(getconf CLK_TCK)

P_SERVE=$(port); P_WS=$(port); P_NODE=$(port); P_SSE=$(port)
taskset -c 0 "$KW" serve --listen "127.0.0.1:$P_SERVE" --threads 1 --events-per-s 0 \
  2>"$work/serve.log" & pids+=($!); pid_serve=$!
taskset -c 0 target/release/examples/ws_echo --listen "127.0.0.1:$P_WS" --threads 1 \
  2>"$work/ws_echo.log" & pids+=($!); pid_ws=$!
taskset -c 0 node scripts/ws-echo.js "$P_NODE" 2>"$work/node.log" & pids+=($!); pid_node=$!
sleep 1

declare -A URL PID
URL[keepwire-serve]="ws://127.0.0.1:$P_SERVE/ws"; PID[keepwire-serve]=$pid_serve
URL[keepwire-ws]="ws://127.0.0.1:$P_WS/"; PID[keepwire-ws]=$pid_ws
URL[node-ws]="ws://127.0.0.1:$P_NODE/"; PID[node-ws]=$pid_node
targets=()
for t in keepwire-serve keepwire-ws node-ws; do
  if "$KW" bench --json --timeout 2s -c 1 -n 10 "${URL[$t]}" >/dev/null 2>"$work/probe-$t.err"; then
    targets+=("$t")
  else
    echo "bench-ws: skipping $t: $(tail -1 "$work/probe-$t.err")" >&2
  fi
done

results="$work/results.txt"
: > "$results"
for rep in $(seq 1 "$REPS"); do
  for row in "$CONNS" 1; do
    for t in "${targets[@]}"; do
      out="$work/$t-$row-$rep.json"
      c0=$(cpu "${PID[$t]}")
      taskset -c 1 "$KW" bench --json --no-progress -t 1 -c "$row" -d "${DUR}s" "${URL[$t]}" \
        > "$out" 2>"$out.err" || true
      c1=$(cpu "${PID[$t]}")
      echo "ws $t $row $((c1 - c0)) $out" >> "$results"
      sleep 0.5
    done
  done
done

# SSE: a fresh server with the ticker on (the echo rows above wanted none).
taskset -c 0 "$KW" serve --listen "127.0.0.1:$P_SSE" --threads 1 --events-per-s "$EVENTS_PER_S" \
  2>"$work/serve-sse.log" & pids+=($!); pid_sse=$!
sleep 1
if "$KW" bench --json --sse --timeout 3s -c 1 -n 2 "http://127.0.0.1:$P_SSE/events" >/dev/null 2>"$work/probe-sse.err"; then
  for rep in $(seq 1 "$REPS"); do
    out="$work/sse-$rep.json"
    c0=$(cpu "$pid_sse")
    taskset -c 1 "$KW" bench --json --no-progress --sse -t 1 -c "$SSE_CONNS" -d "${DUR}s" \
      "http://127.0.0.1:$P_SSE/events" > "$out" 2>"$out.err" || true
    c1=$(cpu "$pid_sse")
    echo "sse keepwire-serve $SSE_CONNS $((c1 - c0)) $out" >> "$results"
  done
else
  echo "bench-ws: skipping SSE: $(tail -1 "$work/probe-sse.err")" >&2
fi

python3 - "$results" "$TICK" "$EVENTS_PER_S" <<'PY'
import json, statistics, sys
tick = int(sys.argv[2])
rows = {}
for line in open(sys.argv[1]):
    kind, target, conns, ticks, out = line.split()
    try:
        d = json.load(open(out))
    except (OSError, ValueError):
        print(f"{kind} {target} c={conns}: no report ({open(out + '.err').read().strip()[-200:]})")
        continue
    done = max(d["responses"], 1)
    lat = d["latency"]
    rows.setdefault((kind, int(conns), target), []).append((
        d["requests_per_s"], int(ticks) / tick * 1e6 / done,
        lat.get("p50_us", 0), lat.get("p99_us", 0), d["error_total"],
        d.get("bytes_per_event", 0)))
def med(vals, i): return statistics.median(v[i] for v in vals)
print("| WebSocket echo | connections | messages/s (median, min–max) | server CPU µs/msg | p50 µs | p99 µs | errors |")
print("|---|---|---|---|---|---|---|")
for (kind, conns, target), vals in sorted(rows.items(), key=lambda kv: (kv[0][0], -kv[0][1])):
    if kind != "ws": continue
    r = [v[0] for v in vals]
    print(f"| {target} | {conns} | {med(vals,0):,.0f} ({min(r):,.0f}–{max(r):,.0f}) | {med(vals,1):.1f} | {med(vals,2):.0f} | {med(vals,3):.0f} | {sum(v[4] for v in vals)} |")
for (kind, conns, target), vals in rows.items():
    if kind != "sse": continue
    print()
    print(f"| SSE, {sys.argv[3]} events/s | streams | events/s delivered | server CPU µs/event | latency p50 µs | p99 µs | bytes/event | errors |")
    print("|---|---|---|---|---|---|---|---|")
    print(f"| {target} /events | {conns} | {med(vals,0):,.0f} | {med(vals,1):.1f} | {med(vals,2):.0f} | {med(vals,3):.0f} | {med(vals,5):.1f} | {sum(v[4] for v in vals)} |")
PY
