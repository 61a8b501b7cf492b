"""One module per patched target. Each `install` is idempotent and never raises into the program."""
