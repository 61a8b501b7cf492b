"""A parent and its child exchange 100 KB pickles through buffered pipes, as jedi's subprocess does.

Usage: pipes.py ROUND_TRIPS. Prints the number of round trips once all came back intact.
"""

import pickle
import subprocess
import sys

if sys.argv[1:] == ["child"]:
    requests, replies = sys.stdin.buffer, sys.stdout.buffer
    while True:
        try:
            message = pickle.load(requests)
        except EOFError:
            sys.exit(0)
        pickle.dump(message, replies, 4)
        replies.flush()

child = subprocess.Popen([sys.executable, __file__, "child"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
payload = b"x" * 100_000  # over a pipe's 64 KB: a write that blocks until the child reads
rounds = int(sys.argv[1])
for number in range(rounds):
    pickle.dump((number, payload), child.stdin, 4)
    child.stdin.flush()
    assert pickle.load(child.stdout) == (number, payload)
child.stdin.close()
print(f"{rounds} round trips, exit status {child.wait()}")
