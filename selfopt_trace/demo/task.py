"""One child process of the demo: import a costly module, do some work, call the local HTTP server.

    python -m selfopt_trace.demo.task NAME [URL]
"""

from __future__ import annotations

import sys

WORK_S = 0.015


def work(name: str, url: str | None = None) -> None:
    import json

    from selfopt_trace.demo import costly_import  # noqa: F401  (~20 ms, on purpose)
    from selfopt_trace.demo.spin import spin

    spin(WORK_S)
    size = 0
    if url:
        from urllib.request import urlopen

        with urlopen(url, timeout=10) as response:
            size = len(json.loads(response.read())["items"])
    print(f"demo task {name}: done ({size} items from the server)", flush=True)


if __name__ == "__main__":
    work(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None)
