"""Draws bench/results/cost.png from results.jsonl: server CPU per delivery against the
message rate (1000 subscribers) and against the number of subscribers (200 msg/s), and
the cost of a delivery in many small rooms."""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
out = sys.argv[2]


def fanout(server):
    points = []
    for r in rows:
        if r["server"] == server and r["scenario"] == "fanout" and r["server_cpu_us_per_delivery"]:
            subs, rate = r["params"].replace(" subs", "").replace(" msg/s", "").split(", ")
            points.append((int(subs), int(rate), r["server_cpu_us_per_delivery"]))
    return points


fig, (by_rate, by_subs) = plt.subplots(1, 2, figsize=(11, 4.2))
for server, style in [("palisade", "o-"), ("node-ws", "s--"), ("axum-floor", "^:")]:
    points = fanout(server)
    rate_points = sorted((rate, cost) for subs, rate, cost in points if subs == 1000)
    subs_points = sorted((subs, cost) for subs, rate, cost in points if rate == 200)
    if rate_points:
        by_rate.plot(*zip(*rate_points), style, label=server)
    if subs_points:
        by_subs.plot(*zip(*subs_points), style, label=server)
by_rate.set(title="1000 subscribers", xlabel="messages/s (deliveries/s ÷ 1000)",
            ylabel="server CPU µs per delivery", ylim=(0, None))
by_subs.set(title="200 messages/s", xlabel="subscribers in the room",
            ylabel="server CPU µs per delivery", ylim=(0, None))
for axis in (by_rate, by_subs):
    axis.grid(alpha=0.3)
    axis.legend()
fig.suptitle("Cost of a delivery (lower is better; server pinned to one core)")
fig.tight_layout()
fig.savefig(out, dpi=110)
print(f"chart written to {out}", file=sys.stderr)
