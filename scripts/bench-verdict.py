#!/usr/bin/env python3
"""Issue 16's verdict table from one run of the shared harness.

    python3 scripts/bench-verdict.py /tmp/anchors-bench/results/<timestamp>

Reads the run's results.tsv (section, target, metric, rep, value), takes the
median over repetitions and prints "target | measured ratio | verdict" for
every line of issue 16 that the run measured. Ratios are within the run
only: the machine is noisy, so numbers from different runs are not
compared. Targets named in the run: keepwire's server as `keepwire-epoll`
(and `keepwire-uring` when scripts/bench-uring.sh measured it), its proxy as
`*-proxy`, the floors as `canned` and `canned-uring`.
"""

import csv
import statistics
import sys
from collections import defaultdict

POOL_CAP = 64  # scripts/bench-proxy.sh and bench-uring.sh: --pool-size 64


def load(path):
    values = defaultdict(list)
    with open(path, newline="") as f:
        for row in csv.reader(f, delimiter="\t"):
            if len(row) < 5:
                continue
            section, target, metric, _rep, value = row[:5]
            try:
                values[(section, target, metric)].append(float(value))
            except ValueError:
                pass
    return {k: (statistics.median(v), min(v), max(v)) for k, v in values.items()}


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: bench-verdict.py RESULTS_DIR")
    m = load(sys.argv[1].rstrip("/") + "/results.tsv")
    targets = {t for (_, t, _) in m}
    proxy = next((t for t in sorted(targets) if t.endswith("-proxy") and t.startswith("keepwire")), None)

    def med(section, target, metric):
        v = m.get((section, target, metric))
        return None if v is None else v[0]

    def spread(section, target, metric):
        v = m.get((section, target, metric))
        return "—" if v is None else f"{v[0]:g} ({v[1]:g}–{v[2]:g})"

    rows = []

    def ratio(label, section, ours, metric, theirs, limit, lower_is_better=True, theirs_metric=None):
        a, b = med(section, ours, metric), med(section, theirs, theirs_metric or metric)
        if a is None or b is None or b == 0:
            return
        r = a / b
        ok = r <= limit if lower_is_better else r >= limit
        sign = "≤" if lower_is_better else "≥"
        rows.append(
            (
                f"{label}: {ours} ÷ {theirs} {sign} {limit:g}",
                f"{r:.2f} ({spread(section, ours, metric)} vs {spread(section, theirs, theirs_metric or metric)})",
                "met" if ok else "NOT met",
            )
        )

    for kw in ("keepwire-epoll", "keepwire-uring"):
        if kw not in targets:
            continue
        ratio("keep-alive 13 B CPU µs/req", "a13", kw, "cpu_us_req", "nginx", 0.90 if kw.endswith("uring") else 1.0)
        floor = "canned-uring" if kw.endswith("uring") else "canned"
        ratio("keep-alive 13 B CPU µs/req, floor", "a13", kw, "cpu_us_req", floor, 1.05)
        ratio("keep-alive 13 B p50 ms", "a13", kw, "p50_ms", "nginx", 1.0)
        ratio("keep-alive 1 KiB CPU µs/req", "a1k", kw, "cpu_us_req", "hyper", 1.0)
        ratio("16-deep pipelining CPU µs/req", "d", kw, "cpu_us_req", "hyper-pipeline_flush", 1.0)
        ratio("new connection (wrk close) CPU µs/req", "b_wrk", kw, "cpu_us_req", "nginx", 1.0)
        ratio("new connection (ab) req/s", "b_ab", kw, "rps", "nginx", 1.0, lower_is_better=False)
        b = med("f", kw, "bytes_per_conn")
        if b is not None:
            rows.append(
                (f"idle keep-alive connection: {kw} ≤ 1,024 B", spread("f", kw, "bytes_per_conn") + " B",
                 "met" if b <= 1024 else "NOT met")
            )
    if proxy:
        ratio("reverse proxy CPU µs/req", "e", proxy, "cpu_us_req", "haproxy", 0.90)
        ratio("reverse proxy req/s ÷ direct", "e", proxy, "rps", "direct", 0.80, lower_is_better=False)
        ratio("reverse proxy p99 ms", "e", proxy, "p99_ms", "haproxy", 1.0)
        c = med("e", proxy, "connects")
        if c is not None:
            rows.append(
                (f"reverse proxy connects ≤ pool cap {POOL_CAP}", spread("e", proxy, "connects"),
                 "met" if c <= POOL_CAP else "see note (counts client and upstream connects)")
            )
    print("| target | measured ratio (medians; ours vs peer, median (min–max)) | verdict |")
    print("|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")


if __name__ == "__main__":
    main()
