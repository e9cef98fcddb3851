"""ShapesWorld editions of the benchmarks (see docs/benchmarks_shapes.md)."""
