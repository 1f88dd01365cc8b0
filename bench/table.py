"""Turns bench/results/results.jsonl into the markdown table of docs/performance.md,
with palisade's server CPU per delivery as a ratio of Node ws's in the same run."""
import json
import sys

rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]


def fmt(value, digits=2):
    return "–" if value is None else f"{value:.{digits}f}"


print("| server | scenario | load | deliveries/s | delivered % | p50 ms | p99 ms | p999 ms | server CPU µs/delivery | vs node-ws | note |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
node_cost = {
    r["params"]: r["server_cpu_us_per_delivery"]
    for r in rows
    if r["server"] == "node-ws" and r["scenario"] == "fanout"
}
for r in rows:
    latency = r.get("latency_ms") or {}
    cost = r.get("server_cpu_us_per_delivery")
    ratio = None
    if r["scenario"] == "fanout" and cost and node_cost.get(r["params"]):
        ratio = cost / node_cost[r["params"]]
    extra = r.get("extra") or {}
    note = ", ".join(f"{k} {v:.1f}" for k, v in extra.items())
    # big-room: "deliveries/s" is members joined per second; room-ingest: acks per second.
    per_second = "–" if r["scenario"] == "idle" else f"{r['per_second']:.0f}"
    delivered = "–" if r["scenario"] == "idle" else fmt(r["delivered_percent"])
    print(
        f"| {r['server']} | {r['scenario']} | {r['params']} | {per_second} | {delivered} "
        f"| {fmt(latency.get('p50'))} | {fmt(latency.get('p99'))} | {fmt(latency.get('p999'))} "
        f"| {fmt(cost)} | {fmt(ratio)}{'×' if ratio else ''} | {note} |"
    )
