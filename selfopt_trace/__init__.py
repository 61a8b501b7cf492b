"""selfopt-trace: one connected, low-overhead trace of a whole Python process tree."""

__version__ = "0.1.0"
