#!/usr/bin/env bash
# The release binary's size and start-up time, as docs/performance.md reports them.
#
# Start-up is timed from exec to the first `GET /healthz` answered 200 (the listener is
# bound, the store open and migrated, the accept loop running), in a scratch directory:
# "fresh" starts each run on an empty ./data (development mode then also creates its
# JWT secret and the SQLite database), "existing" on the ./data a previous run left.
# Five runs each, and their median. The port is polled every 2 ms, which bounds the
# resolution.
#
#   nice -n 10 cargo build --release --bin palisade
#   bash scripts/startup-time.sh [path/to/palisade] [port]
set -euo pipefail

binary=$(realpath "${1:-target/release/palisade}")
port=${2:-18765}
runs=5

if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "port $port is in use: pass another as the second argument" >&2
    exit 1
fi

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
cd "$scratch"

size=$(stat -c %s "$binary")
strip -o stripped "$binary"
stripped=$(stat -c %s stripped)
rm stripped

# Milliseconds from exec to the first 200 from /healthz.
startup_ms() {
    local start=$EPOCHREALTIME
    "$binary" --listen "127.0.0.1:$port" >>server.log 2>&1 &
    local pid=$!
    local status=""
    while [ "$status" != "200" ]; do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "the server exited; its log:" >&2
            cat server.log >&2
            exit 1
        fi
        status=$(
            exec 2>/dev/null 3<>"/dev/tcp/127.0.0.1/$port" || exit 0
            printf 'GET /healthz HTTP/1.0\r\nHost: localhost\r\n\r\n' >&3
            read -r _ code _ <&3 && echo "$code"
        ) || true
        [ "$status" = "200" ] || sleep 0.002
    done
    local end=$EPOCHREALTIME
    kill -TERM "$pid"
    wait "$pid" || true
    # EPOCHREALTIME is seconds.microseconds.
    echo $(( (${end/./} - ${start/./}) / 1000 ))
}

median() {
    printf '%s\n' "$@" | sort -n | sed -n "$(( ($# + 1) / 2 ))p"
}

row() {
    local name=$1
    shift
    echo "| $name | $* | $(median "$@") |"
}

fresh=()
for _ in $(seq "$runs"); do
    rm -rf data
    fresh+=("$(startup_ms)")
done
existing=()
for _ in $(seq "$runs"); do
    existing+=("$(startup_ms)")
done

echo "binary: $binary"
echo "size: $size bytes ($(( size / 1024 )) KiB); stripped: $stripped bytes ($(( stripped / 1024 )) KiB)"
echo
echo "| start-up, exec to /healthz 200 | runs (ms) | median (ms) |"
echo "| --- | --- | --- |"
row "fresh ./data" "${fresh[@]}"
row "existing ./data" "${existing[@]}"
