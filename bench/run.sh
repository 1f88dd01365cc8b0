#!/usr/bin/env bash
# palisade's benchmark: every scenario on palisade and its peers (a bare Node `ws`
# broadcast server and a bare axum broadcast server, the floor of what Rust can do).
# Each server is pinned to core 0 and the load generator to core 1; the table goes to
# stdout (and bench/results/table.md), raw results to bench/results/results.jsonl.
# Talks only to 127.0.0.1 and stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)"

DURATION=${DURATION:-10}
IDLE_CONNECTIONS=${IDLE_CONNECTIONS:-10000}
SECRET=bench-secret-0123456789abcdef0123456789abcdef
RESULTS=bench/results
mkdir -p "$RESULTS"
JSON=$RESULTS/results.jsonl
: > "$JSON"
WORK=$(mktemp -d)
SERVER_PID=""
cleanup() { [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT

echo "== building (release)" >&2
cargo build --release -q -p palisade -p loadgen -p axum-floor
(cd bench/node-ws && npm ci --no-audit --no-fund --silent)

. bench/lib.sh

start() { # name port command...
    local name=$1 port=$2
    shift 2
    taskset -c 0 "$@" >"$WORK/$name.log" 2>&1 &
    SERVER_PID=$!
    wait_for_port "$port"
}

stop() {
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
}

loadgen() { # name protocol port scenario args...
    local name=$1 protocol=$2 port=$3
    shift 3
    PALISADE_JWT_SECRET=$SECRET taskset -c 1 target/release/loadgen \
        --url "ws://127.0.0.1:$port/ws" --protocol "$protocol" --name "$name" \
        --server-pid "$SERVER_PID" --json "$JSON" "$@" >/dev/null
}

palisade() { # database-name extra-flags...
    local db=$1
    shift
    start palisade 9000 env PALISADE_JWT_SECRET=$SECRET RUST_LOG=warn target/release/palisade \
        --listen 127.0.0.1:9000 --database-url "sqlite://$WORK/palisade-$db.db" \
        --messages-per-sec 1000000 --message-burst 1000000 --outbound-queue 4096 --outbound-queue-bytes 4194304 \
        --max-connections-per-ip 100000 --max-connections-per-user 100000 --max-connections 100000 \
        --max-pending-connections-per-ip 100000 --max-pending-connections 100000 "$@"
}

# How cost grows with the number of subscribers (palisade and Node; 200 msg/s).
for subscribers in 250 500; do
    palisade "subs-$subscribers"
    loadgen palisade palisade 9000 fanout --subscribers "$subscribers" --rate 200 --duration "$DURATION"
    stop
    start node-ws 9002 node bench/node-ws/server.js 127.0.0.1:9002
    loadgen node-ws raw 9002 fanout --subscribers "$subscribers" --rate 200 --duration "$DURATION"
    stop
done

# How cost grows with the message rate (all three servers; 1000 subscribers; 50 msg/s is
# the issue #11 row: CPU per delivery where neither server is saturated).
for rate in 50 100 200 300; do
    palisade "fanout-$rate"
    loadgen palisade palisade 9000 fanout --subscribers 1000 --rate "$rate" --duration "$DURATION"
    stop
    start node-ws 9002 node bench/node-ws/server.js 127.0.0.1:9002
    loadgen node-ws raw 9002 fanout --subscribers 1000 --rate "$rate" --duration "$DURATION"
    stop
    start axum-floor 9001 target/release/axum-floor 127.0.0.1:9001
    loadgen axum-floor raw 9001 fanout --subscribers 1000 --rate "$rate" --duration "$DURATION"
    stop
done

for rooms in 50 200; do
    palisade "rooms-$rooms"
    loadgen palisade palisade 9000 rooms --rooms "$rooms" --members 5 --rate 1000 --duration "$DURATION"
    stop
done

palisade ingest
loadgen palisade palisade 9000 ingest --connections 16 --window 32 --duration "$DURATION"
stop

# ONE room, 32 publishers: acked durable msg/s, open loop at fixed rates, then closed loop.
for rate in ${ROOM_INGEST_RATES:-1000 2000 5000 0}; do
    palisade "room-ingest-$rate"
    loadgen palisade palisade 9000 room-ingest --publishers 32 --rate "$rate" --window 8 --duration "$DURATION"
    stop
done

palisade idle
loadgen palisade palisade 9000 idle --connections "$IDLE_CONNECTIONS"
stop
start node-ws 9002 node bench/node-ws/server.js 127.0.0.1:9002
loadgen node-ws raw 9002 idle --connections "$IDLE_CONNECTIONS"
stop
start axum-floor 9001 target/release/axum-floor 127.0.0.1:9001
loadgen axum-floor raw 9001 idle --connections "$IDLE_CONNECTIONS"
stop

# Joining one big room: the time per member should not grow with the room.
for members in ${BIG_ROOM_MEMBERS:-1000 5000 10000}; do
    palisade "big-room-$members"
    loadgen palisade palisade 9000 big-room --members "$members"
    stop
done

# Light load: one room of 100 members at a low rate, sends at random times (Poisson) and,
# at 50 msg/s, on an even schedule too: delivery latency on a mostly idle server, palisade
# against Node ws. Longer runs than the fan-out's: few messages a second.
for load in ${LIGHT_LOADS:-20:poisson 50:poisson 50:even}; do
    rate=${load%:*} arrivals=${load#*:}
    palisade "light-$rate-$arrivals"
    loadgen palisade palisade 9000 light-load --members 100 --rate "$rate" --arrivals "$arrivals" \
        --duration "${LIGHT_DURATION:-30}"
    stop
    start node-ws 9002 node bench/node-ws/server.js 127.0.0.1:9002
    loadgen node-ws raw 9002 light-load --members 100 --rate "$rate" --arrivals "$arrivals" \
        --duration "${LIGHT_DURATION:-30}"
    stop
done

# Memory after registering 2000 accounts (an Argon2id hash each), and after 10 s idle. The
# register limits (10 a minute per address, 600 for the server) are raised like the others.
palisade register --auth-per-minute 1000000 --auth-burst 1000000 \
    --auth-global-per-minute 1000000 --auth-global-burst 1000000
loadgen palisade palisade 9000 register --accounts "${ACCOUNTS:-2000}" --concurrency 2 --idle 10
stop

python3 bench/table.py "$JSON" | tee "$RESULTS/table.md"

# The chart needs matplotlib: installed into a virtualenv of the bench's own.
if [ ! -x bench/.venv/bin/python ]; then
    python3 -m venv bench/.venv
    bench/.venv/bin/pip install -q --disable-pip-version-check "matplotlib==3.11.2"
fi
bench/.venv/bin/python bench/chart.py "$JSON" "$RESULTS/cost.png"
