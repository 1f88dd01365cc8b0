#!/usr/bin/env bash
# palisade in cluster mode (PostgreSQL + Redis) against single-node SQLite: what a
# delivery and an acked message cost when the work is spread over 1, 2 and 3 nodes.
#
# - fan-out: 1000 subscribers in one room, 4 publishers, 100 msg/s, the clients spread
#   evenly over the nodes (connection i goes to node i mod n);
# - one room's acked ingest: 32 publishers in ONE room, 8 sends in flight each, on 1 and
#   2 nodes.
#
# Everything on the server side runs on core 0: the nodes and, for the length of the
# bench, the machine's PostgreSQL and Redis (their affinity is put back at the end); the
# load generator runs on core 1. CPU per message counts the nodes *and* PostgreSQL and
# Redis (by process name), so a cluster is charged for what it costs the machine.
# Needs PostgreSQL at 127.0.0.1:5432 (user postgres, trust) and Redis at 127.0.0.1:6379.
# Each run gets a fresh database (dropped after) and a Redis prefix of its own. Talks
# only to 127.0.0.1 and stops by itself. Table to stdout and bench/results/cluster.md.
set -euo pipefail
cd "$(dirname "$0")/.."
ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)"

DURATION=${DURATION:-10}
SECRET=bench-secret-0123456789abcdef0123456789abcdef
PG=postgres://postgres@127.0.0.1:5432
RESULTS=bench/results
mkdir -p "$RESULTS"
JSON=$RESULTS/cluster.jsonl
: > "$JSON"
WORK=$(mktemp -d)
NODE_PIDS=()
DATABASE=""
SERVICE_PIDS=$(pgrep -d ' ' -x 'postgres|redis-server' || true)

cleanup() {
    stop_nodes
    drop_database
    # Back on every core, as before the bench.
    for pid in $(pgrep -x 'postgres|redis-server' || true); do
        taskset -acp "0-$(($(nproc) - 1))" "$pid" >/dev/null 2>&1 || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT

echo "== building (release)" >&2
cargo build --release -q -p palisade -p loadgen
psql -h 127.0.0.1 -U postgres -qAt -c 'select 1' >/dev/null
redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null

# PostgreSQL's backends fork from the postmaster and inherit its affinity.
for pid in $SERVICE_PIDS; do taskset -acp 0 "$pid" >/dev/null; done

. bench/lib.sh

drop_database() {
    [ -n "$DATABASE" ] && psql -h 127.0.0.1 -U postgres -qAt \
        -c "DROP DATABASE IF EXISTS $DATABASE WITH (FORCE)" >/dev/null 2>&1
    DATABASE=""
}

stop_nodes() {
    for pid in "${NODE_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${NODE_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    NODE_PIDS=()
}

# Starts `count` nodes on ports 9100… with `store` (sqlite: one node, its own file;
# postgres: a fresh database and a Redis prefix shared by the nodes).
nodes() { # store count
    local store=$1 count=$2 run=$RANDOM$RANDOM
    local database_url extra=()
    if [ "$store" = sqlite ]; then
        database_url="sqlite://$WORK/palisade-$run.db"
    else
        DATABASE=palisade_bench_$run
        psql -h 127.0.0.1 -U postgres -qAt -c "CREATE DATABASE $DATABASE" >/dev/null
        database_url="$PG/$DATABASE"
        extra=(--redis-url redis://127.0.0.1:6379 --redis-prefix "palisade-bench-$run")
    fi
    URLS="" PIDS=""
    for i in $(seq 0 $((count - 1))); do
        local port=$((9100 + i))
        env PALISADE_JWT_SECRET=$SECRET RUST_LOG=warn taskset -c 0 target/release/palisade \
            --listen "127.0.0.1:$port" --database-url "$database_url" "${extra[@]}" \
            --messages-per-sec 1000000 --message-burst 1000000 --outbound-queue 4096 \
            --outbound-queue-bytes 4194304 --max-connections-per-ip 100000 \
            --max-connections-per-user 100000 --max-connections 100000 \
            --max-pending-connections-per-ip 100000 --max-pending-connections 100000 \
            >"$WORK/node-$i.log" 2>&1 &
        NODE_PIDS+=($!)
        wait_for_port "$port"
        URLS="${URLS:+$URLS,}ws://127.0.0.1:$port/ws"
        PIDS="${PIDS:+$PIDS,}$!"
    done
}

loadgen() { # name scenario args...
    local name=$1
    shift
    PALISADE_JWT_SECRET=$SECRET taskset -c 1 target/release/loadgen \
        --url "$URLS" --protocol palisade --name "$name" --server-pid "$PIDS" \
        --services postgres,redis-server --json "$JSON" "$@" >/dev/null
}

run() { # store count scenario args...
    local store=$1 count=$2
    shift 2
    nodes "$store" "$count"
    loadgen "$store ×$count" "$@"
    stop_nodes
    drop_database
}

for setup in "sqlite 1" "postgres 1" "postgres 2" "postgres 3"; do
    # shellcheck disable=SC2086
    run $setup fanout --subscribers 1000 --rate 100 --duration "$DURATION"
done
for setup in "sqlite 1" "postgres 1" "postgres 2"; do
    # shellcheck disable=SC2086
    run $setup room-ingest --publishers 32 --rate 0 --window 8 --duration "$DURATION"
done

python3 bench/cluster_table.py "$JSON" | tee "$RESULTS/cluster.md"
