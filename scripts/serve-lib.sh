# Sourced by the scripts that test a live server. start_server BINARY DB KEY LOG starts
# `BINARY serve` on a random loopback port with operator key KEY, logging to LOG, waits until
# /health answers (at most 10 s), and sets $port and $server (the process id).
start_server() {
    port=$((20000 + $(od -An -N2 -tu2 /dev/urandom | tr -d ' ') % 20000))
    TALLY_OPERATOR_KEY=$3 TALLY_LOG_LEVEL=error "$1" serve --db "$2" --port "$port" --catalog catalogs/tally.yaml >"$4" 2>&1 &
    server=$!
    for _ in $(seq 1 100); do
        curl -fs "http://127.0.0.1:$port/health" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "the server did not start:" >&2
    cat "$4" >&2
    return 1
}
