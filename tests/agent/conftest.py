"""What the agent's tests share."""

from __future__ import annotations

import pytest

NO_TWIN = "no C twin of the import wrapper here (not CPython 3.8-3.13 on Linux, or no C compiler)"


@pytest.fixture()
def twin():
    """The agent's C twin as loaded in this process (tests/conftest.py builds it first, as `run` does),
    or the test skips: only a machine without a C compiler or another Python has none."""
    from selfopt_trace.bootstrap.selfopt_trace_agent import tracer

    if tracer.twin is None:
        pytest.skip(NO_TWIN)
    return tracer.twin
