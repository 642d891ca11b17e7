"""Benchmarks, run from the repository root as modules, e.g.
`.venv/bin/python -m benchmarks.bench_delivery` (they import tests.harness)."""
