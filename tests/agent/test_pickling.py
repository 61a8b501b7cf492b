"""The functions the agent wraps pickle as untraced: pickle finds a function by its module and
qualified name and must find that very function there, so `ProcessPoolExecutor.map(time.sleep, ...)`
and `pool.map(os.system, ...)` failed under the tracer (PicklingError: the wrapper named itself after
the agent's module). Real programs, traced and untraced, byte for byte."""

from __future__ import annotations

# Each hooked function, before and after its first call, then handed to a process pool.
PROGRAM = """
import asyncio, concurrent.futures, http.client, http.server, importlib, json, os, pickle, signal
import subprocess, threading, time
from asyncio import sleep as bound_early

HOOKED = ["time.sleep", "os.waitpid", "os.system", "os.fork", "os.posix_spawn", "os._exit", "json.dumps",
          "json.loads", "pickle.dumps", "pickle.loads",
          "signal.signal", "signal.getsignal", "asyncio.sleep", "asyncio.tasks.sleep", "asyncio.wrap_future",
          "concurrent.futures.wait", "concurrent.futures.as_completed", "concurrent.futures.Future.result",
          "threading.Thread.start", "threading.Thread.join", "subprocess.Popen.wait",
          "http.client.HTTPConnection.getresponse", "http.server.BaseHTTPRequestHandler.handle_one_request"]

def found(path):
    module, _, rest = path.partition(".")
    obj = importlib.import_module(module)
    for part in rest.split("."):
        obj = getattr(obj, part, None) or importlib.import_module(obj.__name__ + "." + part)
    return obj

def check(when):
    for path in HOOKED:
        function = found(path)
        try:
            print(when, path, pickle.loads(pickle.dumps(function)) is function)
        except Exception as exc:
            print(when, path, type(exc).__name__)

if __name__ == "__main__":
    check("before")
    print(pickle.loads(pickle.dumps(bound_early)) is bound_early)
    asyncio.run(asyncio.sleep(0.001))
    concurrent.futures.wait([])
    thread = threading.Thread(target=int); thread.start(); thread.join()
    subprocess.run(["true"])
    json.loads(json.dumps([1]))
    signal.getsignal(signal.SIGINT)
    server = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    serving = threading.Thread(target=server.handle_request); serving.start()
    client = http.client.HTTPConnection("127.0.0.1", server.server_address[1])
    client.request("GET", "/"); client.getresponse().read(); serving.join(); server.server_close()
    check("after")
    with concurrent.futures.ProcessPoolExecutor(2) as pool:
        print(list(pool.map(time.sleep, [0.01, 0.01])), list(pool.map(os.system, ["true", "exit 3"])))
"""


def test_hooked_functions_pickle_as_untraced(traced) -> None:
    untraced, done = traced.both_ways("program.py", PROGRAM)
    assert untraced.returncode == 0, untraced.stderr
    assert b"Error" not in untraced.stdout and b"False" not in untraced.stdout  # all pickle untraced
    assert (done.returncode, done.stdout) == (0, untraced.stdout), done.stderr
