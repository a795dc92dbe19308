"""Built-in plugins of effrank-bench, installed as ``effrank_bench_plugins`` and loaded through entry points."""
