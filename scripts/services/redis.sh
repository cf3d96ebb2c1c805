# Sourced by scripts/test: a standalone Redis and a 3-master Redis Cluster on
# loopback ports of their own (not the system's 6379), started idempotently:
# running servers that answer are reused, anything else is (re)created.
# Exports the URLs the tests read.
#
#   COUNTERS_TEST_REDIS_URL          redis://127.0.0.1:6391
#   COUNTERS_TEST_REDIS_CLUSTER_URL  redis+cluster://127.0.0.1:7391,127.0.0.1:7392,127.0.0.1:7393

redis_dir="${COUNTERS_SERVICES_DIR:-$PWD/target/services}/redis"
redis_port=6391
redis_cluster_ports="7391 7392 7393"

redis_install() {
    if command -v redis-server >/dev/null && command -v redis-cli >/dev/null; then
        return
    fi
    echo "installing redis-server from Debian's packages"
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq redis-server redis-tools >/dev/null
}

redis_ping() { redis-cli -h 127.0.0.1 -p "$1" ping 2>/dev/null | grep -q PONG; }

# redis_start PORT DIR [extra redis-server arguments...]
redis_start() {
    local port=$1 dir=$2
    shift 2
    redis_ping "$port" && return
    mkdir -p "$dir"
    redis-server --daemonize yes --bind 127.0.0.1 --port "$port" --dir "$dir" \
        --save "" --appendonly no --logfile "$dir/redis.log" --pidfile "$dir/redis.pid" "$@"
    for _ in $(seq 1 100); do
        redis_ping "$port" && return
        sleep 0.1
    done
    echo "redis on port $port did not start; see $dir/redis.log" >&2
    return 1
}

redis_cluster_ok() {
    local port
    for port in $redis_cluster_ports; do
        redis-cli -h 127.0.0.1 -p "$port" cluster info 2>/dev/null | grep -q 'cluster_state:ok' || return 1
    done
}

redis_cluster_up() {
    redis_cluster_ok && return
    local port nodes=""
    # Not a healthy cluster: start over from empty nodes.
    for port in $redis_cluster_ports; do
        redis-cli -h 127.0.0.1 -p "$port" shutdown nosave >/dev/null 2>&1 || true
    done
    sleep 0.3
    rm -rf "$redis_dir/cluster"
    for port in $redis_cluster_ports; do
        redis_start "$port" "$redis_dir/cluster/$port" --cluster-enabled yes \
            --cluster-config-file "$redis_dir/cluster/$port/nodes.conf" --cluster-node-timeout 5000
        nodes="$nodes 127.0.0.1:$port"
    done
    # shellcheck disable=SC2086
    redis-cli --cluster create $nodes --cluster-replicas 0 --cluster-yes >"$redis_dir/cluster/create.log" 2>&1 || {
        cat "$redis_dir/cluster/create.log" >&2
        return 1
    }
    for _ in $(seq 1 200); do
        redis_cluster_ok && return
        sleep 0.1
    done
    echo "redis cluster did not reach cluster_state:ok" >&2
    return 1
}

redis_install
redis_start "$redis_port" "$redis_dir/standalone"
redis_cluster_up
export COUNTERS_TEST_REDIS_URL="redis://127.0.0.1:$redis_port"
export COUNTERS_TEST_REDIS_CLUSTER_URL="redis+cluster://$(echo $redis_cluster_ports | sed 's/\([0-9]*\)/127.0.0.1:\1/g; s/ /,/g')"
echo "redis: $COUNTERS_TEST_REDIS_URL and $COUNTERS_TEST_REDIS_CLUSTER_URL"
