"""Parsing spans ("AST analysis"): ast.parse, compile, libcst, jedi and tree-sitter; small calls summed."""

from __future__ import annotations

import pytest

from tests.agent.serialization.programs import Program, process, sums


@pytest.fixture
def program(traced, tmp_path) -> Program:
    return Program(traced, tmp_path)


AST = """
import ast
source = "def f(x):\\n    return [i * x for i in range(10)]\\n" * 3000
tree = ast.parse(source, "generated.py")  # PARSE
code = compile(source, "compiled.py", "exec")  # COMPILE
namespace = {}
exec(compile(tree, "from_tree.py", "exec"), namespace)
print(len(tree.body), len(source), namespace["f"](2)[:3], code.co_filename)
"""


def test_ast_parse_and_the_programs_compile_calls_are_spans(program):
    out, spans = program.run(AST)
    assert out == program.untraced(AST)
    source_len = int(out.split()[1])
    parse, = spans.named("ast.parse")
    compiles = spans.named("compile")
    assert parse.category == "parse" and parse.attributes["selfopt_trace.bytes_in"] == source_len
    assert parse.attributes["selfopt_trace.subject"] == "generated.py"
    assert parse.attributes["code.filepath"].endswith("prog.py") and parse.attributes["code.lineno"] == 4
    assert parse.attributes["selfopt_trace.library"] == "ast"
    # ast.parse's own compile call counts once, inside it; the program's two compile calls are its own
    assert {s.attributes["selfopt_trace.subject"] for s in compiles} <= {"compiled.py", "from_tree.py"}
    assert "compiled.py" in {s.attributes["selfopt_trace.subject"] for s in compiles}
    assert all(not (parse.start_ns <= s.start_ns <= parse.end_ns) for s in compiles)
    assert sums(process(spans), "compile")[0] + len(compiles) == 2


def test_the_import_system_compiling_modules_is_not_a_parse(program):
    program.write("bigmod.py", "def f(x):\n    return x + 1\n" * 3000)
    out, spans = program.run("import ast, sys; sys.path.insert(0, '.'); import bigmod; print(bigmod.f(1))",
                             PYTHONDONTWRITEBYTECODE="1")
    assert out == "2\n"
    assert spans.named("import bigmod") and not spans.named("compile")
    assert all(sums(span, "compile")[0] == 0 for span in spans.spans)


def test_small_parses_are_summed_and_exact(program):
    source = "import ast\nsizes = [len(ast.parse('x = %d' % i).body) for i in range(200)]\nprint(sum(sizes))\n"
    out, spans = program.run(source)
    assert out == "200\n"
    count, duration, size = sums(process(spans), "ast.parse")
    slow = spans.named("ast.parse")
    assert count + len(slow) == 200 and duration > 0
    assert size + sum(s.attributes["selfopt_trace.bytes_in"] for s in slow) == sum(len("x = %d" % i) for i in range(200))
    assert sums(process(spans), "compile")[0] == 0 and not spans.named("compile")


FORWARD_REFS = """
import ast, typing
refs = [typing.ForwardRef("list[int] | None") for i in range(300)]  # each compiles its string
codes = [compile("x + %d" % i, "<string>", "eval") for i in range(50)]
print(refs[0].__forward_code__.co_names, eval(codes[7], {"x": 1}))
print(typing.get_type_hints(type("C", (), {"__annotations__": {"a": "int"}})))
"""


def test_typings_forward_references_compile_unmeasured_and_the_programs_calls_still_summed(program):
    """typing.ForwardRef's compile of each string annotation is left out of compile()'s sums (811 calls
    importing the benchmark's 649 modules: docs/benchmarks.md); every other compile() call is measured."""
    out, spans = program.run(FORWARD_REFS)
    assert out == program.untraced(FORWARD_REFS)
    count, duration, size = sums(process(spans), "compile")
    slow = spans.named("compile")
    assert count + len(slow) == 50 and duration > 0
    assert size + sum(s.attributes["selfopt_trace.bytes_in"] for s in slow) == sum(len("x + %d" % i) for i in range(50))


SYNTAX = """
import ast
for source in ["x = (", "def f(:\\n    pass\\n", "x = 1\\n" * 50000 + "y = )"]:
    try:
        ast.parse(source)
    except SyntaxError as e:
        print(type(e).__name__, e.msg, e.lineno, e.offset)
"""


def test_syntax_errors_propagate_unchanged(program):
    out, spans = program.run(SYNTAX)
    assert out == program.untraced(SYNTAX)
    failed = spans.named("ast.parse")
    assert all(s.status == "ERROR" and s.attributes["error.type"] == "SyntaxError" for s in failed)
    assert max(s.attributes["selfopt_trace.bytes_in"] for s in failed) > 300_000
    assert sums(process(spans), "ast.parse")[0] + len(failed) == 3


LIBCST = """
import libcst as cst
from libcst.metadata import MetadataWrapper, PositionProvider, ParentNodeProvider
source = "def f(x):\\n    return x + 1\\n" * 2000
module = cst.parse_module(source)
wrapper = MetadataWrapper(module)
positions = wrapper.resolve(PositionProvider)
parents = wrapper.resolve_many([ParentNodeProvider])
print(len(module.body), len(positions), len(parents[ParentNodeProvider]), module.code == source)
"""


def test_libcst_parsing_and_metadata_resolution(program):
    out, spans = program.run(LIBCST)
    assert out == program.untraced(LIBCST)
    parse, = spans.named("libcst.parse_module")
    assert parse.attributes["selfopt_trace.bytes_in"] == len("def f(x):\n    return x + 1\n") * 2000
    assert parse.attributes["selfopt_trace.library"] == "libcst"
    assert len(spans.named("libcst.MetadataWrapper")) == 1  # its deep copy of the module
    # resolve() calls resolve_many() inside: counted once, under its own name
    assert len(spans.named("libcst.MetadataWrapper.resolve")) == 1
    assert len(spans.named("libcst.MetadataWrapper.resolve_many")) == 1
    assert all(s.attributes["code.filepath"].endswith("prog.py") for s in spans.spans if s.name.startswith("libcst."))


JEDI = """
import jedi
source = "import math\\nx = math.sqrt(4)\\nx\\n"
script = jedi.Script(source, path="example.py")
print([d.name for d in script.infer(3, 0)], [c.name for c in script.complete(2, 9)][:3])
print(sorted(n.full_name for n in script.get_names(all_scopes=True)))
"""


def test_jedi_calls_and_the_subprocess_they_start(program):
    out, spans = program.run(JEDI)
    assert out == program.untraced(JEDI)
    jedi_spans = [s for s in spans.spans if s.name.startswith("jedi.")]
    assert {"jedi.Script", "jedi.Script.infer"} <= {s.name for s in jedi_spans}
    assert all(s.category == "parse" and s.attributes["selfopt_trace.library"] == "jedi" for s in jedi_spans)
    assert all(s.attributes["selfopt_trace.subject"].endswith("example.py") for s in jedi_spans
               if s.name.startswith("jedi.Script"))
    # jedi's compiled-module subprocess sits under the jedi call that needed it, with its own process
    spawn, = [s for s in spans.spans if s.category == "subprocess"]
    assert spans.parent(spawn).name.startswith("jedi.")
    assert any(p.parent_span_id == spawn.span_id for p in spans.processes())


TREE_SITTER = """
import tree_sitter, tree_sitter_javascript
parser = tree_sitter.Parser(tree_sitter.Language(tree_sitter_javascript.language()))
source = b"function f(a) { return a + 1; }\\n" * 3000
tree = parser.parse(source)
small = [parser.parse(b"let x = %d;" % i).root_node.child_count for i in range(50)]
print(tree.root_node.child_count, sum(small), tree.root_node.end_byte == len(source))
"""


def test_tree_sitter_parser(program):
    out, spans = program.run(TREE_SITTER)
    assert out == program.untraced(TREE_SITTER)
    big = [s for s in spans.named("tree_sitter.Parser.parse") if s.attributes["selfopt_trace.bytes_in"] > 1000]
    assert len(big) == 1 and big[0].attributes["selfopt_trace.bytes_in"] == len(b"function f(a) { return a + 1; }\n") * 3000
    small = spans.named("tree_sitter.Parser.parse")
    assert sums(process(spans), "tree_sitter.Parser.parse")[0] + len(small) == 51


COMPILE_IDENTITY = """
import ast, builtins, pickle, inspect
print(compile.__name__, compile.__module__, compile.__qualname__, builtins.compile is compile)
print(pickle.loads(pickle.dumps(compile)) is compile)
namespace = {}
exec(compile("y = 6 * 7", "<s>", "exec"), namespace)
print(namespace["y"], eval(compile("1 + 1", "<e>", "eval")), type(compile("z", "<a>", "eval", ast.PyCF_ONLY_AST)).__name__)
"""


def test_the_builtin_compile_still_behaves_as_itself(program):
    out, _ = program.run(COMPILE_IDENTITY)
    assert out == program.untraced(COMPILE_IDENTITY)
    assert out.splitlines()[1] == "True"


COMPILE_FUTURES = """
import ast
from helper import compile_in_annotations_module
namespace = {}
for source in ("def f(x: int): pass", "def g(x: int): pass"):
    exec(compile(source, "<s>", "exec"), namespace)
exec(compile("def h(x: int): pass", "<s>", "exec", 0x1000000), namespace)
exec(compile("def k(x: int): pass", "<s>", "exec", 0, True), namespace)
exec(compile_in_annotations_module("def m(x: int): pass"), namespace)
exec(compile("def n(x: int): pass", "<s>", "exec", 0), namespace)
exec(compile("def o(x: int): pass", "<s>", "exec", flags=0, optimize=1), namespace)
print([namespace[n].__annotations__["x"] for n in "fghkmno"])
"""
HELPER = """
from __future__ import annotations


def compile_in_annotations_module(source):
    return compile(source, "<h>", "exec")
"""


def test_compile_inherits_the_callers_future_features_not_the_agents(program):
    """compile() inherits the `from __future__` features of the code calling it: the program's, not
    the wrapper's (the agent's modules use `annotations`: a program's int became 'int')."""
    program.write("helper.py", HELPER)
    out, _ = program.run(COMPILE_FUTURES)
    assert out == program.untraced(COMPILE_FUTURES)
    assert out.strip() == "[<class 'int'>, <class 'int'>, 'int', <class 'int'>, 'int', <class 'int'>, <class 'int'>]"
