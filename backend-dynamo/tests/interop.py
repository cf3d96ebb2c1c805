"""One operation of Python's distributed_counter on a table, for the
interoperability test: python interop.py ENDPOINT TABLE OP KEY [ARGS...]."""

import sys
from decimal import Decimal

from distributed_counter import DistributedCounter

endpoint, table, op, key, *args = sys.argv[1:]
counter = DistributedCounter(
    table,
    endpoint_url=endpoint,
    region_name="us-east-1",
    aws_access_key_id="local",
    aws_secret_access_key="local",
)
if op == "create":
    counter.create_table()
elif op == "get":
    print(counter.get(key))
elif op == "put":
    counter.put(key, int(args[0]))
elif op == "increment":
    print(counter.increment(key, Decimal(args[0]), int(args[1]) if len(args) > 1 else None))
else:
    sys.exit(f"unknown operation {op}")
