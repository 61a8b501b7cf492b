"""A worker process: one HTTP call to the server whose base URL is argv[1]."""

import sys
import urllib.request

with urllib.request.urlopen(f"{sys.argv[1]}/items/42") as response:
    response.read()
