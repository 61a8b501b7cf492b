"""One module per patched target. Each `install` is idempotent and never raises into the program."""

from ..importtime import submodule


def __getattr__(name: str):
    """`from . import <hook module>` of one not loaded yet: run from the lazy bundle (importtime.submodule)."""
    return submodule(__name__, name)
