"""Headless Chromium from the command line: the DOM after scripts ran, console messages, screenshots."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

BROWSER = next((shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome") if shutil.which(name)),
               None)
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--allow-file-access-from-files",
         "--enable-logging=stderr", "--v=0", "--virtual-time-budget=10000", "--window-size=1400,1000"]
_CONSOLE = re.compile(r":CONSOLE[:(]\d*\)?\] (.*)")


@dataclass
class Page:
    dom: str
    console: list[str]  # every console message and uncaught error the page produced

    def body_data(self) -> dict[str, str]:
        body = re.search(r"<body([^>]*)>", self.dom)
        assert body, self.dom[:500]
        return {m[0]: m[1] for m in re.findall(r'data-([a-z0-9-]+)="([^"]*)"', body.group(1))}


def open_page(path: Path, user_data: Path) -> Page:
    done = subprocess.run([BROWSER, *FLAGS, f"--user-data-dir={user_data}", "--dump-dom", path.as_uri()],
                          capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
    stderr = done.stderr.decode(errors="replace")
    return Page(done.stdout.decode(errors="replace"), [m.group(1) for m in _CONSOLE.finditer(stderr)])


def screenshot(path: Path, out: Path, user_data: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    done = subprocess.run([BROWSER, *FLAGS, f"--user-data-dir={user_data}", f"--screenshot={out}", path.as_uri()],
                          capture_output=True, timeout=120)
    assert done.returncode == 0 and out.stat().st_size > 10_000, done.stderr.decode(errors="replace")[-2000:]
