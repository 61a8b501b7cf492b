"""Flamegraphs of the profile samples (run --profile): `selfopt-trace flame`.

    profile = fetch_profile(store, run_id, span="codeflash.generate_tests")
    write_flame(profile, "flame.svg")                  # or .json: speedscope
    write_flame(diff_profiles(before, after), "diff.svg")

`data.fetch_profile` runs the SQL (the samples inside the chosen spans, as stacks with their time);
`svg` and `speedscope` render a Profile and run none.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import SelfoptTraceError
from .data import Profile, diff_profiles, fetch_profile
from .speedscope import render_speedscope
from .svg import render_svg

FORMATS = ("svg", "speedscope")


def format_for(path: Path, given: str | None) -> str:
    """The output format: given, else from the file's name (.json: speedscope, else svg)."""
    if given is not None:
        if given not in FORMATS:
            raise SelfoptTraceError(f"--format must be svg or speedscope, not {given!r}")
        return given
    return "speedscope" if path.suffix.lower() == ".json" else "svg"


def write_flame(profile: Profile, out: Path, fmt: str | None = None) -> str:
    """Write the flamegraph; returns the format written."""
    chosen = format_for(out, fmt)
    if chosen == "speedscope" and profile.before is not None:
        raise SelfoptTraceError("a differential flamegraph is an SVG: write it to a .svg file")
    text = render_speedscope(profile) if chosen == "speedscope" else render_svg(profile)
    try:
        out.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise SelfoptTraceError(f"cannot write {out}: {exc.strerror or exc}") from exc
    return chosen


__all__ = ["FORMATS", "Profile", "diff_profiles", "fetch_profile", "format_for", "render_speedscope", "render_svg",
           "write_flame"]
