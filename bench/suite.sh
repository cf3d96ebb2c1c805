#!/usr/bin/env bash
# Runs every measurement BENCHMARKS.md reports, each with its baselines in the
# same run, and keeps the JSON reports (and the tables) in a directory.
#
#   bench/suite.sh [OUTPUT_DIR]      # default target/bench-results
#
# Starts the local services (Redis, moto for DynamoDB, memcached) like
# scripts/test does. Take the figures on a quiet machine: the load average
# before and after each run is in its report.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-target/bench-results}
mkdir -p "$out"

for service in redis dynamodb memcached; do
    # shellcheck source=/dev/null
    [ -f "scripts/services/$service.sh" ] && source "scripts/services/$service.sh" >/dev/null
done

cargo build --release -p counters-bench --features full
bin=target/release/counters-load
tables="$out/tables.txt"
: >"$tables"

run() {
    local name=$1
    shift
    echo "== $name: counters-load $*" | tee -a "$tables"
    "$bin" --save "$out/$name.json" "$@" --quiet 2>&1 | tee -a "$tables"
    echo | tee -a "$tables"
}

run memory-uniform run --duration 10
run memory-hot-key run --keys 1 --duration 10 --baseline dashmap
run memory-zipf run --distribution zipf:1.1 --deltas 1:90,5:9,-1:1 --duration 10 --baseline dashmap
run amplification run --increments 1000000 --interval 60 --baseline dashmap
run redis-atomic run --cache "$COUNTERS_TEST_REDIS_URL" --tasks 256 --duration 10 --baseline redis-benchmark
# The same work from the raw client: a HINCRBY per increment, same tasks, same
# connection kind (the report adds server commands and µs per increment).
run redis-raw run --cache "$COUNTERS_TEST_REDIS_URL" --keys 10000 --tasks 256 --duration 10 --interval 2 \
    --baseline redis-raw
run redis-cluster-raw run --cache "$COUNTERS_TEST_REDIS_CLUSTER_URL" --keys 10000 --tasks 256 --duration 10 \
    --interval 2 --baseline redis-raw
run redis-combining run --cache "$COUNTERS_TEST_REDIS_URL" --combining --duration 10 --baseline redis-benchmark
run redis-combining-zipf run --cache "$COUNTERS_TEST_REDIS_URL" --combining --distribution zipf:1.1 --duration 10 \
    --baseline redis-benchmark
if [ -n "${COUNTERS_TEST_MEMCACHE_URL:-}" ]; then
    run memcache run --cache "$COUNTERS_TEST_MEMCACHE_URL" --tasks 64 --duration 10 --baseline memcache-raw
fi
# moto serves one request at a time and copies every table on each
# transaction: few keys, a short direct baseline, and the tables dropped after.
table="cbench-suite-$$"
run dynamodb run --store "dynamodb://$table?endpoint=$COUNTERS_TEST_DYNAMODB_URL" --keys 1000 --duration 5 \
    --direct-duration 3 --baseline direct
# Cold keys: every counter new, no warm-up, 64 tasks; the store requests are
# the point (moto is slow, so its ops/s are not).
for cold in 100:10000 1000:20000; do
    run "dynamodb-cold-${cold%%:*}" run --store "dynamodb://$table-cold${cold%%:*}?endpoint=$COUNTERS_TEST_DYNAMODB_URL" \
        --keys "${cold%%:*}" --increments "${cold##*:}" --no-warm --tasks 64 --baseline dashmap
done
"$COUNTERS_TEST_PYTHON" - "$table" "$COUNTERS_TEST_DYNAMODB_URL" <<'PY' || echo "could not drop the tables of $table"
import sys, boto3
table, endpoint = sys.argv[1], sys.argv[2]
c = boto3.client("dynamodb", endpoint_url=endpoint, region_name="us-east-1",
                 aws_access_key_id="bench", aws_secret_access_key="bench")
for base in (table, table + "-cold100", table + "-cold1000"):
    for name in (base, base + ".slices", base + ".batches"):
        try:
            c.delete_table(TableName=name)
        except c.exceptions.ResourceNotFoundException:
            pass
PY
# Flush throughput and the age bound: 100,000 counters dirtied every
# interval, the store's own batch-apply rate measured in the same run.
run flush-100k-i2 run --keys 100000 --duration 20 --interval 2 --baseline store-apply --direct-duration 5
run flush-100k-i10 run --keys 100000 --duration 30 --interval 10 --baseline store-apply --direct-duration 5
run flush-redis-i2 run --cache "$COUNTERS_TEST_REDIS_URL" --keys 100000 --tasks 64 --duration 20 --interval 2 \
    --baseline store-apply --direct-duration 5
if [ -n "${COUNTERS_TEST_MEMCACHE_URL:-}" ]; then
    run flush-memcache-i2 run --cache "$COUNTERS_TEST_MEMCACHE_URL" --keys 20000 --tasks 64 --duration 20 \
        --interval 2 --baseline store-apply --direct-duration 5
fi
run memory-per-counter memory --counters 1000000
run flush-scale flush-scale --idle 10000,100000,1000000 --dirty 1000
# Listing one namespace (what the admin page polls) beside 1k and 1M dirty
# counters elsewhere, with the full scan listings used to make beside it.
run list-scale-memory list-scale --noise 1000,1000000
run list-scale-redis list-scale --cache "$COUNTERS_TEST_REDIS_URL" --noise 1000,1000000
run idempotency-memory idempotency --increments 400000
run idempotency-redis idempotency --cache "$COUNTERS_TEST_REDIS_URL" --increments 50000 --tasks 64

echo "== criterion (quick)" | tee -a "$tables"
cargo bench -p counters-bench --bench hot_paths -- --quick 2>&1 | grep -E "^[a-z_]+/|time:|thrpt:" | tee -a "$tables"
cargo bench -p counters-bench --bench store_apply -- --quick 2>&1 | grep -E "^[a-z_/]+|time:|thrpt:" | tee -a "$tables"
echo "reports in $out"
