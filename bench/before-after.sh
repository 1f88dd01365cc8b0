#!/usr/bin/env bash
# Two palisade binaries side by side on the fan-out scenario (1000 subscribers, 200 msg/s,
# server on core 0, load generator on core 1), alternating, two rounds each: a quick check
# that a change did not cost the hot path. Talks only to 127.0.0.1 and stops by itself.
#   bash bench/before-after.sh OLD_BINARY NEW_BINARY
# NEW_FLAGS adds flags the new binary needs (ones the old one would refuse).
set -euo pipefail
cd "$(dirname "$0")/.."
ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)"
OLD=$1 NEW=$2
SECRET=bench-secret-0123456789abcdef0123456789abcdef
JSON=$(mktemp)
COMMON=(--messages-per-sec 1000000 --message-burst 1000000 --outbound-queue 4096
    --max-connections-per-ip 100000 --max-connections-per-user 100000 --max-connections 100000)
cargo build --release -q -p loadgen

run() { # name binary extra-flags...
    local name=$1 bin=$2 dir
    shift 2
    dir=$(mktemp -d)
    PALISADE_JWT_SECRET=$SECRET RUST_LOG=warn taskset -c 0 "$bin" --listen 127.0.0.1:9000 \
        --database-url "sqlite://$dir/p.db" "${COMMON[@]}" "$@" >"$dir/log" 2>&1 &
    local pid=$!
    for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/9000) 2>/dev/null && break; sleep 0.1; done
    PALISADE_JWT_SECRET=$SECRET taskset -c 1 target/release/loadgen --url ws://127.0.0.1:9000/ws \
        --protocol palisade --name "$name" --server-pid "$pid" --json "$JSON" \
        fanout --subscribers 1000 --rate "${RATE:-200}" --duration "${DURATION:-10}" >/dev/null
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    rm -rf "$dir"
}

for _ in 1 2; do
    run before "$OLD"
    # shellcheck disable=SC2086
    run after "$NEW" ${NEW_FLAGS:-}
done
python3 bench/table.py "$JSON"
rm -f "$JSON"
