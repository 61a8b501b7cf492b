"""What a person calls a process: one short name from its command line (docs/agent.md, "Process names").

The one rule: the agent records it as `process.command` on every process span (its service.name too,
unless one is set) and subprocess span, and everything else reads it from there (the `subprocess` and
`process_tree` queries, the summary, `tree`, the report, the exports and Jaeger's service list).

    python app.py --x                                     app.py
    python -m pytest -q                                   pytest
    /venv/bin/python /venv/bin/codeflash --file f.py      codeflash            (a console script)
    python -c "import sys; sys.path.insert(0, p); from tool.cli import main; main()"
                                                          python -c from tool.cli import main
    python .../jedi/inference/compiled/subprocess/__main__.py
                                                          subprocess/__main__.py
    sh -c "make -j4 && ./check"                           sh -c make -j4 && ./check
    git status --short                                    git status
    python                                                python

String operations only, no `re`: this runs in every traced process's start-up.
"""

from __future__ import annotations

CODE_CHARS = 60  # of a -c program, at most this much is in the name (then "…")
_SHELLS = ("sh", "bash", "dash", "zsh", "ksh", "ash", "busybox")


def command_name(args: list, python: bool = False) -> str:
    """The name of the process `args` starts (`python`: args is a Python interpreter's command line)."""
    return split_command(args, python)[0]


def split_command(args: list, python: bool = False) -> tuple:
    """(name, the arguments after what the name stands for): `python -m pytest -q` -> ("pytest", ["-q"])."""
    if not args:
        return "python" if python else "", []
    program = _basename(str(args[0]))
    if python or program.startswith(("python", "pypy")):
        kind, target, rest = python_main(args)
        if kind == "command":
            return ("python -c " + code_summary(target)).rstrip(), args[rest:]
        if kind == "module":
            return target, args[rest:]
        if kind == "script":
            return script_name(target), args[rest:]
        return program or "python", args[rest:]
    if program in _SHELLS and len(args) > 2 and args[1] == "-c":
        return (program + " -c " + code_summary(str(args[2]))).rstrip(), args[3:]
    if len(args) > 1 and not str(args[1]).startswith("-") and len(str(args[1])) <= 32 and "/" not in str(args[1]):
        return program + " " + str(args[1]), args[2:]  # git status, docker run, pip install
    return program, args[1:]


def python_main(args: list) -> tuple:
    """(kind, target, index of the program's first argument) of a Python command line, by CPython's
    option parser: kind is "command" (-c CODE), "module" (-m MOD), "script" (a file), "stdin" or ""."""
    i = 1
    while i < len(args):
        arg = str(args[i])
        if arg == "--":
            return ("script", str(args[i + 1]), i + 2) if i + 1 < len(args) else ("stdin", "", i + 1)
        if arg == "-":
            return "stdin", "", i + 1
        if not arg.startswith("-"):
            return "script", arg, i + 1
        if arg.startswith("--"):
            i += 2 if arg == "--check-hash-based-pycs" else 1
            continue
        for j in range(1, len(arg)):
            letter = arg[j]
            if letter in "cm":
                kind = "command" if letter == "c" else "module"
                if j + 1 < len(arg):  # -cCODE, -mMOD
                    return kind, arg[j + 1:], i + 1
                return kind, (str(args[i + 1]) if i + 1 < len(args) else ""), i + 2
            if letter in "WX":
                if j == len(arg) - 1:
                    i += 1  # -W ignore: the value is the next argument
                break
        i += 1
    return "", "", len(args)


def script_name(path: str) -> str:
    """A script's file name; a package's __main__.py with its package's."""
    name = _basename(path)
    if name in ("__main__.py", "__init__.py"):
        parent = _basename(path[:len(path) - len(name)].rstrip("/"))
        if parent:
            return parent + "/" + name
    return name or path


def code_summary(code: str) -> str:
    """A -c program in a few words: its first statement that is not a plain import or a sys.path
    change (else its first), on one line, at most CODE_CHARS characters."""
    first = ""
    start = 0
    length = len(code)
    while start < length:
        end = code.find("\n", start)
        if end < 0:
            end = length
        for statement in _statements(code[start:end]):
            if not first:
                first = statement
            if not statement.startswith(("import ", "sys.path.", "from __future__ ")):
                return _cut(statement)
        start = end + 1
    return _cut(first)


def _statements(line: str) -> list:
    """The statements of one line (`a; b`), outside quotes; comments and blanks left out."""
    out = []
    quote = ""
    begin = 0
    for i, char in enumerate(line):
        if quote:
            if char == quote and line[i - 1] != "\\":
                quote = ""
        elif char in "'\"":
            quote = char
        elif char == "#":
            line = line[:i]
            break
        elif char == ";":
            out.append(line[begin:i])
            begin = i + 1
    out.append(line[begin:])
    return [s for s in (" ".join(part.split()) for part in out) if s]


def _cut(text: str) -> str:
    return text if len(text) <= CODE_CHARS else text[:CODE_CHARS - 1] + "…"


def _basename(path: str) -> str:
    return path.rpartition("/")[2]
