#!/usr/bin/env bash
# HTTP/2 benchmark (docs/BENCHMARKS.md, issue 9): h2load -c10 -m10 against
# keepwire and nginx (`listen ... http2`), server on CPU 0 with one worker,
# h2load on CPU 1, REPS × DUR each, in one run.
#   TLS=0 (default): HTTP/2 with prior knowledge (h2c); keepwire's hello example.
#   TLS=1: HTTPS with ALPN h2, one self-signed ECDSA P-256 certificate (openssl)
#          for both; keepwire serve --respond (14-byte body: it adds a newline).
#   H1=1:  HTTP/1.1 over TLS instead (implies TLS=1): wrk -t1 -c10 --latency
#          (no ALPN, so HTTP/1.1), keep-alive, against the same two servers.
# Reported: req/s (median, min–max), server CPU µs/req, p50/p99 of request
# time from h2load's per-request log.
#
#   bash scripts/bench-h2.sh
#   REPS=1 DUR=5 bash scripts/bench-h2.sh
set -euo pipefail
cd "$(dirname "$0")/.."
REPS=${REPS:-3}
DUR=${DUR:-10}
TLS=${TLS:-0}
H1=${H1:-0}
[ "$H1" = 1 ] && TLS=1
for t in nginx h2load wrk taskset python3 openssl; do
  command -v "$t" >/dev/null || { echo "bench-h2: $t missing (nghttp2-client has h2load)" >&2; exit 2; }
done
cargo build --release -p keepwire --example hello -p keepwire-cli >/dev/null
work=$(mktemp -d)
chmod 755 "$work"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

P_NGX=$(port); P_KW=$(port)
mkdir -p "$work/tmp"
listen_extra=""; scheme=http
if [ "$TLS" = 1 ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj /CN=localhost -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null
  listen_extra="ssl"; scheme=https
fi
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
  keepalive_requests 1000000;
  http2_max_requests 1000000;
  client_body_temp_path $work/tmp;
  server {
    listen 127.0.0.1:$P_NGX $listen_extra http2;
    $( [ "$TLS" = 1 ] && echo "ssl_certificate $work/cert.pem; ssl_certificate_key $work/key.pem;" )
    location / { return 200 "Hello, world!"; }
  }
}
NGX
taskset -c 0 nginx -c "$work/nginx.conf" -p "$work/" 2>/dev/null & pids+=($!)
if [ "$TLS" = 1 ]; then
  taskset -c 0 target/release/keepwire serve --listen "127.0.0.1:$P_KW" --threads 1 --respond "Hello, world!" \
    --max-requests 0 --tls-cert "$work/cert.pem" --tls-key "$work/key.pem" 2>/dev/null & pids+=($!)
else
  taskset -c 0 target/release/examples/hello --listen "127.0.0.1:$P_KW" --threads 1 & pids+=($!)
fi
sleep 0.7
ngx_worker=$(pgrep -P "${pids[0]}" | head -1)
kw_pid=${pids[1]}
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
TICK=$(getconf CLK_TCK)

results="$work/results.txt"
: > "$results"
for rep in $(seq 1 "$REPS"); do
  for target in keepwire nginx; do
    if [ "$target" = keepwire ]; then p=$P_KW; pid=$kw_pid; else p=$P_NGX; pid=$ngx_worker; fi
    log="$work/$target-$rep.log"
    c0=$(cpu "$pid")
    if [ "$H1" = 1 ]; then
      taskset -c 1 wrk -t1 -c10 -d"${DUR}s" --latency "$scheme://127.0.0.1:$p/" > "$work/$target-$rep.out" 2>&1 || true
    else
      taskset -c 1 h2load -c10 -m10 -D "$DUR" --log-file="$log" "$scheme://127.0.0.1:$p/" > "$work/$target-$rep.out" 2>&1 || true
    fi
    c1=$(cpu "$pid")
    echo "$target $rep $((c1 - c0)) $work/$target-$rep.out $log" >> "$results"
    sleep 1
  done
done

python3 - "$results" "$TICK" "$H1" <<'PY'
import re, statistics, sys
tick = int(sys.argv[2])
h1 = sys.argv[3] == "1"
rows = {}
def wrk_us(text, q):
    m = re.search(rf"\s{q}%\s+([\d.]+)(us|ms|s)\b", text)
    return float(m.group(1)) * {"us": 1, "ms": 1e3, "s": 1e6}[m.group(2)]
for line in open(sys.argv[1]):
    target, rep, ticks, out, log = line.split()
    text = open(out).read()
    if h1:
        done = int(re.search(r"(\d+) requests in", text).group(1))
        m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
        bad = sum(int(g) for g in m.groups()) if m else 0
        m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
        bad += int(m.group(1)) if m else 0
        rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
        rows.setdefault(target, []).append((rps, int(ticks) / tick * 1e6 / max(done, 1), wrk_us(text, 50), wrk_us(text, 99), bad))
        continue
    done = int(re.search(r"(\d+) succeeded", text).group(1))
    failed = int(re.search(r"(\d+) failed", text).group(1))
    errored = int(re.search(r"(\d+) errored", text).group(1))
    rps = float(re.search(r"([\d.]+) req/s", text).group(1))
    # h2load --log-file: start time, status, request time in microseconds.
    times = sorted(int(l.split()[2]) for l in open(log) if len(l.split()) >= 3)
    p = lambda q: times[min(len(times) - 1, int(q * len(times)))] if times else 0
    rows.setdefault(target, []).append((rps, int(ticks) / tick * 1e6 / max(done, 1), p(0.5), p(0.99), failed + errored))
print("| server | req/s | server CPU µs/req | p50 µs | p99 µs | " + ("socket errors + non-2xx |" if h1 else "failed+errored |"))
print("|---|---|---|---|---|---|")
for target, vals in rows.items():
    cols = list(zip(*vals))
    med = [statistics.median(c) for c in cols]
    print(f"| {target} | {med[0]:,.0f} ({min(cols[0]):,.0f}–{max(cols[0]):,.0f}) | {med[1]:.2f} | {med[2]:.0f} | {med[3]:.0f} | {sum(cols[4])} |")
PY
