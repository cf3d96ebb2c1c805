"""Table operations on the DynamoDB test server for the CLI's no-loss tests
(boto3, which comes with distributed_counter):

    python dynamo_admin.py ENDPOINT TABLE delete             # drop the counters table, wait until gone
    python dynamo_admin.py ENDPOINT TABLE recreate           # distributed_counter's create_table, wait
    python dynamo_admin.py ENDPOINT TABLE create-number-key  # a table whose `key` is a NUMBER, wait
"""

import sys

import boto3
from distributed_counter import DistributedCounter

endpoint, table, op = sys.argv[1:4]
credentials = dict(region_name="us-east-1", aws_access_key_id="local", aws_secret_access_key="local")
client = boto3.client("dynamodb", endpoint_url=endpoint, **credentials)
if op == "delete":
    client.delete_table(TableName=table)
    client.get_waiter("table_not_exists").wait(TableName=table, WaiterConfig={"Delay": 1, "MaxAttempts": 30})
elif op == "recreate":
    DistributedCounter(table, endpoint_url=endpoint, **credentials).create_table(raise_created_exception=True)
    client.get_waiter("table_exists").wait(TableName=table, WaiterConfig={"Delay": 1, "MaxAttempts": 30})
elif op == "create-number-key":
    client.create_table(
        TableName=table,
        KeySchema=[{"AttributeName": "key", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "key", "AttributeType": "N"}],
        BillingMode="PAY_PER_REQUEST",
    )
    client.get_waiter("table_exists").wait(TableName=table, WaiterConfig={"Delay": 1, "MaxAttempts": 30})
else:
    sys.exit(f"unknown operation {op}")
