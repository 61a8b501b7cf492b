"""`python -m selfopt_trace` is the `selfopt-trace` command."""

from selfopt_trace.cli import main

if __name__ == "__main__":
    main()
