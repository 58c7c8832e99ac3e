# Sourced by the scripts that test a live server. start_server BINARY DB KEY LOG [ARGS...] starts
# `BINARY serve` on a random loopback port with operator key KEY (and any further ARGS), logging
# to LOG, waits until /health answers (at most 10 s), and sets $port and $server (the process id).
# A random port another process holds is tried again on another port, up to 5 times.
start_server() {
    _bin=$1 _db=$2 _key=$3 _log=$4
    shift 4
    for _attempt in 1 2 3 4 5; do
        port=$((20000 + $(od -An -N2 -tu2 /dev/urandom | tr -d ' ') % 20000))
        TALLY_OPERATOR_KEY=$_key TALLY_LOG_LEVEL=error "$_bin" serve --db "$_db" --port "$port" --catalog catalogs/tally.yaml "$@" >"$_log" 2>&1 &
        server=$!
        for _ in $(seq 1 100); do
            curl -fs "http://127.0.0.1:$port/health" >/dev/null 2>&1 && return 0
            kill -0 "$server" 2>/dev/null || break
            sleep 0.1
        done
        if ! kill -0 "$server" 2>/dev/null && grep -q "Address already in use" "$_log"; then
            wait "$server" 2>/dev/null || true
            echo "port $port is taken; trying another" >&2
            continue
        fi
        break
    done
    echo "the server did not start:" >&2
    cat "$_log" >&2
    return 1
}
