"""Serialization spans: json, pickle, dill and pydantic v2 (category "serialization").

Each is patched when first imported (lazy.BUILTIN_HOOKS); small calls are sums, slow ones spans
(hooks/timed.py). Module-level functions are replaced on the module, so `json.dumps(...)` and a
`from json import dumps` executed after the import both see the wrapper; pydantic's methods are
replaced on BaseModel and TypeAdapter.
"""

from __future__ import annotations

from .timed import DUMP, LOAD, Call, wrap_attribute

CATEGORY = "serialization"

# module -> (attribute, shape, index of the data argument, its keyword name)
_FUNCTIONS = {
    "json": (("dumps", DUMP, 0, "obj"), ("dump", DUMP, 0, "obj"), ("loads", LOAD, 0, "s"), ("load", LOAD, 0, "fp")),
    "pickle": (("dumps", DUMP, 0, "obj"), ("dump", DUMP, 0, "obj"), ("loads", LOAD, 0, "data"), ("load", LOAD, 0, "file")),
    "dill": (("dumps", DUMP, 0, "obj"), ("dump", DUMP, 0, "obj"), ("loads", LOAD, 0, "str"), ("load", LOAD, 0, "file")),
}

# pydantic methods: (attribute, shape, data index counting self/cls, keyword name)
_BASE_MODEL = (
    ("model_dump", DUMP, 0, "self"),
    ("model_dump_json", DUMP, 0, "self"),
    ("model_validate", LOAD, 1, "obj"),
    ("model_validate_json", LOAD, 1, "json_data"),
)
_TYPE_ADAPTER = (
    ("dump_python", DUMP, 1, "instance"),
    ("dump_json", DUMP, 1, "instance"),
    ("validate_python", LOAD, 1, "object"),
    ("validate_json", LOAD, 1, "data"),
)


def install(target: str, module) -> None:
    if target == "pydantic.main":
        _wrap_all(module.BaseModel, "pydantic", "pydantic.", _BASE_MODEL)
    elif target == "pydantic.type_adapter":
        _wrap_all(module.TypeAdapter, "pydantic", "pydantic.TypeAdapter.", _TYPE_ADAPTER)
    else:
        _wrap_all(module, target, target + ".", _FUNCTIONS[target])


def _wrap_all(owner, library: str, prefix: str, specs: tuple) -> None:
    for attribute, shape, index, keyword in specs:
        call = Call(prefix + attribute, CATEGORY, library, attribute, shape, index, keyword)
        wrap_attribute(owner, attribute, call)
