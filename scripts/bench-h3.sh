#!/usr/bin/env bash
# HTTP/3 vs HTTP/2 benchmark (docs/BENCHMARKS.md, issue 19), in one run:
#   keepwire bench --http2 and --http3 (-c C, --pipeline M streams per
#   connection) against ONE keepwire serve (TLS 1.3 on TCP and QUIC on the
#   same port number, --threads 1, CPU 0), then --http3 against aioquic's
#   HTTP/3 server (Python, one process, CPU 0): the best independent HTTP/3
#   server installable here (nginx 1.22 has no QUIC). The loader runs on
#   CPU 1 with one thread. REPS x DUR each, interleaved.
# Reported per target: req/s median (min-max), p50/p99 (median of the
# runs' values), server CPU us/req (utime+stime of the server process over
# the run / responses) and loader CPU us/req, errors.
#
#   bash scripts/bench-h3.sh
#   REPS=1 DUR=5 C=4 M=4 bash scripts/bench-h3.sh
set -euo pipefail
cd "$(dirname "$0")/.."
REPS=${REPS:-3}
DUR=${DUR:-8}
C=${C:-10}
M=${M:-10}
for t in taskset python3 openssl; do
  command -v "$t" >/dev/null || { echo "bench-h3: $t missing" >&2; exit 2; }
done
python3 -c 'import aioquic' 2>/dev/null || { echo "bench-h3: pip install aioquic" >&2; exit 2; }
cargo build --release -p keepwire-cli >/dev/null
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
  -addext basicConstraints=critical,CA:FALSE \
  -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
P_KW=$(port)
taskset -c 0 target/release/keepwire serve --listen "127.0.0.1:$P_KW" --threads 1 \
  --respond "Hello, world!" --max-requests 0 \
  --tls-cert "$work/cert.pem" --tls-key "$work/key.pem" 2>"$work/serve.err" & pids+=($!)
taskset -c 0 python3 crates/keepwire/tests/support/aioquic_h3_server.py 0 \
  "$work/cert.pem" "$work/key.pem" >"$work/aq.out" 2>/dev/null & pids+=($!)
sleep 1.5
grep -q "HTTP/3 on udp" "$work/serve.err" || { echo "bench-h3: serve has no HTTP/3:" >&2; cat "$work/serve.err" >&2; exit 1; }
read -r P_AQ _ < "$work/aq.out"

python3 - "$work" "$REPS" "$DUR" "$C" "$M" "${pids[0]}" "$P_KW" "${pids[1]}" "$P_AQ" <<'PY'
import json, os, statistics, subprocess, sys
work, reps, dur, c, m = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
kw_pid, kw_port, aq_pid, aq_port = sys.argv[6], sys.argv[7], sys.argv[8], sys.argv[9]
tick = os.sysconf("SC_CLK_TCK")
def cpu(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / tick
targets = [
    ("keepwire serve, HTTP/2 over TLS", kw_pid, kw_port, "--http2"),
    ("keepwire serve, HTTP/3", kw_pid, kw_port, "--http3"),
    ("aioquic 1.x server, HTTP/3", aq_pid, aq_port, "--http3"),
]
rows = {t[0]: [] for t in targets}
for rep in range(reps):
    for name, pid, port, flag in targets:
        url = f"https://localhost:{port}/"
        cmd = ["taskset", "-c", "1", "target/release/keepwire", "bench", flag,
               "--cacert", f"{work}/cert.pem", "-c", c, "--pipeline", m, "--threads", "1",
               "-d", f"{dur}s", url, "--json"]
        c0 = cpu(pid)
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        out = p.stdout.read()
        _, status, ru = os.wait4(p.pid, 0)
        c1 = cpu(pid)
        d = json.loads(out)
        n = max(d["responses"], 1)
        rows[name].append(dict(
            rps=d["requests_per_s"], p50=d["latency"]["p50_us"], p99=d["latency"]["p99_us"],
            server=(c1 - c0) * 1e6 / n, loader=(ru.ru_utime + ru.ru_stime) * 1e6 / n,
            errors=d["error_total"], conns=d["connections"]))
        print(f"# rep {rep+1} {name}: {d['requests_per_s']:.0f} req/s", file=sys.stderr)
print(f"| target | req/s median (min–max) | p50 µs | p99 µs | server CPU µs/req | loader CPU µs/req | errors |")
print("|---|---|---|---|---|---|---|")
for name, runs in rows.items():
    med = lambda k: statistics.median(r[k] for r in runs)
    rps = [r["rps"] for r in runs]
    spread = (max(rps) - min(rps)) / med("rps") * 100 if med("rps") else 0
    noisy = " (noisy)" if spread > 10 else ""
    print(f"| {name} | {med('rps'):,.0f} ({min(rps):,.0f}–{max(rps):,.0f}){noisy} | "
          f"{med('p50'):.0f} | {med('p99'):.0f} | {med('server'):.2f} | {med('loader'):.2f} | "
          f"{sum(r['errors'] for r in runs)} |")
PY
