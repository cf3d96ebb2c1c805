# Sourced by scripts/test: a local DynamoDB-compatible server for the tests
# (moto's server, from PyPI, in a virtual environment of the project's own,
# serving one request at a time: see moto_serial.py)
# on a loopback port of its own, plus the Python `distributed_counter`
# package for the interoperability test. Idempotent: a server an earlier run
# of this checkout started is restarted empty (moto keeps every table in
# memory), any other server that answers is reused, and the environment is
# only rebuilt when its requirements change.
#
#   COUNTERS_TEST_DYNAMODB_URL   http://127.0.0.1:8011 (the endpoint)
#   COUNTERS_TEST_PYTHON         the virtual environment's python

dynamo_dir="${COUNTERS_SERVICES_DIR:-$PWD/target/services}/dynamodb"
dynamo_port=8011
dynamo_venv="$dynamo_dir/venv"
dynamo_requirements="$PWD/scripts/services/dynamodb-requirements.txt"

dynamo_env_up() {
    local stamp="$dynamo_venv/.requirements"
    if [ -x "$dynamo_venv/bin/python" ] && cmp -s "$dynamo_requirements" "$stamp"; then
        return
    fi
    echo "creating the Python environment for moto and distributed_counter in $dynamo_venv"
    rm -rf "$dynamo_venv"
    mkdir -p "$dynamo_dir"
    python3 -m venv "$dynamo_venv"
    "$dynamo_venv/bin/pip" install -q --disable-pip-version-check -r "$dynamo_requirements"
    cp "$dynamo_requirements" "$stamp"
}

dynamo_answers() {
    curl -s -o /dev/null -m 2 "http://127.0.0.1:$dynamo_port/moto-api/" 2>/dev/null
}

dynamo_server_up() {
    # moto keeps every table in memory and the tests never drop theirs: each
    # run starts from an empty server, so no run pays for the ones before.
    if [ -f "$dynamo_dir/moto.pid" ]; then
        kill "$(cat "$dynamo_dir/moto.pid")" 2>/dev/null || true
        rm -f "$dynamo_dir/moto.pid"
        for _ in $(seq 1 50); do
            dynamo_answers || break
            sleep 0.1
        done
    fi
    dynamo_answers && return
    echo "starting moto's DynamoDB server on 127.0.0.1:$dynamo_port"
    # One request at a time: see moto_serial.py for why.
    nohup "$dynamo_venv/bin/python" "$PWD/scripts/services/moto_serial.py" 127.0.0.1 "$dynamo_port" \
        >"$dynamo_dir/moto.log" 2>&1 &
    echo $! >"$dynamo_dir/moto.pid"
    for _ in $(seq 1 150); do
        dynamo_answers && return
        sleep 0.2
    done
    echo "moto did not start; see $dynamo_dir/moto.log" >&2
    return 1
}

dynamo_env_up
dynamo_server_up
export COUNTERS_TEST_DYNAMODB_URL="http://127.0.0.1:$dynamo_port"
export COUNTERS_TEST_PYTHON="$dynamo_venv/bin/python"
echo "dynamodb: $COUNTERS_TEST_DYNAMODB_URL (moto), python: $COUNTERS_TEST_PYTHON"
