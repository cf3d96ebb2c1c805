# Sourced by scripts/test: a memcached on a loopback port of its own (not the
# system's 11211), started idempotently: a running server that answers is
# reused, anything else is (re)started. Exports the URL the tests read.
#
#   COUNTERS_TEST_MEMCACHE_URL  memcache://127.0.0.1:11311

memcached_dir="${COUNTERS_SERVICES_DIR:-$PWD/target/services}/memcached"
memcached_port=11311

memcached_install() {
    command -v memcached >/dev/null && return
    echo "installing memcached from Debian's packages"
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq memcached >/dev/null
}

# Whether a memcached answers on the port (the meta no-op, so 1.6+).
memcached_ping() {
    local reply
    reply=$( (exec 3<>"/dev/tcp/127.0.0.1/$1" && printf 'mn\r\n' >&3 && timeout 2 head -c 2 <&3) 2>/dev/null ) || return 1
    [ "$reply" = "MN" ]
}

memcached_start() {
    memcached_ping "$memcached_port" && return
    mkdir -p "$memcached_dir"
    local pidfile="$memcached_dir/memcached.pid"
    # A stale pid file of ours whose process no longer answers: stop it.
    if [ -s "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
        kill "$(cat "$pidfile")" 2>/dev/null || true
        sleep 0.3
    fi
    local user=root
    [ "$(id -u)" -eq 0 ] || user="$(id -un)"
    # -U 0: no UDP; 256 MB of memory; up to 4096 connections.
    memcached -d -u "$user" -l 127.0.0.1 -p "$memcached_port" -U 0 -m 256 -c 4096 \
        -P "$pidfile" >>"$memcached_dir/memcached.log" 2>&1
    for _ in $(seq 1 100); do
        memcached_ping "$memcached_port" && return
        sleep 0.1
    done
    echo "memcached on port $memcached_port did not start; see $memcached_dir/memcached.log" >&2
    return 1
}

memcached_install
memcached_start
export COUNTERS_TEST_MEMCACHE_URL="memcache://127.0.0.1:$memcached_port"
echo "memcached: $COUNTERS_TEST_MEMCACHE_URL"
