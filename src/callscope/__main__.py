"""``python -m callscope``: the same as the ``callscope`` console script."""

import sys

from callscope.cli import main

if __name__ == "__main__":
    sys.exit(main())
