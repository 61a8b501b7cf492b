"""A call run in a thread while the caller goes on: for DuckDB's work, which releases the GIL.

`run`'s report uses it to take what it can off its path after CMD (docs/benchmarks.md, "Command
line"): the store's close beside the summary's printing, the summary's process rows beside its
breakdown.
"""

from __future__ import annotations

import threading
from typing import Any, Callable


class Background(threading.Thread):
    """`function(*args)` in a thread, started at once. `result()` waits for it, then returns what it
    returned or raises what it raised. Not a daemon: the interpreter's exit waits for it too."""

    def __init__(self, function: Callable[..., Any], *args: Any) -> None:
        super().__init__(name=f"selfopt-trace: {getattr(function, '__qualname__', function)}")
        self._call = (function, args)
        self._outcome: tuple[bool, Any] = (False, None)
        self.start()

    def run(self) -> None:
        function, args = self._call
        try:
            self._outcome = (True, function(*args))
        except BaseException as exc:  # noqa: BLE001 - raised again by result(), in the waiting thread
            self._outcome = (False, exc)

    def result(self) -> Any:
        self.join()
        returned, value = self._outcome
        if not returned:
            raise value
        return value
