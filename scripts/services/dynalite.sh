# Sourced by scripts/test: dynalite, a DynamoDB implementation *without*
# TransactWriteItems, on a loopback port of its own, so that backend-dynamo's
# tests check that a store which cannot keep the protocol is refused when it
# opens. Installed from the npm registry into target/services/dynalite at the
# version pinned in scripts/services/dynalite/package-lock.json (reinstalled
# only when the lock file changes); a server that answers on the port is
# reused, anything else is (re)started. dynalite keeps its tables in memory.
#
#   COUNTERS_TEST_DYNALITE_URL  http://127.0.0.1:8012 (the endpoint)

dynalite_dir="${COUNTERS_SERVICES_DIR:-$PWD/target/services}/dynalite"
dynalite_port=8012
dynalite_pins="$PWD/scripts/services/dynalite"

dynalite_install() {
    if ! command -v npm >/dev/null; then
        echo "installing node and npm from Debian's packages"
        local sudo=""
        [ "$(id -u)" -eq 0 ] || sudo="sudo"
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq nodejs npm >/dev/null
    fi
    local stamp="$dynalite_dir/.installed-lock"
    if [ -f "$dynalite_dir/node_modules/dynalite/cli.js" ] && cmp -s "$dynalite_pins/package-lock.json" "$stamp"; then
        return
    fi
    echo "installing dynalite (npm) into $dynalite_dir"
    rm -rf "$dynalite_dir/node_modules"
    mkdir -p "$dynalite_dir"
    cp "$dynalite_pins/package.json" "$dynalite_pins/package-lock.json" "$dynalite_dir/"
    npm ci --prefix "$dynalite_dir" --no-audit --no-fund --loglevel=error >/dev/null
    cp "$dynalite_pins/package-lock.json" "$stamp"
}

# Whether a dynalite answers on the port (its health check: "healthy: ...").
dynalite_answers() {
    curl -s -m 2 "http://127.0.0.1:$dynalite_port/" 2>/dev/null | grep -q '^healthy'
}

dynalite_start() {
    dynalite_answers && return
    local pidfile="$dynalite_dir/dynalite.pid"
    # A stale server of ours that no longer answers: stop it.
    if [ -s "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
        kill "$(cat "$pidfile")" 2>/dev/null || true
        sleep 0.3
    fi
    echo "starting dynalite on 127.0.0.1:$dynalite_port"
    nohup node "$dynalite_dir/node_modules/dynalite/cli.js" --host 127.0.0.1 --port "$dynalite_port" \
        >"$dynalite_dir/dynalite.log" 2>&1 &
    echo $! >"$pidfile"
    for _ in $(seq 1 100); do
        dynalite_answers && return
        sleep 0.1
    done
    echo "dynalite did not start; see $dynalite_dir/dynalite.log" >&2
    return 1
}

dynalite_install
dynalite_start
export COUNTERS_TEST_DYNALITE_URL="http://127.0.0.1:$dynalite_port"
echo "dynalite: $COUNTERS_TEST_DYNALITE_URL"
