"""Signals reach CMD as they would untraced: forwarded when sent to us, never twice from a terminal."""

from __future__ import annotations

import fcntl
import os
import select
import signal
import subprocess
import termios
import time

from tests.cli.conftest import clean_environ, python

# Counts the signals it gets, then reports them and exits 7. Python runs a handler once for signals
# that arrive close together, so deliveries are counted from the wakeup fd: one byte per delivery.
COUNTER = r"""
import os, signal, sys, time
read_end, write_end = os.pipe()
os.set_blocking(write_end, False)
signal.set_wakeup_fd(write_end)
for name in ("SIGINT", "SIGTERM", "SIGHUP", "SIGUSR1"):
    signal.signal(getattr(signal, name), lambda s, f: None)
print("ready", flush=True)
got = b""
deadline = time.time() + 20
while not got and time.time() < deadline:
    time.sleep(0.01)
    os.set_blocking(read_end, False)
    try:
        got = os.read(read_end, 100)
    except BlockingIOError:
        pass
time.sleep(0.5)  # a second delivery would have arrived by now
try:
    got += os.read(read_end, 100)
except BlockingIOError:
    pass
print("got", ",".join(signal.Signals(n).name for n in got), flush=True)
sys.exit(7)
"""

SLEEPER = "import time; print('ready', flush=True); time.sleep(30)"


SENT = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1)


def default_dispositions() -> None:
    """The signals sent here as a shell leaves them, whatever this test run inherited (under
    `nohup` SIGHUP is ignored, and then rightly not forwarded)."""
    for signum in SENT:
        signal.signal(signum, signal.SIG_DFL)


def start(cli, code: str) -> subprocess.Popen:
    # A new session: no controlling terminal, as under CI, so signals to us are forwarded.
    process = cli.popen("run", "-q", "--no-load", "--", *python(code), stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE, start_new_session=True, preexec_fn=default_dispositions)
    assert process.stdout.readline() == b"ready\n"
    return process


def test_sigint_and_sigterm_sent_to_us_reach_the_command_once(cli):
    for signum in SENT:
        process = start(cli, COUNTER)
        process.send_signal(signum)
        out, err = process.communicate(timeout=30)
        assert (out, err, process.returncode) == (f"got {signum.name}\n".encode(), b"", 7)


def test_sigterm_kills_the_command_and_us_with_it(cli):
    process = start(cli, SLEEPER)
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=30)
    assert process.returncode == -signal.SIGTERM


def test_ctrl_c_without_handler_ends_like_untraced(cli):
    process = start(cli, SLEEPER)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=30)
    assert process.returncode == -signal.SIGINT  # Python dies of SIGINT after KeyboardInterrupt, so do we
    assert err.rstrip().endswith(b"KeyboardInterrupt")


def _read_until(fd: int, marker: bytes, timeout: float = 30) -> bytes:
    data = b""
    deadline = time.monotonic() + timeout
    while marker not in data and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # EIO: the terminal's other side closed
                break
            if not chunk:
                break
            data += chunk
    return data


def _ctrl_c_in_a_terminal(argv: list[str], env: dict[str, str], cwd) -> tuple[bytes, int]:
    """Run argv as the foreground job of a new pseudo-terminal, press Ctrl-C once it is ready."""
    master, slave = os.openpty()

    def take_terminal() -> None:  # in the child, after setsid: the pty becomes its controlling terminal
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    process = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, start_new_session=True,
                               preexec_fn=take_terminal, cwd=cwd, env=env)
    os.close(slave)
    try:
        output = _read_until(master, b"ready")
        assert b"ready" in output, output
        os.write(master, b"\x03")
        output += _read_until(master, b"got")
        output += _read_until(master, b"\n")
        return output, process.wait(timeout=30)
    finally:
        os.close(master)


def test_ctrl_c_in_a_terminal_reaches_the_command(cli):
    output, code = _ctrl_c_in_a_terminal(cli.argv("run", "-q", "--no-load", "--", *python(COUNTER)), cli.env(), cli.cwd)
    assert b"got SIGINT\r\n" in output, output
    assert code == 7


def test_ctrl_c_from_the_terminal_is_not_forwarded(cli):
    """The terminal signals its foreground group only, so a command that left that group gets no Ctrl-C
    untraced (the kernel's rule), and none traced either: we never add a second delivery of the
    terminal's own signal. (Proving "exactly once" directly is not possible: the kernel merges two
    SIGINTs that are pending at the same time.)"""
    own_group = python("import os; os.setpgid(0, 0)\n" + COUNTER.replace("deadline = time.time() + 20", "deadline = time.time() + 1.5"))
    traced, code = _ctrl_c_in_a_terminal(cli.argv("run", "-q", "--no-load", "--", *own_group), cli.env(), cli.cwd)
    assert b"got \r\n" in traced and code == 7, traced


def test_an_ignored_signal_stays_ignored_for_the_command(cli):
    """Started with SIGHUP ignored (nohup), CMD inherits that, as it would from a shell."""
    probe = python("import signal; print(signal.getsignal(signal.SIGHUP) == signal.SIG_IGN)")

    def ignore_hup() -> None:
        signal.signal(signal.SIGHUP, signal.SIG_IGN)

    untraced = subprocess.run(probe, capture_output=True, env=clean_environ(), preexec_fn=ignore_hup, timeout=60)
    traced = subprocess.run(cli.argv("run", "-q", "--no-load", "--", *probe), capture_output=True, env=cli.env(),
                            cwd=cli.cwd, preexec_fn=ignore_hup, timeout=60)
    assert untraced.stdout == b"True\n"
    assert traced.stdout == untraced.stdout, traced.stderr
