"""Two ACCURACY_FIGURES files of the same kept measurements (ACCURACY_REPLAY), figure by figure: how
many moved closer to the truth or farther (by more than 0.3 ms), the summed error of each, and the
figures off in each (tests/accuracy/test_accuracy.py's docstring, docs/queries.md's "Accuracy").

    python -m tests.accuracy.compare_figures BEFORE.jsonl AFTER.jsonl [BEFORE2.jsonl AFTER2.jsonl ...]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tests.accuracy.test_accuracy import close_enough

MOVED_MS = 0.3


def figures_of(path: Path) -> dict[tuple[str, str], tuple[float, float]]:
    """(test, figure) -> (measured, truth), ms. A replay measures each test once."""
    found = {}
    for line in path.read_text().splitlines():
        record = json.loads(line)
        for figure, pair in record["figures"].items():
            found[record["test"], figure] = tuple(pair)
    return found


def main(paths: list[str]) -> None:
    if len(paths) < 2 or len(paths) % 2:
        sys.exit(__doc__)
    closer, farther, summed, offs, figures = [], [], [0.0, 0.0], [0, 0], 0
    for before_path, after_path in zip(paths[::2], paths[1::2]):
        before, after = figures_of(Path(before_path)), figures_of(Path(after_path))
        for key in before.keys() & after.keys():
            figures += 1
            was, now = before[key][0] - before[key][1], after[key][0] - after[key][1]
            summed[0] += abs(was)
            summed[1] += abs(now)
            offs[0] += not close_enough(*before[key])
            offs[1] += not close_enough(*after[key])
            gain = abs(was) - abs(now)
            if abs(gain) > MOVED_MS:
                (closer if gain > 0 else farther).append((gain, key, was, now))
    print(f"{figures} figures in both; {len(closer)} closer, {len(farther)} farther by more than {MOVED_MS} ms; "
          f"summed error {summed[0]:.1f} -> {summed[1]:.1f} ms; off (test_accuracy.close_enough) {offs[0]} -> {offs[1]}")
    for gain, (test, figure), was, now in sorted(farther)[:10]:
        print(f"  farther {test} {figure}: {was:+.2f} -> {now:+.2f} ms")


if __name__ == "__main__":
    main(sys.argv[1:])
