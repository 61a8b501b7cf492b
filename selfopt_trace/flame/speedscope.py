"""A Profile as speedscope JSON (https://www.speedscope.app, file format schema): one sampled profile."""

from __future__ import annotations

import json

from .. import __version__
from .data import Frame, Profile


def render_speedscope(profile: Profile) -> str:
    """Each distinct stack once, weighted by the milliseconds its samples stand for."""
    index: dict[Frame, int] = {}
    frames: list[dict] = []
    samples: list[list[int]] = []
    weights: list[float] = []
    for stack, (_, ns) in sorted(profile.stacks.items()):
        ids = []
        for frame in stack:
            if frame not in index:
                index[frame] = len(frames)
                frames.append({"name": frame[0], "file": frame[1]} if frame[1] else {"name": frame[0]})
            ids.append(index[frame])
        samples.append(ids)
        weights.append(round(ns / 1e6, 6))
    total = round(sum(weights), 6)
    document = {
        "$schema": "https://www.speedscope.app/file-format-schema.json",
        "name": profile.title,
        "exporter": f"selfopt-trace {__version__}",
        "activeProfileIndex": 0,
        "shared": {"frames": frames},
        "profiles": [{"type": "sampled", "name": profile.title, "unit": "milliseconds", "startValue": 0,
                      "endValue": total, "samples": samples, "weights": weights}],
    }
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False) + "\n"
