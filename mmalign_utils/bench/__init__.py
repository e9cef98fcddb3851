"""The nine benchmarks, one module each, plus their ShapesWorld editions.

Every benchmark module exposes the same small surface (see docs/benchmarks.md):
`NAME`, `PROTOCOLS`, `DEFAULT_PROTOCOL`, `REQUIRED_FILES`, `load(data_dir)`, `read_answers(path)`,
`score(items, answers, protocol=..., judge=None)`.
"""
