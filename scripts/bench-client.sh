#!/usr/bin/env bash
# Client benchmarks (docs/BENCHMARKS.md):
#  1. `keepwire get --page` of the demo site (1 HTML + 30 objects) with each
#     strategy, against `keepwire serve` and nginx serving the same files:
#     wall time and connections opened.
#  2. 10,000 sequential GETs: keepwire's pooled client vs reqwest
#     (bench/client-seq, a bench-only crate), same server, same run.
# Server on CPU 0, client on CPU 1. Everything on 127.0.0.1; every process
# started here is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v nginx >/dev/null || { apt-get update -qq && apt-get install -y -qq nginx >/dev/null; }
cargo build --release -p keepwire-cli -p keepwire --example hello >/dev/null
(cd bench/client-seq && cargo build --release >/dev/null)
KW=$PWD/target/release/keepwire
work=$(mktemp -d)
chmod 755 "$work"  # nginx workers run as nobody
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# The demo site as files, so nginx serves the very same bytes.
P_KW=$(port); P_NGX=$(port)
taskset -c 0 "$KW" serve --listen 127.0.0.1:$P_KW --objects 30 --threads 1 2>/dev/null & pids+=($!)
sleep 0.5
mkdir -p "$work/root/obj"
curl -s "http://127.0.0.1:$P_KW/" > "$work/root/index.html"
for i in $(seq 0 29); do
  case $((i % 3)) in 0) ext=png;; 1) ext=css;; 2) ext=js;; esac
  curl -s "http://127.0.0.1:$P_KW/obj/$i.$ext" > "$work/root/obj/$i.$ext"
done
cat > "$work/nginx.conf" <<NGX
worker_processes 1;
daemon off;
pid $work/nginx.pid;
error_log $work/error.log;
events { worker_connections 1024; }
http {
  access_log off;
  keepalive_requests 10000;
  types { text/html html; image/png png; text/css css; text/javascript js; }
  server { listen 127.0.0.1:$P_NGX; root $work/root; }
}
NGX
taskset -c 0 nginx -c "$work/nginx.conf" & pids+=($!)
sleep 0.5

echo "## page load: 1 HTML + 30 objects (median of 5 runs)"
echo "| server | strategy | connections | wall ms (median) | min–max |"
echo "|---|---|---|---|---|"
for target in "keepwire:$P_KW" "nginx:$P_NGX"; do
  name=${target%%:*}; p=${target#*:}
  for s in "serial 1" "parallel 6" "persistent 1" "persistent 6" "pipelined 1" "pipelined 6"; do
    set -- $s
    walls=(); conns=
    for r in 1 2 3 4 5; do
      out=$(taskset -c 1 "$KW" get --page --strategy "$1" --connections "$2" --json "http://127.0.0.1:$p/")
      walls+=($(echo "$out" | python3 -c 'import json,sys; d=json.load(sys.stdin)["summary"]; print(d["wall_ms"])'))
      conns=$(echo "$out" | python3 -c 'import json,sys; d=json.load(sys.stdin)["summary"]; print(d["connections_opened"])')
    done
    python3 - "$name" "$1 $2" "$conns" "${walls[@]}" <<'PY'
import sys, statistics
name, strat, conns, *w = sys.argv[1:]
w = [float(x) for x in w]
print(f"| {name} | {strat} | {conns} | {statistics.median(w):.2f} | {min(w):.2f}–{max(w):.2f} |")
PY
  done
done

echo
echo "## 10,000 sequential GETs (hello server on CPU 0, client on CPU 1)"
P_H=$(port)
taskset -c 0 target/release/examples/hello --listen 127.0.0.1:$P_H --threads 1 & pids+=($!)
sleep 0.3
taskset -c 1 bench/client-seq/target/release/client-seq "http://127.0.0.1:$P_H/" 10000
