"""``python -m trio_bocaws module:app --bind HOST:PORT``."""

import sys

from ._cli import main

if __name__ == "__main__":
    sys.exit(main())
