"""`selfopt-trace jaeger [RUN] [--open]`, and the Jaeger link among the summary's next commands."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.otel.conftest import Jaeger, free_port
from tests.otel.test_live_export import selfopt


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    """A home with two runs: `first` and `second` (the latest)."""
    home = tmp_path_factory.mktemp("jaeger-cmd") / "home"
    for run_id in ("first", "second"):
        done = selfopt(home, "run", "--run-id", run_id, "-q", "--export", "never", "--", sys.executable, "-c", "pass")
        assert done.returncode == 0, done.stderr
    return home


def trace_id(home: Path, run_id: str) -> str:
    done = selfopt(home, "sql", f"SELECT DISTINCT trace_id FROM spans WHERE run_id = '{run_id}'", "--format", "json")
    [row] = json.loads(done.stdout)
    return row["trace_id"]


def test_the_url_of_a_runs_trace(home: Path) -> None:
    first, second = trace_id(home, "first"), trace_id(home, "second")
    assert first != second
    done = selfopt(home, "jaeger")
    assert (done.returncode, done.stdout) == (0, f"http://localhost:16686/trace/{second}\n")  # latest by default
    done = selfopt(home, "jaeger", "fir", env={"SELFOPT_TRACE_JAEGER_URL": "http://jaeger.example:9000/ui/"})
    assert done.stdout == f"http://jaeger.example:9000/ui/trace/{first}\n"
    done = selfopt(home, "jaeger", "first", "--url", "https://other:16686")
    assert done.stdout == f"https://other:16686/trace/{first}\n"


def test_open_hands_the_url_to_the_browser(home: Path, tmp_path: Path) -> None:
    opened = tmp_path / "opened"
    browser = tmp_path / "browser"
    browser.write_text(f"#!/bin/sh\nprintf '%s' \"$1\" > {opened}\n")
    browser.chmod(0o755)
    done = selfopt(home, "jaeger", "second", "--open", env={"BROWSER": str(browser), "DISPLAY": ""})
    assert done.returncode == 0, done.stderr
    assert opened.read_text() == done.stdout.strip() == f"http://localhost:16686/trace/{trace_id(home, 'second')}"


@pytest.mark.parametrize("url", ["ftp://jaeger:16686", "jaeger:16686", "http://jaeger:port"])
def test_a_bad_url_is_a_usage_error(home: Path, url: str) -> None:
    done = selfopt(home, "jaeger", "--url", url)
    assert done.returncode == 2 and "invalid Jaeger UI URL" in done.stderr


def test_the_summary_links_the_trace_when_jaeger_answers(jaeger: Jaeger, tmp_path: Path) -> None:
    home = tmp_path / "home"
    done = selfopt(home, "run", "--run-id", "linked", "--json=-", "--otlp-endpoint", jaeger.otlp_http_endpoint, "--",
                   sys.executable, "-c", "pass", env={"SELFOPT_TRACE_JAEGER_URL": jaeger.query_url})
    assert done.returncode == 0, done.stderr
    link = f"{jaeger.query_url}/trace/{trace_id(home, 'linked')}"
    assert link in json.loads(done.stdout)["next_commands"]
    assert link in done.stderr  # the printed summary
    assert jaeger.trace(link.rsplit("/", 1)[1])["data"]  # and the link leads to the trace


def test_no_link_to_a_trace_that_was_never_sent(jaeger: Jaeger, tmp_path: Path) -> None:
    """Jaeger answers, but nothing listens where the export would send (`--export auto`): the run is
    not in Jaeger, so the summary links to no trace there."""
    home = tmp_path / "home"
    done = selfopt(home, "run", "--run-id", "unsent", "--json=-", "--otlp-endpoint", f"http://127.0.0.1:{free_port()}",
                   "--", sys.executable, "-c", "pass", env={"SELFOPT_TRACE_JAEGER_URL": jaeger.query_url})
    assert done.returncode == 0, done.stderr
    assert not (home / "runs" / "unsent" / "export.json").exists()  # nothing was sent
    assert not [line for line in json.loads(done.stdout)["next_commands"] if "/trace/" in line]
    assert "/trace/" not in done.stderr


def test_no_link_when_no_jaeger_answers(tmp_path: Path) -> None:
    nothing = f"http://127.0.0.1:{free_port()}"
    done = selfopt(tmp_path / "home", "run", "--json=-", "--", sys.executable, "-c", "pass",
                   env={"SELFOPT_TRACE_JAEGER_URL": nothing})
    assert done.returncode == 0, done.stderr
    assert not [line for line in json.loads(done.stdout)["next_commands"] if "/trace/" in line]


def test_push_and_jaeger_are_documented_with_every_option() -> None:
    import typer.main

    from selfopt_trace.cli import app

    doc = (Path(__file__).resolve().parents[2] / "docs" / "cli.md").read_text()
    group = typer.main.get_command(app)
    for name in ("push", "jaeger"):
        assert f"\n## {name}\n" in doc and f"(#{name})" in doc, name
        for param in group.commands[name].params:
            for option in getattr(param, "opts", ()):
                if option.startswith("--") and option != "--help":
                    assert option in doc, f"{name} {option}"
    for option in ("--export", "--otlp-endpoint", "--otlp-protocol", "SELFOPT_TRACE_EXPORT", "SELFOPT_TRACE_JAEGER_URL"):
        assert option in doc, option
