# Shared by the bench scripts (sourced, not run).

# Waits until something listens on 127.0.0.1:$1, at most 10 s (a server starting: it
# says nothing when it is ready, so its port is tried every 100 ms).
wait_for_port() {
    for _ in $(seq 1 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "server on port $1 did not start" >&2
    return 1
}
