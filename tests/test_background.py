"""background.Background: a call in a thread, its result or its error where the caller waits for it."""

from __future__ import annotations

import threading

import pytest

from selfopt_trace.background import Background


def test_the_result_is_what_the_call_returned_in_another_thread():
    caller = threading.get_ident()
    call = Background(lambda a, b: (a + b, threading.get_ident()), 2, 3)
    total, thread = call.result()
    assert total == 5 and thread != caller
    assert not call.daemon and not call.is_alive()  # the interpreter's exit would have waited for it


def test_the_error_is_raised_where_the_result_is_asked_for():
    def close() -> None:
        raise OSError(28, "No space left on device")

    call = Background(close)
    with pytest.raises(OSError, match="No space left"):
        call.result()
    with pytest.raises(OSError):  # again, every time
        call.result()
