"""Benchmarks, all on the NumPy side (no JAX) except :mod:`~sparse_flops.bench.throughput`:

- :mod:`~sparse_flops.bench.timing`: medians of repeated warm runs, thread limits, environment;
- :mod:`~sparse_flops.bench.regimes`: class and instance retrieval over exported code sets;
- :mod:`~sparse_flops.bench.tradeoff`: accuracy against cost per method (``--mode=benchmark``);
- :mod:`~sparse_flops.bench.scale`: the synthetic million-item engine benchmark (``--mode=scale``);
- :mod:`~sparse_flops.bench.report`: JSON, Markdown and plots;
- :mod:`~sparse_flops.bench.throughput`: training examples/s (``--mode=throughput``; JAX side,
  not imported here).
"""
