"""Named SQL queries: one `.sql` file per question, in `queries/` (shipped in the wheel) and the user's own folders.

Each file opens with a comment that is its documentation, and that this module reads:

    -- What the query answers: the first line is its summary (`selfopt-trace query --list`).
    -- More lines of description.
    --
    -- Parameters:
    --   run_id                the run
    --   limit = 20 [>= 0]     how many rows
    --   order = 'name' ['name', 'time']  sort by name or by time
    --   category: text = null only this category (null: all)
    -- Columns:
    --   name                  what the column holds

A parameter without a default is required; its type is written (`: int|float|text|bool`) or is the
default's. A check in brackets after the default bounds its values: `>= N`, `<= N` (both: `[>= 1,
<= 100]`), or the values allowed (`['name', 'time']`); a value outside is a one-line error before
any SQL runs, as is an int beyond DuckDB's BIGINT or a float that is not finite (null is always
allowed: it means "not given"). In the SQL, parameters are DuckDB named parameters (`$limit`):
values are bound, never pasted into the text as given (a query planned ahead, PlannedQuery, has
the checked values written in as typed, quoted literals). The SQL runs as the whole file, so an
error's `LINE n` is the file's line.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterable, Mapping

from .background import Background
from .errors import QueryError, SelfoptTraceError

_TYPES = {"int": int, "float": float, "text": str, "bool": bool}
_PARAMETER = re.compile(r"^(?P<name>[A-Za-z_]\w*)(?:\s*:\s*(?P<type>\w+))?(?:\s*=\s*(?P<default>'[^']*'|\S+))?"
                        r"(?:\s*\[(?P<check>[^\]]*)\])?(?:\s{2,}(?P<doc>.*))?$")
_BOUND = re.compile(r"^(?P<op>>=|<=)\s*(?P<number>\S+)$")
_BIGINT = (-2 ** 63, 2 ** 63 - 1)  # DuckDB binds a Python int as BIGINT: beyond, a multi-line Conversion Error
_COLUMN = re.compile(r"^(?P<name>\S+)(?:\s{2,}(?P<doc>.*))?$")
_USED = re.compile(r"\$([A-Za-z_]\w*)")
_LINE = re.compile(r"\bLINE (\d+):")
_REQUIRED = object()


class QueryNotFoundError(SelfoptTraceError):
    """No query of that name; the message lists the ones that exist."""

    def __init__(self, name: str, available: Iterable[str]) -> None:
        names = ", ".join(sorted(available)) or "none"
        super().__init__(f"no query named {name!r}; available: {names}")
        self.name = name


class QueryDefinitionError(SelfoptTraceError):
    """A .sql file whose header cannot be read (names the file and line)."""


@dataclass(frozen=True)
class Parameter:
    name: str
    type: type
    default: Any  # _REQUIRED when there is none
    description: str
    choices: tuple[Any, ...] = ()  # the values allowed (none: any)
    minimum: float | None = None  # inclusive bounds
    maximum: float | None = None

    @property
    def required(self) -> bool:
        return self.default is _REQUIRED

    def convert(self, value: Any) -> Any:
        """A value from the command line (a string) or Python, as this parameter's type, checked."""
        given = value
        if isinstance(value, str) and self.type is not str:
            if value.lower() == "null":
                return None
            try:
                if self.type is bool:
                    value = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}[value.lower()]
                else:
                    value = self.type(value)
            except (KeyError, ValueError) as exc:
                raise QueryError(f"parameter {self.name} must be {_type_name(self.type)}, not {value!r}") from exc
        problem = self.problem(value)
        if problem:
            raise QueryError(f"parameter {self.name} must be {problem}, not {given!r}")
        return value

    def problem(self, value: Any) -> str | None:
        """What `value` should have been, when it is not allowed; None when it is (null always is)."""
        if value is None or isinstance(value, bool):
            return None
        if self.choices and value not in self.choices:
            return "one of " + ", ".join(map(repr, self.choices))
        if isinstance(value, float) and not math.isfinite(value):
            return "a finite number"
        low, high = self.minimum, self.maximum
        if isinstance(value, int):  # within BIGINT too: DuckDB's error for more is no one-liner
            low = _BIGINT[0] if low is None else max(low, _BIGINT[0])
            high = _BIGINT[1] if high is None else min(high, _BIGINT[1])
        if isinstance(value, (int, float)) and low is not None and value < low:
            return f">= {_number(low)}"
        if isinstance(value, (int, float)) and high is not None and value > high:
            return f"<= {_number(high)}"
        return None


@dataclass(frozen=True)
class Column:
    name: str
    description: str


@dataclass(frozen=True)
class Query:
    name: str
    path: Path
    summary: str  # the header's first line
    description: str  # the whole description, in paragraphs
    parameters: tuple[Parameter, ...]
    columns: tuple[Column, ...]
    sql: str

    def bind(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """The parameters to pass to DuckDB: given values converted, defaults filled in."""
        known = {parameter.name for parameter in self.parameters}
        unknown = sorted(set(values) - known)
        if unknown:
            raise QueryError(f"query {self.name} has no parameter {', '.join(unknown)}; "
                             f"its parameters: {', '.join(sorted(known)) or 'none'}")
        bound = {}
        for parameter in self.parameters:
            if parameter.name in values:
                bound[parameter.name] = parameter.convert(values[parameter.name])
            elif parameter.required:
                raise QueryError(f"query {self.name} needs the parameter {parameter.name} ({parameter.description})")
            else:
                bound[parameter.name] = parameter.default
        return bound

    def written_with(self, bound: Mapping[str, Any]) -> str:
        """The SQL with `bound` (bind's values) written in as literals, for a statement planned once
        ahead of its execution (PlannedQuery): DuckDB binds a prepared statement whose parameters
        reach a table macro again at every execution."""
        return _USED.sub(lambda used: _sql_literal(bound[used[1]]) if used[1] in bound else used[0], self.sql)


@dataclass(frozen=True)
class QueryResult:
    query: Query
    columns: list[str]
    rows: list[tuple]

    def records(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, row)) for row in self.rows]


class PlannedQuery:
    """A named query bound and planned now, on a connection of its own and in a thread, and run later
    (`result()`), once the store's own connection has loaded what it reads: `run` plans a small run's
    breakdown beside its load, where binding and planning it (its table macros, ~1,200 operators) took
    ~40 ms of its ~75 (docs/benchmarks.md, "Command line"). The execution reads the data as it is
    then; DuckDB binds the statement again if the tables or macros changed in between. `close()`
    when done, run or not."""

    def __init__(self, store, name: str, params: Mapping[str, Any], unoptimized: bool) -> None:
        self.query = get_query(name)
        self.unoptimized = unoptimized  # planned without DuckDB's optimizer (Store.planned_unoptimized)
        self._cursor = store.cursor()
        self._planning = Background(self._plan, self.query.written_with(self.query.bind(params)))

    def _plan(self, sql: str) -> None:
        with self._cursor.planned_unoptimized(self.unoptimized):
            self._cursor.sql("PREPARE planned AS " + sql)  # on line 1: an error's LINE is still the file's

    def result(self) -> QueryResult:
        try:
            self._planning.result()
            columns, rows = self._cursor.sql("EXECUTE planned")
        except QueryError as exc:
            raise QueryError(_located(self.query, str(exc))) from exc
        return QueryResult(self.query, columns, rows)

    def close(self) -> None:
        self._planning.join()
        self._cursor.close()


def _sql_literal(value: Any) -> str:
    """A bound value as the SQL literal of the type DuckDB binds it as: str VARCHAR, int INTEGER or
    BIGINT as its literal is (bind checked its range), float DOUBLE (finite), not a DECIMAL literal."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value!r}::DOUBLE"
    return "'" + str(value).replace("'", "''") + "'::VARCHAR"


def builtin_dir() -> Path:
    """The shipped queries: `selfopt_trace/_queries` in a wheel, the top-level `queries/` in a checkout."""
    packaged = Path(__file__).resolve().parent / "_queries"
    return packaged if packaged.is_dir() else Path(__file__).resolve().parent.parent / "queries"


def load_queries(extra_dirs: Iterable[Path | str] = (),
                 bad: list[QueryDefinitionError] | None = None) -> dict[str, Query]:
    """Every query by name: the shipped ones, then each extra folder's (a later file of the same name wins).

    A file that cannot be read raises QueryDefinitionError; given `bad`, its error is appended there
    instead and its name left out (also a shipped query it would have replaced), so one broken file
    does not hide the rest."""
    queries: dict[str, Query] = {}
    for directory in (builtin_dir(), *map(Path, extra_dirs)):
        if not directory.is_dir():
            raise QueryDefinitionError(f"queries folder not found: {directory}")
        for path in sorted(directory.glob("*.sql")):
            if not path.is_file():  # a folder named x.sql
                continue
            try:
                query = parse_query(path)
            except QueryDefinitionError as exc:
                if bad is None:
                    raise
                bad.append(exc)
                queries.pop(path.stem, None)
                continue
            queries[query.name] = query
    return queries


def get_query(name: str, extra_dirs: Iterable[Path | str] = ()) -> Query:
    """The query `name` as load_queries would give it (the last folder holding NAME.sql wins), reading
    only that file: the summary of every run asks for one query of many."""
    directories = [builtin_dir(), *map(Path, extra_dirs)]
    for directory in directories:
        if not directory.is_dir():
            raise QueryDefinitionError(f"queries folder not found: {directory}")
    for directory in reversed(directories):
        path = directory / f"{name}.sql"
        if path.is_file() and path.parent == directory:  # a name with a slash is no query's name
            return parse_query(path)
    raise QueryNotFoundError(name, load_queries(extra_dirs, bad=[]))  # a broken file is not what was asked for


def parse_query(path: Path) -> Query:
    """Read a .sql file and its header comment."""
    try:
        sql = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        line = exc.object.count(b"\n", 0, exc.start) + 1
        raise QueryDefinitionError(f"{path}:{line}: not UTF-8 text (byte {exc.object[exc.start]:#04x}); "
                                   "save the file as UTF-8") from exc
    except OSError as exc:
        raise QueryDefinitionError(f"{path}: cannot read it: {exc.strerror or exc}") from exc
    description: list[str] = []
    parameters: list[Parameter] = []
    columns: list[Column] = []
    section = "description"
    item_indent = 0
    for number, line in enumerate(sql.splitlines(), 1):
        if not line.startswith("--"):
            break
        raw = line[2:].rstrip()
        text = raw.strip()
        indent = len(raw) - len(raw.lstrip())
        if text.lower() in ("parameters:", "columns:"):
            section, item_indent = text.lower().rstrip(":"), 0
        elif section == "description":
            description.append(text)
        elif text and item_indent and indent > item_indent:  # a description going on
            _continue_item(parameters if section == "parameters" else columns, text)
        elif text:
            item_indent = indent
            _header_item(path, number, section, text, parameters, columns)
    if not description or not description[0]:
        raise QueryDefinitionError(f"{path}:1: a query starts with a comment saying what it answers")
    declared = {parameter.name for parameter in parameters}
    undeclared = sorted(set(_USED.findall(_without_comments(sql))) - declared)
    if undeclared:
        raise QueryDefinitionError(f"{path}: uses ${', $'.join(undeclared)} but its header's Parameters do not declare it")
    return Query(path.stem, path, description[0], _paragraphs(description), tuple(parameters), tuple(columns), sql)


def _header_item(path: Path, number: int, section: str, text: str,
                 parameters: list[Parameter], columns: list[Column]) -> None:
    if section == "columns":
        column = _COLUMN.match(text)
        assert column is not None  # any non-empty text matches
        columns.append(Column(column["name"], column["doc"] or ""))
        return
    match = _PARAMETER.match(text)
    if match is None:
        raise QueryDefinitionError(f"{path}:{number}: cannot read the parameter line {text!r} "
                                   "(expected: name[: type] [= default]  description)")
    type_name = match["type"]
    if type_name is not None and type_name not in _TYPES:
        raise QueryDefinitionError(f"{path}:{number}: unknown type {type_name!r} (one of {', '.join(_TYPES)})")
    default = _REQUIRED if match["default"] is None else _literal(path, number, match["default"])
    kind = _TYPES[type_name] if type_name else (type(default) if default not in (_REQUIRED, None) else str)
    parameter = Parameter(match["name"], kind, default, match["doc"] or "")
    if match["check"] is not None:
        parameter = _with_check(path, number, parameter, match["check"])
    parameters.append(parameter)


def _with_check(path: Path, number: int, parameter: Parameter, check: str) -> Parameter:
    """The parameter with its bracketed check (`>= 0`, `>= 1, <= 9`, `'a', 'b'`), which its default passes."""
    choices: list[Any] = []
    bounds: dict[str, float] = {}
    for item in (part.strip() for part in check.split(",")):
        bound = _BOUND.match(item)
        try:
            value = _literal(path, number, bound["number"] if bound else item)
        except QueryDefinitionError:
            value = None  # said below, as a check that cannot be read
        if bound and isinstance(value, (int, float)) and not isinstance(value, bool) and parameter.type in (int, float):
            bounds[bound["op"]] = value
        elif not bound and value is not None and isinstance(value, parameter.type):
            choices.append(value)
        else:
            raise QueryDefinitionError(f"{path}:{number}: cannot read the check {item!r} of {parameter.name} "
                                       f"(expected: >= N, <= N, or {_type_name(parameter.type)} values)")
    if choices and bounds:
        raise QueryDefinitionError(f"{path}:{number}: {parameter.name}: give either the values allowed or bounds")
    checked = replace(parameter, choices=tuple(choices), minimum=bounds.get(">="), maximum=bounds.get("<="))
    problem = None if checked.required else checked.problem(checked.default)
    if problem:
        raise QueryDefinitionError(f"{path}:{number}: the default of {parameter.name} must be {problem}")
    return checked


def _continue_item(items: list, text: str) -> None:
    items[-1] = replace(items[-1], description=f"{items[-1].description} {text}".strip())


def _literal(path: Path, number: int, text: str) -> Any:
    if text.startswith("'"):
        return text[1:-1]
    lowered = text.lower()
    if lowered in ("null", "true", "false"):
        return {"null": None, "true": True, "false": False}[lowered]
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    raise QueryDefinitionError(f"{path}:{number}: default {text!r} is not a number, 'text', true, false or null")


def _paragraphs(lines: list[str]) -> str:
    """Header lines joined into paragraphs (a blank comment line separates two)."""
    paragraphs = " ".join(line or "\n\n" for line in lines).split("\n\n")
    return "\n\n".join(" ".join(p.split()) for p in paragraphs if p.strip())


def _without_comments(sql: str) -> str:
    return "\n".join(line.split("--", 1)[0] for line in sql.splitlines())


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _type_name(kind: type) -> str:
    return next(name for name, value in _TYPES.items() if value is kind)


def run_query(store, name: str | Query, params: Mapping[str, Any] | None = None,
              extra_dirs: Iterable[Path | str] = ()) -> QueryResult:
    """Run a named query (or a loaded `Query`) against a `Store`; errors name the file and line."""
    query = name if isinstance(name, Query) else get_query(name, extra_dirs)
    bound = query.bind(params or {})
    # A shipped query (not one of a `--queries` folder, whose plan is unknown) on a small store is
    # planned without DuckDB's optimizer, as the summary's are: tests/queries check it gives the same rows
    shipped = query.path.parent == builtin_dir()
    try:
        with store.planned_unoptimized(shipped and store.is_small()):
            columns, rows = store.sql(query.sql, bound)
    except QueryError as exc:
        raise QueryError(_located(query, str(exc))) from exc
    return QueryResult(query, columns, rows)


def missing_data(store, query: str | Query, run_id: str) -> str | None:
    """Why a query that reads what only some runs record would find none in this run: profile samples
    (its summary says `run --profile`, or `--profile --idle`: not profiled, or not with --idle), the
    garbage collector's passes (it says SELFOPT_TRACE_GC=1: not timed). None when the run has what the
    query reads, or the query reads nothing of the kind."""
    query = query if isinstance(query, Query) else get_query(query)
    if "SELFOPT_TRACE_GC=1" in query.summary:
        _, [(timed,)] = store.sql("SELECT count(*) FROM spans WHERE run_id = $run_id AND category = 'process' "
                                  "AND (attributes->'python.gc.collections') IS NOT NULL", {"run_id": run_id})
        return None if timed else (f"run {run_id} did not time the garbage collector's passes: "
                                   "`SELFOPT_TRACE_GC=1 selfopt-trace run -- CMD` times them")
    if "run --profile" not in query.summary:
        return None
    _, [(samples, idle)] = store.sql("SELECT count(*), count(*) FILTER (WHERE idle) FROM samples WHERE run_id = $run_id",
                                     {"run_id": run_id})
    needs_idle = "--idle" in query.summary
    if not samples:
        return (f"run {run_id} has no profile samples: `selfopt-trace run --profile{' --idle' if needs_idle else ''}"
                " -- CMD` records them")
    if needs_idle and not idle:
        return f"run {run_id} was profiled without --idle, which keeps the samples of waiting threads this query reads"
    return None


def _located(query: Query, message: str) -> str:
    """DuckDB's message prefixed by the query file and, where DuckDB says it, the line."""
    line = _LINE.search(message)
    where = f"{query.path}:{line.group(1)}" if line else str(query.path)
    return f"query {query.name} failed ({where}): {message}"
