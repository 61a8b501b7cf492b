"""A module that costs IMPORT_COST_S to import, like a heavy library's import-time set-up."""

from selfopt_trace.demo.spin import spin

IMPORT_COST_S = 0.020

spin(IMPORT_COST_S)
