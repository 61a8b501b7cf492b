"""End-to-end tests: the real codeflash CLI, traced, against a local stand-in of its services."""

collect_ignore = ["toy"]  # the project codeflash optimizes, with its own tests: not ours to collect


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "e2e: runs the real codeflash CLI end to end (about a minute)")
