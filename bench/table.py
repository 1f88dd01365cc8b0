"""Turns bench/results/results.jsonl into the markdown table of docs/performance.md,
with palisade's server CPU per delivery as a ratio of Node ws's in the same run (fan-out
and light load) and, under light load, how much later its median delivery is."""
import json
import sys

rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]


def fmt(value, digits=2):
    return "–" if value is None else f"{value:.{digits}f}"


print("| server | scenario | load | deliveries/s | delivered % | p50 ms | p99 ms | p999 ms | server CPU µs/delivery | vs node-ws | note |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
COMPARED = ("fanout", "light-load")
node = {
    (r["scenario"], r["params"]): r
    for r in rows
    if r["server"] == "node-ws" and r["scenario"] in COMPARED
}
for r in rows:
    latency = r.get("latency_ms") or {}
    cost = r.get("server_cpu_us_per_delivery")
    peer = node.get((r["scenario"], r["params"]))
    ratio = None
    if peer and cost and peer.get("server_cpu_us_per_delivery"):
        ratio = cost / peer["server_cpu_us_per_delivery"]
    extra = r.get("extra") or {}
    notes = [f"{k} {v:.1f}" for k, v in extra.items()]
    if r["scenario"] == "light-load" and r is not peer and latency and peer and peer.get("latency_ms"):
        notes.append(f"p50 vs node-ws {latency['p50'] - peer['latency_ms']['p50']:+.2f} ms")
    note = ", ".join(notes)
    # big-room: "deliveries/s" is members joined per second; room-ingest: acks per second;
    # register: accounts created per second (and CPU µs per account, latency per request).
    per_second = "–" if r["scenario"] == "idle" else f"{r['per_second']:.0f}"
    delivered = "–" if r["scenario"] == "idle" else fmt(r["delivered_percent"])
    print(
        f"| {r['server']} | {r['scenario']} | {r['params']} | {per_second} | {delivered} "
        f"| {fmt(latency.get('p50'))} | {fmt(latency.get('p99'))} | {fmt(latency.get('p999'))} "
        f"| {fmt(cost)} | {fmt(ratio)}{'×' if ratio else ''} | {note} |"
    )
