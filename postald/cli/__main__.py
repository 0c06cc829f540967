"""``python -m postald.cli``: the same as the ``postal`` console script."""

import sys

from postald.cli import main

if __name__ == "__main__":
    sys.exit(main())
