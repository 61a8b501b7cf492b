"""The bundled demo: a small multi-process workload whose costs are known by construction.

`selfopt-trace demo` runs `python -m selfopt_trace.demo.workload` traced. Standard library only, so
it runs on a fresh machine with nothing else installed.
"""
