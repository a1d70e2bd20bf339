"""omnimargin: benchmarks."""
