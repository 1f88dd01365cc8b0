"""Turns bench/results/cluster.jsonl into the cluster table of docs/performance.md: per
setup, the CPU per delivery (fan-out) or per acked message (room ingest) of the nodes, of
PostgreSQL and Redis, and of both, as a ratio of single-node SQLite's in the same run."""
import json
import sys

rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]


def fmt(value, digits=2):
    return "–" if value is None else f"{value:.{digits}f}"


print("| setup | scenario | load | msgs/s | delivered % | p50 ms | p99 ms | nodes µs/msg | PostgreSQL+Redis µs/msg | total µs/msg | total vs SQLite ×1 |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
baseline = {}
for r in rows:
    nodes = r.get("server_cpu_us_per_delivery")
    services = (r.get("extra") or {}).get("services cpu µs/msg")
    total = None if nodes is None else nodes + (services or 0.0)
    if r["server"] == "sqlite ×1":
        baseline[r["scenario"]] = total
    base = baseline.get(r["scenario"])
    ratio = total / base if total and base else None
    latency = r.get("latency_ms") or {}
    print(
        f"| {r['server']} | {r['scenario']} | {r['params']} | {r['per_second']:.0f} "
        f"| {fmt(r['delivered_percent'])} | {fmt(latency.get('p50'))} | {fmt(latency.get('p99'))} "
        f"| {fmt(nodes)} | {fmt(services)} | {fmt(total)} | {fmt(ratio)}{'×' if ratio else ''} |"
    )
