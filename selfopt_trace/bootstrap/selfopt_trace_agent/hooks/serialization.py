"""Serialization spans: json, pickle, dill and pydantic v2 (category "serialization").

Each is patched when first imported (lazy.BUILTIN_HOOKS); small calls are sums, slow ones spans
(hooks/timed.py). Module-level functions are replaced on the module, so `json.dumps(...)` and a
`from json import dumps` executed after the import both see the wrapper; pydantic's methods are
replaced on BaseModel and TypeAdapter.
"""

from __future__ import annotations

from . import timed  # noqa: F401  (first: through hooks/__init__.py's __getattr__, no import statement's audit event)
from .timed import DUMP, LOAD, Call, wrap_attribute

CATEGORY = "serialization"

# module -> (attribute, shape, index of the data argument, its keyword name, leaf: see timed.Call).
# json without keyword arguments (no default=, object_hook=, cls=) is all C; pickle and dill run
# the objects' own __reduce__/__setstate__, which may serialize something else.
_FUNCTIONS = {
    "json": (("dumps", DUMP, 0, "obj", True), ("dump", DUMP, 0, "obj", False), ("loads", LOAD, 0, "s", True),
             ("load", LOAD, 0, "fp", False)),
    "pickle": (("dumps", DUMP, 0, "obj", False), ("dump", DUMP, 0, "obj", False), ("loads", LOAD, 0, "data", False),
               ("load", LOAD, 0, "file", False)),
    "dill": (("dumps", DUMP, 0, "obj", False), ("dump", DUMP, 0, "obj", False), ("loads", LOAD, 0, "str", False),
             ("load", LOAD, 0, "file", False)),
}

# pydantic methods (validators and serializers may run any code): data index counting self/cls
_BASE_MODEL = (
    ("model_dump", DUMP, 0, "self", False),
    ("model_dump_json", DUMP, 0, "self", False),
    ("model_validate", LOAD, 1, "obj", False),
    ("model_validate_json", LOAD, 1, "json_data", False),
)
_TYPE_ADAPTER = (
    ("dump_python", DUMP, 1, "instance", False),
    ("dump_json", DUMP, 1, "instance", False),
    ("validate_python", LOAD, 1, "object", False),
    ("validate_json", LOAD, 1, "data", False),
)


def install(target: str, module) -> None:
    if target == "pydantic.main":
        _wrap_all(module.BaseModel, "pydantic", "pydantic.", _BASE_MODEL)
    elif target == "pydantic.type_adapter":
        _wrap_all(module.TypeAdapter, "pydantic", "pydantic.TypeAdapter.", _TYPE_ADAPTER)
    else:
        _wrap_all(module, target, target + ".", _FUNCTIONS[target])


def _wrap_all(owner, library: str, prefix: str, specs: tuple) -> None:
    for attribute, shape, index, keyword, leaf in specs:
        call = Call(prefix + attribute, CATEGORY, library, attribute, shape, index, keyword, leaf=leaf)
        wrap_attribute(owner, attribute, call)
