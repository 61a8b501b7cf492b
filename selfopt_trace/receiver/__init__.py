"""`selfopt-trace collector`: a local OTLP receiver (HTTP and gRPC) that writes spans into the store.

decode.py turns requests into rows of `spans` (the rows `load` and the span-file loader give),
writer.py commits them before a request is answered, server.py serves OTLP/HTTP and OTLP/gRPC.
"""
