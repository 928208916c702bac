"""`python -m daemon` is the same as the `tickcast` console script."""

import sys

from daemon.cli import main

if __name__ == "__main__":
    sys.exit(main())
