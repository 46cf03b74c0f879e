#!/usr/bin/env bash
# Load-generator benchmark (docs/BENCHMARKS.md, issues 7 and 16): keepwire
# bench vs wrk, wrk2 and oha driving the same nginx (1 worker, pinned to
# CPU 0), each loader pinned to CPU 1 with one thread, REPS × DUR each,
# loaders interleaved, in one run:
#   a. closed loop, -c50 keep-alive (keepwire, wrk, oha)
#   b. 16-deep pipelining, -c50 (wrk with the shared harness's pipeline
#      script: 16 requests per write)
#   c. open loop at RATE req/s (keepwire --rate, wrk2 -R, oha -q with
#      latency correction), so latency is compared at the same offered load
#   d. the same at RATE2 req/s (a higher rate, about half of the maximum)
# Reported per loader: req/s, loader CPU µs per request (user+sys of the
# loader process ÷ responses), nginx CPU µs per request, p50/p90/p99.
#
#   bash scripts/bench-loadgen.sh
#   REPS=1 DUR=5 SECTIONS="a b" bash scripts/bench-loadgen.sh
#   KW_BASE=/tmp/keepwire-before bash scripts/bench-loadgen.sh   # before/after
#
# oha and wrk2 are optional: set OHA / WRK2 to their binaries or put them
# on PATH as `oha` / `wrk2` (oha: `cargo install oha --locked`; wrk2 has
# no Debian package: build it from its source with `make`). wrk2 spends
# its first 10 s + 5 ms per connection calibrating and then discards that
# histogram, so its rows run DUR + 11 s and measure the last DUR. KW=path
# uses that keepwire binary instead of building one; KW_BASE adds a second
# keepwire binary as the row `keepwire-base`. Run on a quiet machine.
set -euo pipefail
cd "$(dirname "$0")/.."
REPS=${REPS:-3}
DUR=${DUR:-10}
RATE=${RATE:-20000}
RATE2=${RATE2:-50000}
SECTIONS=${SECTIONS:-a b c d}
OHA=${OHA:-$(command -v oha || true)}
WRK2=${WRK2:-$(command -v wrk2 || true)}
KW_BASE=${KW_BASE:-}
for t in nginx wrk taskset python3; do
  command -v "$t" >/dev/null || { echo "bench-loadgen: $t missing" >&2; exit 2; }
done
if [ -z "${KW:-}" ]; then
  cargo build --release -p keepwire-cli >/dev/null
  KW=$PWD/target/release/keepwire
fi
work=$(mktemp -d)
chmod 755 "$work"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

P=$(port)
mkdir -p "$work/tmp"
cat > "$work/nginx.conf" <<NGX
worker_processes 1;
daemon off;
master_process on;
pid $work/nginx.pid;
error_log $work/error.log warn;
events { worker_connections 10240; }
http {
  access_log off;
  default_type text/plain;
  tcp_nodelay on;
  keepalive_timeout 65s;
  keepalive_requests 1000000;
  client_body_temp_path $work/tmp;
  server { listen 127.0.0.1:$P backlog=4096; location / { return 200 "Hello, world!"; } }
}
NGX
taskset -c 0 nginx -c "$work/nginx.conf" -p "$work/" & pids+=($!)
sleep 0.5
worker=$(pgrep -P "${pids[0]}" | head -1)
URL="http://127.0.0.1:$P/"
curl -sf "$URL" >/dev/null || { echo "nginx did not start: $(cat "$work/error.log")" >&2; exit 1; }

cat > "$work/pipeline.lua" <<'LUA'
init = function(args)
  local r = {}
  for i = 1, 16 do r[i] = wrk.format() end
  req = table.concat(r)
end
request = function() return req end
LUA

cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }   # utime + stime, ticks
TICK=$(getconf CLK_TCK)

# run NAME OUTFILE CMD...: runs the loader on CPU 1; prints "ticks_loader ticks_nginx"
run() {
  local out=$2; shift 2
  local n0; n0=$(cpu "$worker")
  ( taskset -c 1 "$@" > "$out" 2>&1; times ) > "$out.times" 2>&1
  local n1; n1=$(cpu "$worker")
  # `times` prints the subshell's own and its children's user/sys times.
  local lt; lt=$(tail -1 "$out.times" | python3 -c '
import sys, re
f = sys.stdin.read().split()
s = lambda t: int(t.split("m")[0]) * 60 + float(t.split("m")[1].rstrip("s"))
print(s(f[0]) + s(f[1]))')
  echo "$lt $(( n1 - n0 ))"
}

results="$work/results.txt"
: > "$results"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg); $(nproc) CPUs; $(uname -r)" >&2
for rep in $(seq 1 "$REPS"); do
  for section in $SECTIONS; do
    case $section in c) R=$RATE;; d) R=$RATE2;; *) R=;; esac
    for loader in keepwire keepwire-base wrk wrk2 oha; do
      out="$work/$section-$loader-$rep.out"
      kw=$KW
      if [ "$loader" = keepwire-base ]; then [ -n "$KW_BASE" ] || continue; kw=$KW_BASE; fi
      case "$section/$loader" in
        a/keepwire*) r=$(run "$loader" "$out" "$kw" bench -t1 -c50 -d"${DUR}s" --json --no-progress "$URL");;
        a/wrk)       r=$(run "$loader" "$out" wrk -t1 -c50 -d"${DUR}s" --latency "$URL");;
        a/oha)       [ -n "$OHA" ] || continue
                     r=$(run "$loader" "$out" "$OHA" -c50 -z"${DUR}s" --no-tui --output-format json "$URL");;
        b/keepwire*) r=$(run "$loader" "$out" "$kw" bench -t1 -c50 -d"${DUR}s" --pipeline 16 --json --no-progress "$URL");;
        b/wrk)       r=$(run "$loader" "$out" wrk -t1 -c50 -d"${DUR}s" --latency -s "$work/pipeline.lua" "$URL");;
        [cd]/keepwire*) r=$(run "$loader" "$out" "$kw" bench -t1 -c50 -d"${DUR}s" --rate "$R" --json --no-progress "$URL");;
        [cd]/wrk2)   [ -n "$WRK2" ] || continue
                     r=$(run "$loader" "$out" "$WRK2" -t1 -c50 -d"$((DUR + 11))s" -R"$R" --latency "$URL");;
        [cd]/oha)    [ -n "$OHA" ] || continue
                     r=$(run "$loader" "$out" "$OHA" -c50 -z"${DUR}s" -q "$R" --latency-correction --no-tui --output-format json "$URL");;
        *) continue;;  # wrk holds no rate (wrk2 does); wrk2 runs only at a rate; oha does not pipeline
      esac
      echo "$section $loader $rep $r $out" >> "$results"
      sleep 1
    done
  done
done

echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
python3 - "$results" "$TICK" "$RATE" "$RATE2" <<'PY'
import json, re, statistics, sys
rows = {}
per_rep = {}
tick = int(sys.argv[2])
def us(v, unit):
    return v * {"us": 1, "ms": 1000, "s": 1e6}[unit]
for line in open(sys.argv[1]):
    section, loader, rep, loader_cpu, nginx_ticks, out = line.split()
    text = open(out).read()
    if loader.startswith("keepwire"):
        d = json.loads(text[text.index("{"):])
        reqs, secs = d["responses"], d["elapsed_s"]
        p = [d["latency"][k] for k in ("p50_us", "p90_us", "p99_us")]
    elif loader in ("wrk", "wrk2"):
        reqs = int(re.search(r"(\d+) requests in", text).group(1))
        # wrk counts responses, also when its script pipelines 16 requests.
        secs = float(re.search(r"requests in ([\d.]+)s", text).group(1))
        p = []
        for q in ("50", "90", "99"):
            # wrk: "  50%  361.00us"; wrk2 (HdrHistogram): " 50.000%  1.23ms"
            m = re.search(rf"^\s*{q}(?:\.000)?%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
            p.append(us(float(m.group(1)), m.group(2)))
    else:
        d = json.loads(text[text.index("{"):])
        s = d["summary"]
        reqs = round(s["requestsPerSec"] * s["total"])
        secs = s["total"]
        lp = d["latencyPercentiles"]
        p = [lp[k] * 1e6 for k in ("p50", "p90", "p99")]
    per_rep.setdefault((section, rep), {})[loader] = reqs / secs
    rows.setdefault((section, loader), []).append((
        reqs / secs,
        float(loader_cpu) * 1e6 / reqs,
        int(nginx_ticks) / tick * 1e6 / reqs,
        *p,
    ))
names = {"a": "closed loop -c50", "b": "pipeline 16 -c50",
         "c": f"open loop, {sys.argv[3]} req/s -c50", "d": f"open loop, {sys.argv[4]} req/s -c50"}
print("| test | loader | req/s | loader CPU µs/req | nginx CPU µs/req | p50 µs | p90 µs | p99 µs |")
print("|---|---|---|---|---|---|---|---|")
for (section, loader), vals in sorted(rows.items()):
    cols = list(zip(*vals))
    med = [statistics.median(c) for c in cols]
    lo_hi = lambda i, f: f"{min(cols[i]):{f}}–{max(cols[i]):{f}}"
    print(f"| {names[section]} | {loader} | {med[0]:,.0f} ({lo_hi(0, ',.0f')}) | {med[1]:.2f} ({lo_hi(1, '.2f')}) "
          f"| {med[2]:.2f} | {med[3]:.0f} ({lo_hi(3, '.0f')}) | {med[4]:.0f} ({lo_hi(4, '.0f')}) "
          f"| {med[5]:.0f} ({lo_hi(5, '.0f')}) |")
# Interleaved reps share the machine's state, so the ratio within a rep
# is steadier than the ratio of medians on a noisy machine.
for section in sorted({k[0] for k in per_rep}):
    for peer in ("wrk", "wrk2", "oha", "keepwire-base"):
        ratios = [d["keepwire"] / d[peer] for (sec, _), d in sorted(per_rep.items())
                  if sec == section and "keepwire" in d and peer in d]
        if ratios:
            print(f"{names[section]}: keepwire ÷ {peer} req/s per rep: "
                  + ", ".join(f"{r:.2f}" for r in ratios)
                  + f" (median {statistics.median(ratios):.2f})")
PY
