"""`selfopt-trace collector`: a local OTLP receiver (HTTP and gRPC) that writes spans into the store.

decode.py parses and checks requests and turns them into rows of `spans` (the rows `load` and the
span-file loader give), writer.py syncs each request to a spool before it is answered and loads the
rows into the store, convert.py makes the rows in a worker process, server.py serves OTLP/HTTP and
OTLP/gRPC.
"""
