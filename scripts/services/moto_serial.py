"""moto's server, handling one request at a time.

moto runs a DynamoDB transaction by snapshotting the tables and restoring
the snapshot when the transaction is cancelled. With the stock threaded
server, a cancelled transaction can restore a snapshot taken before a
concurrent transaction committed, silently undoing it; DynamoDB isolates
transactions. Serving requests one at a time (HTTP/1.0, so no connection
holds the server) gives the tests DynamoDB's isolation.

Usage: python moto_serial.py HOST PORT
"""

import sys

from werkzeug.serving import run_simple

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app

if __name__ == "__main__":
    host, port = sys.argv[1], int(sys.argv[2])
    run_simple(
        host,
        port,
        DomainDispatcherApplication(create_backend_app),
        threaded=False,
        request_handler=MotoRequestHandler,
    )
