"""``python -m shmring.bench``: the same as ``shmring bench``."""

import sys

from .cli import main

raise SystemExit(main(sys.argv[1:]))
