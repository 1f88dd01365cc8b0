#!/usr/bin/env bash
# palisade under `cargo shuttle run` (the `shuttle` feature), against this machine's
# PostgreSQL, checked from the outside by tests/api/shuttle_run.rs; then stopped.
#
# Two runs on one database of its own (dropped at the end):
#   1. as `cargo shuttle run` starts it: no proxy, the peer is the client;
#   2. with TRUSTED_PROXIES = "*", what a Shuttle deployment assumes: every peer is the
#      platform's proxy and the client is the entry it adds to X-Forwarded-For.
#
# Needs cargo-shuttle 0.57.3 (installed here if missing, ~5.5 min) and PostgreSQL on
# 127.0.0.1:5432 (user postgres). The Shuttle build goes to target/shuttle: built into
# target/debug it would replace the `palisade` binary the test suite runs.
set -euo pipefail
cd "$(dirname "$0")/.."

[ "$(cargo shuttle --version 2>/dev/null)" = "cargo-shuttle 0.57.3" ] ||
    cargo install cargo-shuttle --version 0.57.3 --locked

export CARGO_TARGET_DIR="$PWD/target/shuttle"
# A proxy in the environment breaks cargo-shuttle's calls to its own local API.
unset HTTP_PROXY HTTPS_PROXY ALL_PROXY http_proxy https_proxy all_proxy
psql_admin() { psql -h 127.0.0.1 -U postgres -d postgres -qAt -v ON_ERROR_STOP=1 "$@"; }

database="palisade_shuttle_smoke_$$"
work=$(mktemp -d)
runner=""
stop_runner() {
    if [ -n "$runner" ]; then
        # cargo-shuttle and the runtime it started are one process group (setsid).
        kill -INT -- "-$runner" 2>/dev/null || true
        for _ in $(seq 100); do
            kill -0 -- "-$runner" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL -- "-$runner" 2>/dev/null || true
        wait "$runner" 2>/dev/null || true
        runner=""
    fi
}
cleanup() {
    stop_runner
    psql_admin -c "DROP DATABASE IF EXISTS $database WITH (FORCE)" || true
    rm -rf "$work"
}
trap cleanup EXIT
psql_admin -c "CREATE DATABASE $database"

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
url="http://127.0.0.1:$port"

# Starts `cargo shuttle run` with these extra secrets lines and waits for palisade to
# say it listens (the first run builds the crate: minutes).
start_runner() {
    {
        echo "DATABASE_URL = \"postgres://postgres@127.0.0.1:5432/$database\""
        echo "JWT_SECRET = \"$(openssl rand -hex 32 2>/dev/null || python3 -c 'import secrets; print(secrets.token_hex(32))')\""
        echo "ALLOWED_ORIGINS = \"$url\""
        printf '%s\n' "$@"
    } >"$work/Secrets.toml"
    : >"$work/log"
    # The environment is read under Shuttle too: a budget that runs out in a few requests.
    PALISADE_AUTH_PER_MINUTE=1 PALISADE_AUTH_BURST=3 \
        setsid cargo shuttle run --port "$port" --secrets "$work/Secrets.toml" \
        >"$work/log" 2>&1 </dev/null &
    runner=$!
    local waited=0
    until grep -q "palisade listening on $url" "$work/log"; do
        if ! kill -0 "$runner" 2>/dev/null; then
            cat "$work/log" >&2
            echo "cargo shuttle run exited before palisade was up" >&2
            exit 1
        fi
        if [ "$waited" -ge 1800 ]; then
            cat "$work/log" >&2
            echo "palisade did not come up under cargo shuttle run within 30 min" >&2
            exit 1
        fi
        sleep 1
        waited=$((waited + 1))
    done
    echo "palisade up under cargo shuttle run at $url after ${waited}s"
}

smoke() {
    # The tests are built in the normal target directory, with the suite's features.
    PALISADE_SHUTTLE_URL="$url" CARGO_TARGET_DIR="$PWD/target" \
        cargo test --test api "shuttle_run::$1" -- --ignored --test-threads=1
}

echo "== cargo shuttle run, local (no proxy in front)"
start_runner
smoke local_
stop_runner

echo "== cargo shuttle run, every peer a proxy (TRUSTED_PROXIES = \"*\", as deployed)"
start_runner 'TRUSTED_PROXIES = "*"'
smoke every_peer_a_proxy_
stop_runner
grep -q "palisade listening on $url (under Shuttle)" "$work/log"
echo "shuttle smoke test passed"
