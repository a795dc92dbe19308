"""``python -m effrank_bench``: the command line where the ``effrank-bench`` script is not on the path (a venv
that sees the project through its system site-packages, a notebook's kernel)."""
from effrank_bench.cli import entry

if __name__ == "__main__":
    entry()
