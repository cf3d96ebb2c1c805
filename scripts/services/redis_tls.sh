# Sourced by scripts/test after redis.sh: a standalone Redis and a 3-master
# Redis Cluster that speak only TLS, on loopback ports of their own, with a
# certificate authority this script makes (and a second, unrelated one for
# the wrong-CA tests), and an ACL user. Idempotent: servers that answer are
# reused; new certificates restart the servers.
#
#   COUNTERS_TEST_REDIS_TLS_URL          rediss://127.0.0.1:6392?ca=CA
#   COUNTERS_TEST_REDIS_TLS_CLUSTER_URL  rediss+cluster://127.0.0.1:7394,...?ca=CA
#   COUNTERS_TEST_REDIS_TLS_ACL_URL      rediss://counters:PASSWORD@127.0.0.1:6392?ca=CA
#   COUNTERS_TEST_REDIS_TLS_WRONG_CA     a CA that did not sign the servers' certificate

tls_dir="${COUNTERS_SERVICES_DIR:-$PWD/target/services}/redis-tls"
tls_port=6392
tls_cluster_ports="7394 7395 7396"
tls_user=counters
tls_password=counters-acl-secret

tls_cli() { redis-cli --tls --cacert "$tls_dir/certs/ca.crt" -h 127.0.0.1 "$@"; }
tls_ping() { tls_cli -p "$1" ping 2>/dev/null | grep -q PONG; }

# Stops whatever TLS redis answers on a port, whichever CA signed its
# certificate (one started by another checkout of the project, say).
tls_stop() {
    redis-cli --tls --insecure -h 127.0.0.1 -p "$1" shutdown nosave >/dev/null 2>&1 || true
}

tls_stop_all() {
    local port
    for port in $tls_port $tls_cluster_ports; do
        tls_stop "$port"
    done
}

# Certificates valid for a week, remade when missing or within a day of expiry.
tls_certs() {
    local certs="$tls_dir/certs"
    if [ -f "$certs/server.crt" ] && openssl x509 -checkend 86400 -noout -in "$certs/server.crt" >/dev/null 2>&1; then
        return
    fi
    tls_stop_all
    rm -rf "$certs"
    mkdir -p "$certs"
    (
        cd "$certs"
        openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 7 -subj "/CN=counters test CA" 2>/dev/null
        openssl req -x509 -newkey rsa:2048 -nodes -keyout wrong-ca.key -out wrong-ca.crt -days 7 \
            -subj "/CN=counters unrelated CA" 2>/dev/null
        openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj "/CN=127.0.0.1" 2>/dev/null
        printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >server.ext
        openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out server.crt -days 7 \
            -extfile server.ext 2>/dev/null
    ) || {
        echo "could not make the TLS test certificates in $certs" >&2
        return 1
    }
}

# tls_start PORT DIR [extra redis-server arguments...]
tls_start() {
    local port=$1 dir=$2 certs="$tls_dir/certs"
    shift 2
    tls_ping "$port" && return
    # Something else holds the port (a server with other certificates).
    tls_stop "$port"
    mkdir -p "$dir"
    redis-server --daemonize yes --bind 127.0.0.1 --port 0 --tls-port "$port" \
        --tls-cert-file "$certs/server.crt" --tls-key-file "$certs/server.key" --tls-ca-cert-file "$certs/ca.crt" \
        --tls-auth-clients no --dir "$dir" --save "" --appendonly no --logfile "$dir/redis.log" \
        --pidfile "$dir/redis.pid" "$@"
    for _ in $(seq 1 100); do
        tls_ping "$port" && return
        sleep 0.1
    done
    echo "TLS redis on port $port did not start; see $dir/redis.log" >&2
    return 1
}

tls_cluster_ok() {
    local port
    for port in $tls_cluster_ports; do
        tls_cli -p "$port" cluster info 2>/dev/null | grep -q 'cluster_state:ok' || return 1
    done
}

tls_cluster_up() {
    tls_cluster_ok && return
    local port nodes=""
    for port in $tls_cluster_ports; do
        tls_stop "$port"
    done
    sleep 0.3
    rm -rf "$tls_dir/cluster"
    for port in $tls_cluster_ports; do
        tls_start "$port" "$tls_dir/cluster/$port" --tls-cluster yes --tls-replication yes --cluster-enabled yes \
            --cluster-config-file "$tls_dir/cluster/$port/nodes.conf" --cluster-node-timeout 5000
        nodes="$nodes 127.0.0.1:$port"
    done
    # shellcheck disable=SC2086
    tls_cli --cluster create $nodes --cluster-replicas 0 --cluster-yes >"$tls_dir/cluster/create.log" 2>&1 || {
        cat "$tls_dir/cluster/create.log" >&2
        return 1
    }
    for _ in $(seq 1 200); do
        tls_cluster_ok && return
        sleep 0.1
    done
    echo "TLS redis cluster did not reach cluster_state:ok" >&2
    return 1
}

command -v openssl >/dev/null || {
    echo "installing openssl from Debian's packages (to make the TLS test certificates)"
    sudo_=""
    [ "$(id -u)" -eq 0 ] || sudo_="sudo"
    $sudo_ apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -qq openssl >/dev/null
}
tls_certs
tls_start "$tls_port" "$tls_dir/standalone" --user "$tls_user" on ">$tls_password" '~*' '&*' '+@all'
tls_cluster_up
tls_query="ca=$tls_dir/certs/ca.crt"
export COUNTERS_TEST_REDIS_TLS_URL="rediss://127.0.0.1:$tls_port?$tls_query"
export COUNTERS_TEST_REDIS_TLS_CLUSTER_URL="rediss+cluster://$(echo $tls_cluster_ports | sed 's/\([0-9]*\)/127.0.0.1:\1/g; s/ /,/g')?$tls_query"
export COUNTERS_TEST_REDIS_TLS_ACL_URL="rediss://$tls_user:$tls_password@127.0.0.1:$tls_port?$tls_query"
export COUNTERS_TEST_REDIS_TLS_WRONG_CA="$tls_dir/certs/wrong-ca.crt"
echo "redis TLS: $COUNTERS_TEST_REDIS_TLS_URL and $COUNTERS_TEST_REDIS_TLS_CLUSTER_URL"
