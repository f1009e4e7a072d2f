"""The ``callscope`` command: the console script's entry point (``callscope.cli:main``).

The command itself is one of the trace tools, in ``callscope._tools.cli``; this module is its
public address, kept stable for the console script and for ``python -m callscope``.

>>> from callscope.cli import main
>>> main(["tree", "callscope-traces.jsonl"])  # doctest: +SKIP
"""

from callscope._tools.cli import Exit, main

__all__ = ["Exit", "main"]
