"""Run a small program traced and untraced (also used by the parsing and target tests).

The program is a file, not `-c`, so spans can name its lines (code.filepath, code.lineno).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.conftest import Traced
from tests.spanfiles import RunSpans, SpanRecord


class Program:
    def __init__(self, traced: Traced, tmp_path: Path):
        self.traced = traced
        self.dir = tmp_path

    def write(self, name: str, source: str) -> Path:
        path = self.dir / name
        path.write_text(textwrap.dedent(source))
        return path

    def run(self, source: str, **extra_env: str) -> tuple[str, RunSpans]:
        """Traced: exit code 0 and an empty stderr are asserted; returns stdout and the spans."""
        path = self.write("prog.py", source)
        result = self.traced.run([sys.executable, str(path)], cwd=self.dir, extra_env=extra_env)
        assert result.returncode == 0 and result.stderr == b"", result.stderr.decode()
        return result.stdout.decode(), self.traced.spans()

    def untraced(self, source: str) -> str:
        path = self.write("prog.py", source)
        env = {k: v for k, v in os.environ.items() if not k.startswith("SELFOPT_TRACE_") and k != "PYTHONPATH"}
        result = subprocess.run([sys.executable, str(path)], cwd=self.dir, env=env, capture_output=True, timeout=120)
        assert result.returncode == 0 and result.stderr == b"", result.stderr.decode()
        return result.stdout.decode()


def sums(span: SpanRecord, key: str) -> tuple[int, int, int]:
    """(count, duration_ns, bytes) summed onto `span` for small `key` calls."""
    prefix = "selfopt_trace.small.%s." % key
    a = span.attributes
    return a.get(prefix + "count", 0), a.get(prefix + "duration_ns", 0), a.get(prefix + "bytes", 0)


def process(spans: RunSpans) -> SpanRecord:
    [root] = spans.processes()
    return root
