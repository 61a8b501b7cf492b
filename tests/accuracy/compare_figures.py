"""Two ACCURACY_FIGURES files of the same kept measurements (ACCURACY_REPLAY), figure by figure: how
many moved closer to the truth or farther (by more than 0.3 ms), the summed error of each, and the
figures off in each (tests/accuracy/test_accuracy.py's docstring, docs/queries.md's "Accuracy").
Over several measurements, the AFTER side's steadiest errors too: a figure off by about the same in
each is a bias of the tool (or of the truth), not noise.

    python -m tests.accuracy.compare_figures BEFORE.jsonl AFTER.jsonl [BEFORE2.jsonl AFTER2.jsonl ...]
"""

from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict
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
    after_errors: dict = defaultdict(list)
    for before_path, after_path in zip(paths[::2], paths[1::2]):
        before, after = figures_of(Path(before_path)), figures_of(Path(after_path))
        for key in before.keys() & after.keys():
            figures += 1
            was, now = before[key][0] - before[key][1], after[key][0] - after[key][1]
            summed[0] += abs(was)
            summed[1] += abs(now)
            offs[0] += not close_enough(*before[key])
            offs[1] += not close_enough(*after[key])
            after_errors[key].append(now)
            gain = abs(was) - abs(now)
            if abs(gain) > MOVED_MS:
                (closer if gain > 0 else farther).append((gain, key, was, now))
    print(f"{figures} figures in both; {len(closer)} closer, {len(farther)} farther by more than {MOVED_MS} ms; "
          f"summed error {summed[0]:.1f} -> {summed[1]:.1f} ms; off (test_accuracy.close_enough) {offs[0]} -> {offs[1]}")
    for gain, (test, figure), was, now in sorted(farther)[:10]:
        print(f"  farther {test} {figure}: {was:+.2f} -> {now:+.2f} ms")
    if len(paths) >= 6:  # three measurements or more
        steady = [(statistics.median(found), key) for key, found in after_errors.items() if len(found) >= 3
                  and abs(statistics.median(found)) > MOVED_MS and all(e * statistics.median(found) > 0 for e in found)]
        print(f"AFTER's errors of one sign in every measurement, median over {MOVED_MS} ms: {len(steady)}")
        for median, (test, figure) in sorted(steady, key=lambda item: -abs(item[0]))[:15]:
            print(f"  {median:+.2f} ms {test.rpartition('::')[2]} {figure}")


if __name__ == "__main__":
    main(sys.argv[1:])
