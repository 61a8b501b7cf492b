"""codeflash's phases as spans: the built-in target list (checked against codeflash 0.20.6).

Loaded only in processes that import codeflash (lazy.BUILTIN_HOOKS["codeflash"]). Each entry:
(module, qualname, span name, {attribute: argument path}). An argument path is a parameter name
followed by attribute names, read when the call starts: it is how a span says which function is
being optimized and which candidate is being evaluated. A target that this codeflash version lacks
is a diagnostic (`target_missing`), never an error.

The targets wait for their first call: a stand-in for each, placed as its module is imported
(lazy.on_first_call), loads hooks/targets.py at its first call, which then wraps the targets of
that module. codeflash's pytest plugin imports codeflash and its config parser in every pytest
child, which calls none of them: loading targets.py and this list as a module of its own there
cost each child 0.83 M instructions, 0.42 M now (docs/benchmarks.md).
"""

from __future__ import annotations

from .. import lazy

_FUNCTION = {"codeflash.function": "self.function_to_optimize.qualified_name"}
_OPTIMIZER = "codeflash.optimization.optimizer"
_FUNCTION_OPTIMIZER = "codeflash.languages.function_optimizer"

TARGETS = (
    # 1. start-up
    ("codeflash.main", "main", "codeflash.main", None),
    ("codeflash.cli_cmds.cli", "parse_args", "codeflash.parse_args", None),
    ("codeflash.cli_cmds.cli", "process_and_validate_cmd_args", "codeflash.validate_args", None),
    ("codeflash.code_utils.version_check", "check_for_newer_minor_version", "codeflash.version_check", None),
    # 2. config
    ("codeflash.cli_cmds.cli", "process_pyproject_config", "codeflash.config", None),
    ("codeflash.code_utils.config_parser", "parse_config_file", "codeflash.parse_config_file", None),
    # 3. optimizer
    (_OPTIMIZER, "run_with_args", "codeflash.run_with_args", None),
    (_OPTIMIZER, "Optimizer.run", "codeflash.optimizer.run", None),
    # 4. function discovery
    (_OPTIMIZER, "Optimizer.get_optimizable_functions", "codeflash.discover_functions", None),
    ("codeflash.discovery.functions_to_optimize", "get_functions_to_optimize", "codeflash.get_functions_to_optimize", None),
    ("codeflash.discovery.functions_to_optimize", "filter_functions", "codeflash.filter_functions", None),
    # 5. call graph
    ("codeflash.languages.python.reference_graph", "ReferenceGraph.build_index", "codeflash.call_graph", None),
    # 6. test discovery
    (_OPTIMIZER, "Optimizer.discover_tests", "codeflash.discover_tests", None),
    ("codeflash.discovery.discover_unit_tests", "discover_unit_tests", "codeflash.discover_unit_tests", None),
    ("codeflash.discovery.discover_unit_tests", "process_test_files", "codeflash.process_test_files", None),
    # 7. per function
    (_FUNCTION_OPTIMIZER, "FunctionOptimizer.optimize_function", "codeflash.optimize_function", _FUNCTION),
    (_FUNCTION_OPTIMIZER, "FunctionOptimizer.can_be_optimized", "codeflash.can_be_optimized", _FUNCTION),
    ("codeflash.languages.python.function_optimizer", "PythonFunctionOptimizer.get_code_optimization_context",
     "codeflash.context_extraction", _FUNCTION),
    (_FUNCTION_OPTIMIZER, "FunctionOptimizer.generate_and_instrument_tests", "codeflash.generate_and_instrument_tests",
     _FUNCTION),
    ("codeflash.verification.verifier", "generate_tests", "codeflash.generate_tests",
     {"codeflash.function": "function_to_optimize.qualified_name", "codeflash.test_index": "test_index"}),
    (_FUNCTION_OPTIMIZER, "FunctionOptimizer.generate_optimizations", "codeflash.generate_optimizations", _FUNCTION),
    (_FUNCTION_OPTIMIZER, "FunctionOptimizer.instrument_existing_tests", "codeflash.instrument_existing_tests",
     _FUNCTION),
    (_FUNCTION_OPTIMIZER, "FunctionOptimizer.setup_and_establish_baseline", "codeflash.baseline", _FUNCTION),
    (_FUNCTION_OPTIMIZER, "FunctionOptimizer.establish_original_code_baseline", "codeflash.original_code_baseline",
     _FUNCTION),
    (_FUNCTION_OPTIMIZER, "FunctionOptimizer.find_and_process_best_optimization", "codeflash.find_best_optimization",
     _FUNCTION),
    (_FUNCTION_OPTIMIZER, "FunctionOptimizer.determine_best_candidate", "codeflash.determine_best_candidate", _FUNCTION),
    (_FUNCTION_OPTIMIZER, "FunctionOptimizer.process_single_candidate", "codeflash.candidate",
     {**_FUNCTION, "codeflash.candidate.id": "candidate_node.candidate.optimization_id",
      "codeflash.candidate.index": "candidate_index"}),
    (_FUNCTION_OPTIMIZER, "FunctionOptimizer.run_optimized_candidate", "codeflash.run_optimized_candidate",
     {**_FUNCTION, "codeflash.candidate.id": "candidate.optimization_id",
      "codeflash.candidate.index": "optimization_candidate_index"}),
    (_FUNCTION_OPTIMIZER, "FunctionOptimizer.run_and_parse_tests", "codeflash.run_and_parse_tests",
     {**_FUNCTION, "codeflash.testing_mode": "testing_type", "codeflash.optimization_iteration": "optimization_iteration"}),
    ("codeflash.languages.python.test_runner", "execute_test_subprocess", "codeflash.execute_test_subprocess", None),
    ("codeflash.verification.parse_test_output", "parse_test_results", "codeflash.parse_test_results",
     {"codeflash.optimization_iteration": "optimization_iteration", "codeflash.function": "function_name"}),
    ("codeflash.verification.equivalence", "compare_test_results", "codeflash.compare_test_results", None),
    (_FUNCTION_OPTIMIZER, "FunctionOptimizer.select_best_optimization", "codeflash.select_best_optimization",
     _FUNCTION),
    (_FUNCTION_OPTIMIZER, "FunctionOptimizer.reformat_code_and_helpers", "codeflash.reformat_code", _FUNCTION),
    (_FUNCTION_OPTIMIZER, "FunctionOptimizer.process_review", "codeflash.review", _FUNCTION),
    # 8. cleanup
    (_OPTIMIZER, "Optimizer.cleanup_temporary_paths", "codeflash.cleanup", None),
)


def install(target: str, module) -> None:
    """`codeflash` imported: its target modules wait for their first call. Another target: a stand-in
    of one of its targets was called."""
    if target != "codeflash":
        from . import targets

        targets.install_codeflash(target, module)
        return
    qualnames: dict = {}
    for module_name, qualname, _, _ in TARGETS:
        qualnames.setdefault(module_name, []).append(qualname)
    for module_name, paths in qualnames.items():
        lazy.on_first_call(module_name, __name__.rpartition(".")[2], tuple(paths))
