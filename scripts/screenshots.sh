#!/usr/bin/env bash
# Regenerates the README's pictures from real runs, with headless Chromium:
#   docs/img/lab-report.png  the lab report of a short run (page-load only;
#                            as root over network namespaces, else over the
#                            loopback relay and labelled approximate)
#   docs/img/waterfall.png   `keepwire get --page --waterfall` against
#                            `keepwire serve` on loopback
# Usage: bash scripts/screenshots.sh   (PROFILE=release for a release build)
# Needs chromium (scripts/test installs it). Starts one `keepwire serve`,
# killed by its PID on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

profile="${PROFILE:-debug}"
if [ "$profile" = release ]; then
  cargo build -q --release -p keepwire-cli
else
  cargo build -q -p keepwire-cli
fi
bin="$PWD/target/$profile/keepwire"
chromium="$(command -v chromium || command -v chromium-browser || true)"
[ -n "$chromium" ] || { echo "screenshots.sh: chromium not found (apt-get install chromium)" >&2; exit 1; }

tmp="$(mktemp -d)"
serve_pid=""
cleanup() {
  [ -n "$serve_pid" ] && kill "$serve_pid" 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT

# shot HTML PNG WIDTH HEIGHT
shot() {
  "$chromium" --headless --no-sandbox --disable-gpu --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --hide-scrollbars --force-device-scale-factor=1 \
    --user-data-dir="$tmp/profile-$RANDOM" \
    --screenshot="$2" --window-size="$3,$4" "file://$1" >/dev/null 2>&1
  [ -s "$2" ] || { echo "screenshots.sh: no screenshot of $1" >&2; exit 1; }
  echo "screenshots.sh: wrote $2" >&2
}

mkdir -p docs/img

# The lab report: the page-load experiment, every strategy on one time axis.
"$bin" lab --quick --report "$tmp/lab.html" page-load >&2
shot "$tmp/lab.html" docs/img/lab-report.png 1040 2540

# A waterfall: the demo page from `keepwire serve`, loaded as a browser would.
"$bin" serve --listen 127.0.0.1:0 --threads 1 2>"$tmp/serve.log" >/dev/null &
serve_pid=$!
addr=""
for _ in $(seq 50); do
  addr="$(sed -n 's|.*listening on http://\([^/]*\)/.*|\1|p' "$tmp/serve.log" | head -1)"
  [ -n "$addr" ] && break
  sleep 0.1
done
[ -n "$addr" ] || { echo "screenshots.sh: keepwire serve printed no address" >&2; exit 1; }
"$bin" get --page --waterfall "$tmp/waterfall.html" "http://$addr/" >&2
shot "$tmp/waterfall.html" docs/img/waterfall.png 1280 600
